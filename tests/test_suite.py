"""
Tests of the test suite's own settings (:mod:`tests`).
"""

import os
import sys
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


class HypothesisTests(SynchronousTestCase):
    """What a derandomized fuzz test generates depends on the test alone,
    not on the modules imported before it (:func:`tests.helpers.prepare_hypothesis`):
    with ``trial -j2`` they are those of the tests the worker ran before."""

    def test_sameExamplesWhateverIsImported(self):
        from tests.helpers import prepare_hypothesis
        prepare_hypothesis(derandomized=True)
        from hypothesis import given, settings, strategies as st

        def examples():
            seen = []

            @settings(max_examples=100, derandomize=True, database=None, deadline=None)
            @given(st.integers())
            def collect(n):
                seen.append(n)
            collect()
            return seen
        before = examples()
        # a module of the checkout's kind (not a test module: hypothesis
        # leaves those out) with integer constants of its own
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        with open(os.path.join(directory, "suite_constants_probe.py"), "w") as f:
            f.write("VALUES = [%s]\n" % ", ".join(str(1000003 + 7919 * i) for i in range(50)))
        sys.path.insert(0, directory)
        self.addCleanup(sys.path.remove, directory)
        import suite_constants_probe
        self.addCleanup(sys.modules.pop, suite_constants_probe.__name__)
        self.assertEqual(examples(), before)
