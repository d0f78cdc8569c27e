"""
The tests that run real processes for seconds: a ``twistd tproxy`` box with
its workers (:mod:`tests.processes.test_workers`), headless Chromium
(:mod:`tests.processes.test_admin_page_browser`).

They are a package of their own so that ``trial -jN tests`` hands them out
first: trial loads a package's modules in the order of their names
(``tests.processes.*`` before ``tests.test_*``) and its workers take the
tests one by one in that order; the longest tests last would leave the
other cores idle at the end of the run.  Within a module, ``testSuite()``
may put the longest tests first.
"""
