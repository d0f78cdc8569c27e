"""
Tests of the test suite's own settings (:mod:`tests`).
"""

import warnings

from twisted.trial import reporter
from twisted.trial.unittest import SynchronousTestCase

MESSAGE = "the same warning, from the same line"


def _warn():
    warnings.warn(MESSAGE, UserWarning)


class WarningsTests(SynchronousTestCase):
    """trial's walk of ``sys.modules`` before each test is skipped
    (:mod:`tests`): a warning already shown is still shown to the test that
    expects it."""

    def test_shownAgain(self):
        import tests
        from twisted.trial import _synctest
        self.assertIs(_synctest._setWarningRegistryToNone, tests._keep_warning_registries)
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = lambda *args, **kwargs: None
            _warn()   # (recorded in this module's __warningregistry__)
        self.assertIn((MESSAGE, UserWarning, _warn.__code__.co_firstlineno + 1),
                      globals().get("__warningregistry__", {}))

        class Warns(SynchronousTestCase):
            def test_warns(self):
                _warn()
                self.seen = [w["message"] for w in self.flushWarnings([_warn])]
        seen = []
        for _ in range(2):
            case = Warns("test_warns")
            result = reporter.TestResult()
            case.run(result)
            self.assertEqual((result.errors, result.failures), ([], []))
            seen.append(case.seen)
        self.assertEqual(seen, [[MESSAGE]] * 2)
