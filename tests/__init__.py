"""
tproxy's test suite: ``python -m twisted.trial -j2 tests``.

CPython's collector is tuned here for the test processes.  Each full
collection walks every object of the loaded modules (Twisted, trial, tproxy,
hypothesis: ~90,000), and with the default thresholds (700, 10, 10) the full
collections took a quarter of the tests' CPU.  Ten times fewer young
collections mean ten times fewer full ones; and the objects that exist when
this package is imported (Twisted's and trial's: half of them) are frozen
out of the collections (``gc.freeze``).  PyPy's collector has neither knob.
"""

import gc

if hasattr(gc, "set_threshold"):
    gc.set_threshold(7000, 10, 10)
if hasattr(gc, "freeze"):
    gc.freeze()
