"""
tproxy's test suite: ``python -m twisted.trial -j2 tests``.

CPython's collector is tuned here for the test processes.  Each full
collection walks every object of the loaded modules (Twisted, trial, tproxy,
hypothesis: ~90,000), and with the default thresholds (700, 10, 10) the full
collections took a quarter of the tests' CPU.  Ten times fewer young
collections mean ten times fewer full ones; and the objects that exist when
this package is imported (Twisted's and trial's: half of them) are frozen
out of the collections (``gc.freeze``).  PyPy's collector has neither knob.

The test processes keep the bytecode of what they import after this package
(the tests, tproxy) in its ``__pycache__`` directories, as Python does by
default, even where ``PYTHONDONTWRITEBYTECODE`` is set (CI images often set
it): trial's processes (its manager and each worker) and the twenty-odd
Python processes the tests start (:func:`tests.test_tap.python_environ`)
would each compile them from source otherwise (0.25 s of CPU for a trial
process, 0.1 s for a twistd).

Before each test, trial sets ``__warningregistry__`` to ``None`` in every
module of ``sys.modules`` (``twisted.trial._synctest._setWarningRegistryToNone``:
~1,000 modules in a test process, 0.3-0.6 ms a test, ~0.6 s of CPU a run), so
that a warning already shown once is shown again to the test that expects
it.  Python does that itself since 3.4, and PyPy 3.9 too: a module's
registry is thrown away once the filters have changed, and trial changes
them right after (``warnings.simplefilter("always")``, which bumps the
filters' version).  The test processes skip the walk
(:class:`tests.test_suite.WarningsTests` checks that a test still sees
a warning shown before).
"""

import gc
import sys

if hasattr(gc, "set_threshold"):
    gc.set_threshold(7000, 10, 10)
if hasattr(gc, "freeze"):
    gc.freeze()
sys.dont_write_bytecode = False


def _keep_warning_registries(modules):
    """(``_setWarningRegistryToNone``'s stand-in: nothing to do)"""


def _skip_registry_walk():
    _synctest = sys.modules.get("twisted.trial._synctest")   # (trial's processes)
    if _synctest is not None and hasattr(_synctest, "_setWarningRegistryToNone"):
        _synctest._setWarningRegistryToNone = _keep_warning_registries


_skip_registry_walk()
