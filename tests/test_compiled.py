"""
The choice between the compiled hot modules and their pure-Python source
(:mod:`tproxy.compiled`): ``TPROXY_COMPILED=0``, PyPy, no build, a failed
build, a stale build; and what ``twistd tproxy`` logs of it at start
(tests/test_tap.py).
"""

import importlib.machinery
import json
import os
import platform
import subprocess
import sys

from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tproxy import compiled

#: an extension module's file name ending, on this interpreter
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(compiled.__file__)))


class DecideTests(SynchronousTestCase):
    """:func:`tproxy.compiled.decide` on a tree made here: the modules'
    ``.py`` files, an extension file beside each, and the build's manifest."""

    def setUp(self):
        self.root = self.mktemp()
        for name in compiled.MODULES:
            base = os.path.join(self.root, *name.split("."))
            os.makedirs(os.path.dirname(base), exist_ok=True)
            with open(base + ".py", "w") as f:
                f.write("# {}\n".format(name))
            # (only its presence counts)
            open(base + SUFFIX, "w").close()
        self.manifest({"modules": {name: compiled.source_digest(name, self.root)
                                   for name in compiled.MODULES}})

    def manifest(self, content):
        with open(os.path.join(self.root, "tproxy", compiled.MANIFEST), "w") as f:
            json.dump(content, f)

    def decide(self, environ={}, implementation="CPython"):
        """The decision, and its warning."""
        return compiled.decide(environ, implementation, self.root)

    def test_built(self):
        """Built from the source there is: the compiled modules, silently."""
        self.assertEqual(self.decide(), ("on", None))

    def test_turnedOff(self):
        """``TPROXY_COMPILED=0``: the pure-Python modules, silently."""
        self.assertEqual(self.decide({"TPROXY_COMPILED": "0"}),
                         ("off (TPROXY_COMPILED=0)", None))
        self.assertEqual(self.decide({"TPROXY_COMPILED": "1"}), ("on", None))

    def test_pypy(self):
        """PyPy runs the pure-Python modules."""
        self.assertEqual(self.decide(implementation="PyPy"), ("off (not CPython)", None))

    def test_notBuilt(self):
        """No manifest (a source tree run as it is): pure Python, silently."""
        os.remove(os.path.join(self.root, "tproxy", compiled.MANIFEST))
        self.assertEqual(self.decide(), ("off (not compiled)", None))

    def test_buildFailed(self):
        """The build could not compile: pure Python, and one warning saying why."""
        self.manifest({"failed": "CompileError: command 'gcc' failed"})
        for name in compiled.MODULES:   # (none was built)
            os.remove(os.path.join(self.root, *name.split(".")) + SUFFIX)
        state, said = self.decide()
        self.assertEqual(state, "off (compiling failed)")
        self.assertEqual(said, "compiling the hot modules failed at install "
                               "(CompileError: command 'gcc' failed): the "
                               "pure-Python modules are used")

    def test_stale(self):
        """A module edited after the build (its ``.py``, or a ``.pxd`` added
        or changed): pure Python for all, and a warning naming it."""
        path = os.path.join(self.root, "tproxy", "http", "exchange.pxd")
        with open(path, "w") as f:
            f.write("cdef class Exchange:\n    pass\n")
        state, said = self.decide()
        self.assertEqual(state, "off (stale build)")
        self.assertEqual(said, "tproxy.http.exchange changed since it was "
                               "compiled: the pure-Python modules are used (pip "
                               "install -e . compiles them again)")

    def test_extensionMissing(self):
        """A module whose extension file is missing: pure Python for all."""
        os.remove(os.path.join(self.root, "tproxy", "http", "dates" + SUFFIX))
        state, said = self.decide()
        self.assertEqual(state, "off (stale build)")
        self.assertIn("tproxy.http.dates changed", said)


class ClassDefaultsTests(SynchronousTestCase):
    """:func:`tproxy.compiled.class_defaults`."""

    def test_pythonClass(self):
        """A pure-Python class gets the values as class attributes."""
        class C(object):
            pass
        compiled.class_defaults(C, a=None, b=0)
        self.assertEqual((C.a, C.b, C().a), (None, 0, None))

    def test_extensionType(self):
        """An extension type (a compiled class) is left as it is."""
        compiled.class_defaults(int, a=None)
        self.assertFalse(hasattr(int, "a"))


class ImportTests(SynchronousTestCase):
    """What a process imports, as :mod:`tproxy` chose (this installation's
    build, in a new interpreter).  The file each module would be loaded
    from is its spec's origin, found as ``import`` finds it (through
    ``sys.meta_path``, where :mod:`tproxy.compiled` puts its finder), without
    loading it (loading them imports Twisted: ten times the CPU; the rest
    of the suite loads them)."""

    def imported(self, **environ):
        """``(compiled.STATE, [whether each module comes from its .py])``."""
        env = dict(os.environ, **environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        out = subprocess.check_output(
            [sys.executable, "-c",
             "import importlib.util, json, tproxy.compiled as c\n"
             "print(json.dumps([c.STATE, [importlib.util.find_spec(m).origin.endswith('.py')"
             " for m in c.MODULES]]))"], env=env)
        return json.loads(out)

    def test_turnedOff(self):
        """``TPROXY_COMPILED=0``: every module from its ``.py``, even where
        compiled ones are installed beside them."""
        state, pure = self.imported(TPROXY_COMPILED="0")
        self.assertEqual(state, "off (TPROXY_COMPILED=0)")
        self.assertEqual(set(pure), {True})

    def test_asChosen(self):
        """Without it, all compiled or all pure, as the state says (the start
        log line shows the state)."""
        state, pure = self.imported(TPROXY_COMPILED="")
        self.assertEqual(set(pure), {state != "on"})
        self.assertEqual(state, compiled.decide({}, platform.python_implementation())[0])


class StartLogTests(SynchronousTestCase):
    """What ``twistd tproxy`` logs of the choice at start."""

    def logged(self, state, warning):
        from tproxy import tap
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.patch(compiled, "STATE", state)
        self.patch(compiled, "WARNING", warning)
        # (on PyPy: no warning of the GC's settings)
        self.patch(os, "environ", dict(os.environ, PYPY_GC_NURSERY="16MB"))
        tap._log_fast_paths(object())
        return [(e["log_level"], formatEvent(e)) for e in events
                if e.get("log_namespace") == "tproxy.tap"]

    def test_on(self):
        """The line of the fast paths says the compiled modules are on."""
        [(level, line)] = self.logged("on", None)
        self.assertEqual(level, LogLevel.info)
        self.assertIn(", compiled modules on, ", line)

    def test_stale(self):
        """A stale build: off, and a warning after the line, saying why."""
        [(_, line), (level, warning)] = self.logged(
            "off (stale build)", "tproxy.http.dates changed since it was compiled: ...")
        self.assertIn(", compiled modules off (stale build), ", line)
        self.assertEqual((level, warning), (
            LogLevel.warn, "tproxy.http.dates changed since it was compiled: ..."))
