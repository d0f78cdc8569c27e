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


def longest_first(module_name, names):
    """The tests of module ``module_name``, its classes named in ``names``
    first, in that order (a module's ``testSuite()``: ``trial -jN`` hands
    them out in this order)."""
    import sys
    from twisted.trial.runner import TestLoader
    loader = TestLoader()
    classes = loader.findTestClasses(sys.modules[module_name])
    classes.sort(key=lambda c: (tuple(names) + (c.__name__,)).index(c.__name__))
    return loader.suiteFactory([loader.loadClass(c) for c in classes])
