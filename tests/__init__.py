"""
tproxy's test suite: ``python -m twisted.trial -j2 tests``.

CPython's collector is tuned here for the test processes: trial keeps every
test case (and what it holds) until the run ends, so each full collection
walks a large heap; with the default thresholds (700, 10, 10) the full
collections took a quarter of the tests' CPU.  Ten times fewer young
collections mean ten times fewer full ones.  (PyPy's collector has no
thresholds.)
"""

import gc

if hasattr(gc, "set_threshold"):
    gc.set_threshold(7000, 10, 10)
