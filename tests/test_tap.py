"""
Tests for :mod:`tproxy.tap`: the options of ``twistd tproxy``, the service
wiring, and what a user sees when startup fails.
"""

import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading

import treq
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SkipTest, TestCase

from tproxy import compiled, fastio, gateway_service
from tproxy.config import load_config, validate_config
from tproxy.plugins import BUILTINS, tproxy_entry_points
from tproxy.routing import spec
from tproxy.tap import Options, makeService

from tests import zygote
from tests.helpers import temp_path
from tests.test_config import DEFAULTS

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

#: Runs twistd from the source tree (PYTHONPATH=ROOT), installed or not.
TWISTD = ("import sys; from twisted.scripts.twistd import run; "
          "sys.argv[0] = 'twistd'; run()")

DEFAULT_LISTING = """\
plugins (config order): registry, router, least_conn, access_log
  init_worker    registry, router, least_conn, access_log
  rewrite        router
  access         -
  balancer       least_conn
  header_filter  -
  body_filter    -
  log            access_log
  stream_access  -
  stream_log     access_log
  certificate    -
"""

#: the end of every --list-plugins: what a plugins entry may name
AVAILABLE = """\
available plugins:
  built-in       {}
  installed      {}
""".format(", ".join(sorted(BUILTINS)),
           ", ".join(sorted({ep.name for ep in tproxy_entry_points()})) or "-")
DEFAULT_LISTING += AVAILABLE


def python_environ(**changes):
    """
    The environment of a Python process a test starts (``twistd``, and the
    workers it starts in turn, ``tproxy-ctl``): this one's with ``changes``
    (``None`` removes a variable) and the source tree first on
    ``PYTHONPATH``.

    ``PYTHONDONTWRITEBYTECODE`` (CI images often set it) is not passed on:
    with it, each of the twenty-odd processes of a run would compile
    tproxy's modules from source (~0.1 s of CPU each); without it they
    share tproxy's bytecode in its ``__pycache__`` directories, as Python
    does by default (ignored by git).  (A cache elsewhere,
    ``PYTHONPYCACHEPREFIX``, would have them compile Twisted and every other
    dependency too, whose bytecode is in their own ``__pycache__``.)
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = os.pathsep.join(
        [ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def write_json(case, obj, text=None):
    """A temporary file holding ``obj`` as JSON (or ``text``)."""
    path = os.path.abspath(temp_path(case, ".json"))
    with open(path, "w") as f:
        f.write(text if text is not None else json.dumps(obj))
    return path


def options(case, obj):
    """Options parsed with ``-c`` a file holding ``obj``."""
    o = Options()
    o.parseOptions(["-c", write_json(case, obj)])
    return o


def local(**changes):
    """A configuration listening on free loopback ports."""
    config = {"listen": "tcp:0:interface=127.0.0.1",
              "admin": {"listen": "tcp:0:interface=127.0.0.1"}}
    config.update(changes)
    return config


class OptionsTests(TestCase):
    """Parsing ``twistd tproxy`` options loads and checks everything."""

    def test_config(self):
        path = write_json(self, {"listen": "tcp:8081"})
        for args in (["-c", path], ["--config", path], ["--config=" + path]):
            o = Options()
            o.parseOptions(args)
            self.assertEqual(o["config"], path)
            self.assertEqual(o.source, path)
            self.assertEqual(o.config, load_config(path))
            self.assertEqual([n for n, _ in o.plugin_manager.list_name_plugin()],
                             ["access_log", "least_conn", "router", "registry"])
            self.assertFalse(o["list-plugins"])

    def in_directory(self):
        """Run the test in a fresh working directory."""
        here = os.getcwd()
        path = os.path.abspath(temp_path(self))
        os.makedirs(path)
        os.chdir(path)
        self.addCleanup(os.chdir, here)
        return path

    def test_default_built_in(self):
        """Without -c and without etc/conf.json: the built-in defaults."""
        self.in_directory()
        o = Options()
        o.parseOptions([])
        self.assertEqual(o.config, DEFAULTS)
        self.assertEqual(o.source, "<built-in defaults>")

    def test_default_file(self):
        """Without -c, etc/conf.json of the working directory if it exists."""
        os.makedirs(os.path.join(self.in_directory(), "etc"))
        with open(os.path.join("etc", "conf.json"), "w") as f:
            json.dump({"listen": "tcp:8082"}, f)
        o = Options()
        o.parseOptions([])
        self.assertEqual(o.source, os.path.join("etc", "conf.json"))
        self.assertEqual(o.config["listen"], "tcp:8082")

    def test_invalid_config(self):
        """An invalid configuration exits with its message (status 1)."""
        path = write_json(self, {"upstreams": {"api": {"peers": ["h:1", "h:70000"]}}})
        e = self.assertRaises(SystemExit, Options().parseOptions, ["-c", path])
        self.assertEqual(e.code, path + ": upstreams.api.peers[1]: port 70000 is "
                                        "out of range")

    def test_unknown_plugin(self):
        path = write_json(self, {"plugins": ["router", "nope"]})
        e = self.assertRaises(SystemExit, Options().parseOptions, ["-c", path])
        self.assertEqual(e.code, path + ": plugins[1]: unknown plugin 'nope' (not a "
                                        "built-in, an entry point of group 'tproxy', "
                                        "or an importable module); built-ins: "
                                        + ", ".join(sorted(BUILTINS))
                                        + "; installed entry points: " + (", ".join(
                                            sorted({ep.name for ep in tproxy_entry_points()}))
                                            or "none"))

    def test_list_plugins(self):
        """--list-plugins prints each phase's plugins in order and exits 0."""
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        path = write_json(self, {})
        e = self.assertRaises(SystemExit, Options().parseOptions,
                              ["-c", path, "--list-plugins"])
        self.assertEqual(e.code, 0)
        self.assertEqual(out.getvalue(), DEFAULT_LISTING)

    def test_list_plugins_custom(self):
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        path = write_json(self, {"plugins": [
            "tests.plugins_for_tests",
            {"name": "tests.plugins_for_tests:AddHeader", "settings": {"header": "X"}},
            {"name": "tests.plugins_for_tests:AddHeader", "settings": {"header": "Y"}}]})
        self.assertRaises(SystemExit, Options().parseOptions, ["--list-plugins", "-c", path])
        self.assertEqual(out.getvalue(), """\
plugins (config order): tests.plugins_for_tests, tests.plugins_for_tests:AddHeader, \
tests.plugins_for_tests:AddHeader
  init_worker    -
  rewrite        tests.plugins_for_tests, tests.plugins_for_tests:AddHeader, \
tests.plugins_for_tests:AddHeader#2
  access         -
  balancer       -
  header_filter  tests.plugins_for_tests:AddHeader, tests.plugins_for_tests:AddHeader#2
  body_filter    -
  log            tests.plugins_for_tests
  stream_access  -
  stream_log     -
  certificate    -
""" + AVAILABLE)

    def test_check_warnings(self):
        """``--check`` prints the warnings (a per-route entry naming no
        group of the file) before saying the file is valid."""
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        path = write_json(self, {
            "upstreams": {"api": {"peers": ["127.0.0.1:9001"]}},
            "plugins": ["router", "least_conn", {"name": "key_auth", "routes": ["api", "ap"], "settings": {
                "consumers": [{"username": "a", "keys": ["0123456789"]}]}}]})
        e = self.assertRaises(SystemExit, Options().parseOptions, ["--check", "-c", path])
        self.assertEqual(e.code, 0)
        self.assertEqual(out.getvalue(), (
            "{0}: plugins[2].routes[1]: warning: no group 'ap' in upstreams nor in a "
            "route (known: api): 'key_auth' runs there only if servers register under "
            "that prefix\n{0}: the configuration is valid\n").format(path))

    def test_check_invalid(self):
        """``--check`` of an invalid file: its error, nothing said valid."""
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        path = write_json(self, {"plugins": ["registry", "nope"]})
        for check in ("-t", "--check"):
            e = self.assertRaises(SystemExit, Options().parseOptions, [check, "-c", path])
            self.assertTrue(e.code.startswith(path + ": plugins[1]: unknown plugin 'nope'"),
                            e.code)
        self.assertEqual(out.getvalue(), "")

    def test_check_adminPathTaken(self):
        """``--check`` sees two plugins on one admin path, as the start
        would (``cache.admin_path`` beside ``prometheus``'s ``/metrics``)."""
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        path = write_json(self, {"plugins": ["registry", "router", "least_conn", "prometheus",
                                             {"name": "cache",
                                              "settings": {"admin_path": "/metrics"}}]})
        e = self.assertRaises(SystemExit, Options().parseOptions, ["--check", "-c", path])
        self.assertEqual(e.code, path + ": plugins[4].settings.admin_path: admin path "
                         "'/metrics' is served by plugin 'prometheus' "
                         "(plugins[3].settings.path) too (GET /metrics): choose another")
        self.assertEqual(out.getvalue(), "")

    def test_help(self):
        text = str(Options())
        self.assertIn("--list-plugins", text)
        self.assertIn("-c, --config=", text)
        self.assertIn("etc/conf.json", text)


class ServiceTests(TestCase):
    """makeService: the gateway starts, then the listeners; stop reverses it."""

    @inlineCallbacks
    def test_listens(self):
        """The proxy and the admin API answer on their endpoints."""
        service = makeService(options(self, local()), reactor=reactor)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(len(service.ports), 2)
        proxy, admin = [p.getHost().port for p in service.ports]
        response = yield treq.get("http://127.0.0.1:{}/upstream/status".format(admin),
                                  persistent=False)
        self.assertEqual(response.code, 200)
        body = yield response.json()
        self.assertEqual(body["total_servers"], 0)
        response = yield treq.get("http://127.0.0.1:{}/x".format(proxy),
                                  persistent=False)
        self.assertEqual(response.code, 503)
        yield response.content()
        yield service.stopService()
        self.assertEqual(service.ports, [])

    def test_init_worker_first(self):
        """Nothing listens until every init_worker is done."""
        clock = MemoryReactorClock()
        o = options(self, local(plugins=["tests.plugins_for_tests:SlowStart"]))
        service = makeService(o, reactor=clock)
        service.startService()
        slow = o.plugin_manager.get_plugin("tests.plugins_for_tests:SlowStart")
        self.assertIs(slow.gateway, service.gateway)
        self.assertEqual(clock.tcpServers, [])
        slow.ready.callback(None)
        self.assertEqual([(port, interface) for port, _, _, interface in clock.tcpServers],
                         [(0, "127.0.0.1"), (0, "127.0.0.1")])
        self.assertEqual(len(service.ports), 2)

    def test_backlog(self):
        """Every listener's accept queue is nginx's 511, or what its endpoint
        string names (Twisted's own default is 50)."""
        clock = MemoryReactorClock()
        streams = [{"listen": "tcp:0:interface=127.0.0.1", "group": "redis"},
                   {"listen": "tcp:0:interface=127.0.0.1:backlog=20", "group": "redis"},
                   {"listen": "tcp:0:127.0.0.1:30", "group": "redis"}]
        config = local(listen="tcp6:0:interface=\\:\\:1",
                       admin={"listen": "unix:" + self.mktemp()},
                       streams=streams, upstreams={"redis": {"peers": ["127.0.0.1:6379"]}},
                       plugins=["least_conn"])
        service = makeService(options(self, config), reactor=clock)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual([(interface, backlog) for _, _, backlog, interface in clock.tcpServers],
                         [("::1", 511), ("127.0.0.1", 511), ("127.0.0.1", 20),
                          ("127.0.0.1", 30)])
        self.assertEqual([backlog for _, _, backlog, _, _ in clock.unixServers], [511])

    def test_stop(self):
        """stopService stops listening, then stops the gateway."""
        clock = MemoryReactorClock()
        service = makeService(options(self, local(plugins=[])), reactor=clock)
        stopped = []
        service.gateway.on_stop(lambda: stopped.append(len(service.ports)))
        service.startService()
        self.successResultOf(service.stopService())
        self.assertEqual(stopped, [0])

    def test_port_in_use(self):
        """A port in use: SystemExit with one line, before the reactor runs."""
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        listen = "tcp:{}:interface=127.0.0.1".format(port)
        service = makeService(options(self, local(listen=listen)), reactor=reactor)
        e = self.assertRaises(SystemExit, service.startService)
        self.addCleanup(service.stopService)
        self.assertTrue(e.code.startswith(
            "cannot listen for the proxy on {}: Couldn't listen on 127.0.0.1:{}: "
            .format(listen, port)), e.code)
        self.assertNotIn("\n", e.code)

    def test_late_failure(self):
        """A failure after the reactor runs stops it, with exit status 1."""
        statuses = []
        self.patch(gateway_service, "exit_status_on_exit", statuses.append)
        clock = MemoryReactorClock()
        clock.running = True
        o = options(self, local(plugins=["tests.plugins_for_tests:SlowStart"]))
        service = makeService(o, reactor=clock)
        service.startService()
        slow = o.plugin_manager.get_plugin("tests.plugins_for_tests:SlowStart")
        slow.ready.errback(RuntimeError("database unreachable"))
        self.assertEqual(statuses, [1])
        self.assertTrue(clock.hasStopped)
        self.assertEqual(clock.tcpServers, [])

    def test_gateway(self):
        """The gateway gets the configuration, the reactor and the plugins."""
        clock = MemoryReactorClock()
        o = options(self, local())
        service = makeService(o, reactor=clock)
        self.assertIs(service.gateway.config, o.config)
        self.assertIs(service.gateway.reactor, clock)
        self.assertIs(service.gateway.plugins, o.plugin_manager)


class PyPyGCTests(TestCase):
    """``twistd tproxy`` on PyPy without ``PYPY_GC_NURSERY`` runs itself
    again with tap.PYPY_GC in its environment (tap.pypy_gc_restart)."""

    def test_restart(self):
        from tproxy.tap import PYPY_GC, pypy_gc_restart
        script = temp_path(self)
        with open(script, "w") as f:
            f.write("#!/usr/bin/env python\n")
        argv = [script, "-n", "--pidfile=", "tproxy", "-c", "etc/conf.json"]
        executable, args, env = pypy_gc_restart({"HOME": "/root"}, argv, "/v/bin/pypy3", "PyPy")
        self.assertEqual((executable, args), ("/v/bin/pypy3", ["/v/bin/pypy3"] + argv))
        self.assertEqual(env, {"HOME": "/root", "PYPY_GC_NURSERY": "16MB",
                               "PYPY_GC_INCREMENT_STEP": "4MB"})
        self.assertEqual(dict(PYPY_GC), {"PYPY_GC_NURSERY": "16MB",
                                         "PYPY_GC_INCREMENT_STEP": "4MB"})
        # the user's increment step is kept
        env = pypy_gc_restart({"PYPY_GC_INCREMENT_STEP": "8MB"}, argv, "pypy3", "PyPy")[2]
        self.assertEqual(env["PYPY_GC_INCREMENT_STEP"], "8MB")

    def test_nothingToDo(self):
        """Not on CPython; not when the user set a nursery (even an empty
        one: no loop); not when the command cannot be run again as it is."""
        from tproxy.tap import pypy_gc_restart
        script = temp_path(self)
        with open(script, "w") as f:
            f.write("")
        self.assertIsNone(pypy_gc_restart({}, [script], "python3", "CPython"))
        self.assertIsNone(pypy_gc_restart({"PYPY_GC_NURSERY": "32MB"}, [script], "pypy3", "PyPy"))
        self.assertIsNone(pypy_gc_restart({"PYPY_GC_NURSERY": ""}, [script], "pypy3", "PyPy"))
        self.assertIsNone(pypy_gc_restart({}, ["-c"], "pypy3", "PyPy"))
        self.assertIsNone(pypy_gc_restart({}, [], "pypy3", "PyPy"))


class PyPyJitTests(TestCase):
    """The JIT parameters ``twistd tproxy`` sets on PyPy (tap._tune_pypy_jit)."""

    def tune(self, value):
        from tproxy import tap
        if value is None:
            self.patch(os, "environ", {k: v for k, v in os.environ.items()
                                       if k != "TPROXY_PYPY_JIT"})
        else:
            self.patch(os, "environ", dict(os.environ, TPROXY_PYPY_JIT=value))
        try:
            import pypyjit
        except ImportError:
            pass
        else:
            self.addCleanup(pypyjit.set_param, "default")
        return tap._tune_pypy_jit()

    def test_set(self):
        """On PyPy: tap.PYPY_JIT unless TPROXY_PYPY_JIT says otherwise (empty:
        PyPy's defaults); on CPython nothing, and the log line says nothing."""
        from tproxy import tap
        from tests.helpers import capture_log
        events = capture_log(self)
        if platform.python_implementation() != "PyPy":
            self.assertIsNone(self.tune(None))
            self.assertIsNone(self.tune("trace_limit=abc"))
        else:
            self.assertEqual(self.tune(None), tap.PYPY_JIT)
            self.assertEqual(tap.PYPY_JIT, "trace_limit=16000")
            self.assertEqual(self.tune("trace_limit=8000"), "trace_limit=8000")
            self.assertEqual(self.tune(""), "defaults")
        self.assertEqual(events, [])

    def test_invalid(self):
        """Parameters PyPy refuses: one warning, PyPy's defaults, no traceback."""
        if platform.python_implementation() != "PyPy":
            raise SkipTest("PyPy only")
        from tests.helpers import capture_log
        events = capture_log(self)
        self.assertEqual(self.tune("trace_limit=abc"), "defaults")
        self.assertEqual(self.tune("nosuch=1"), "defaults")
        warnings = [e for e in events if e.get("log_format", "").startswith("TPROXY_PYPY_JIT")]
        self.assertEqual(len(warnings), 2)
        self.assertEqual(warnings[0]["params"], "trace_limit=abc")


class ForkServerTests(TestCase):
    """Which starts the tests' fork server (:mod:`tests.zygote`) takes: an
    environment that differs from its own only in ``TPROXY_REACTOR`` (read
    when tproxy starts, not when it is imported)."""

    def test_environment(self):
        env = python_environ()
        if zygote._server(env) is None:
            raise self.skipTest("no fork server here")
        self.assertIsNotNone(zygote._server(python_environ(TPROXY_REACTOR="default")))
        self.assertIsNotNone(zygote._server(python_environ(TPROXY_REACTOR=None)))
        for changed in ({"TPROXY_PARSER": "python"}, {"TPROXY_PARSER": None},
                        {"PYTHONPATH": None}, {"ANOTHER": "1"}):
            name, value = next(iter(changed.items()))
            if env.get(name) == value:
                continue
            self.assertIsNone(zygote._server(python_environ(**changed)), changed)


class CommandLineTests(TestCase):
    """
    What a user of ``twistd tproxy`` sees, in a real process: the drop-in
    found, a configuration error as one line and a failing exit status,
    ``--check``, a port in use, the reactor, signals (the messages of each
    configuration error are tested in process: :class:`OptionsTests`,
    :mod:`tests.test_config`).
    """

    def start(self, *args, **environ):
        """Start ``twistd ARGS`` (``environ``: changes to the environment,
        ``None`` to remove a variable), forked by the tests' fork server
        (:mod:`tests.zygote`; a real ``python`` in :meth:`test_check`)."""
        cwd = os.path.abspath(temp_path(self))
        os.makedirs(cwd)
        return zygote.start(args, cwd, python_environ(**environ))

    def start_real(self, *args):
        """Start ``python -c TWISTD ARGS``: the command as a user types it,
        a Python of its own."""
        cwd = os.path.abspath(temp_path(self))
        os.makedirs(cwd)
        return subprocess.Popen(
            [sys.executable, "-c", TWISTD] + list(args), cwd=cwd, env=python_environ(),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def result(self, process):
        """``(exit status, output)`` of a process :meth:`start` started."""
        try:
            output = process.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        return process.returncode, output.decode("utf-8", "replace")

    def twistd(self, *args):
        return self.result(self.start(*args))

    def assertFails(self, args, message, result=None):
        """``twistd -n tproxy ARGS`` (or its ``result``) fails with
        ``message``, in one line: its output."""
        code, output = result or self.twistd("-n", "--pidfile=", "tproxy", *args)
        self.assertNotEqual(code, 0, output)
        self.assertIn(message, output)
        self.assertNotIn("Traceback", output)
        self.assertNotIn("Usage:", output)
        return output

    def test_help(self):
        """``twistd tproxy --help``: twistd's own options find the drop-in
        and print its usage (in this process: twistd's plugin scan is the
        same; the real processes of :meth:`test_check` and the others find
        the drop-in too)."""
        from twisted.scripts.twistd import ServerOptions
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "argv", ["twistd"])
        e = self.assertRaises(SystemExit, ServerOptions().parseOptions, ["tproxy", "--help"])
        self.assertEqual(e.code, 0)
        self.assertIn("Usage: twistd [options] tproxy [-c CONFIG.json] "
                      "[--check] [--list-plugins]", out.getvalue())

    def test_bad_config(self):
        path = write_json(self, {"upstreams": {"api": {"peers": ["h:1", "h:70000"]}}})
        output = self.assertFails(["-c", path], path + ": upstreams.api.peers[1]: "
                                                       "port 70000 is out of range")
        self.assertEqual(output.strip(), path + ": upstreams.api.peers[1]: port "
                                                "70000 is out of range")

    def test_check(self):
        """``--check`` (``-t``) validates and exits, as ``nginx -t`` (an
        invalid file with ``-t``: :meth:`OptionsTests.test_check_invalid`;
        the one line and exit status of a configuration error:
        :meth:`test_bad_config`).  A real ``python -c TWISTD``, not
        forked: the command as a user types it."""
        path = write_json(self, {"listen": "tcp:1"})
        code, output = self.result(self.start_real("-n", "--pidfile=", "tproxy", "--check",
                                                   "-c", path))
        self.assertEqual((code, output), (0, path + ": the configuration is valid\n"))

    def test_fast_reactor_by_default(self):
        """
        Without ``-r``, ``twistd tproxy`` runs on tproxy's reactor and says
        which fast paths are on (and on CPython, that what it loaded at start
        is frozen); ``TPROXY_REACTOR=default`` keeps twistd's.
        The port is in use: a one-line error naming the listener, exit 1.
        """
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        listen = "tcp:{}:interface=127.0.0.1".format(busy.getsockname()[1])
        path = write_json(self, local(listen=listen))
        args = ("-n", "--pidfile=", "tproxy", "-c", path)
        # both at once (a second core, when there is one, starts the other)
        fast = self.start(*args, TPROXY_REACTOR=None)
        default = self.start(*args, TPROXY_REACTOR="default")
        output = self.assertFails(None, "cannot listen for the proxy on " + listen,
                                  self.result(fast))
        if fastio.TWISTED_VERSION in fastio.TESTED_TWISTED:
            self.assertIn("fast paths: reactor tproxy.reactor.FastEPollReactor (on)",
                          output)
            self.assertIn("reactor class: tproxy.reactor.FastEPollReactor", output)
        else:
            self.assertIn("reactor class: twisted.internet.epollreactor.EPollReactor",
                          output)
        if platform.python_implementation() == "PyPy":
            self.assertIn(", PyPy JIT trace_limit=16000", output)
        else:
            self.assertIn("objects loaded at start left out of the collector's full "
                          "collections (gc.freeze)", output)
        # (the same installation and environment as this process's)
        self.assertIn(", compiled modules {},".format(compiled.STATE), output)
        self.assertIn(", regex {},".format("RE2" if spec.re2 is not None else "linear_re"),
                      output)
        output = self.assertFails(None, "cannot listen", self.result(default))
        self.assertNotIn("FastEPollReactor", output)
        self.assertIn("fast paths: reactor twisted.internet.", output)


class TwistdProcess(object):
    """
    A ``twistd -n [twistd_args] tproxy -c conf`` process (from the source
    tree, forked by the tests' fork server: :mod:`tests.zygote`), its output
    read line by line; killed after 60 s (a hung process fails the test)
    and terminated in ``case``'s cleanup.
    """

    def __init__(self, case, conf, cwd, twistd_args=()):
        self.case = case
        self.output = []
        argv = ["-n", "--pidfile="] + list(twistd_args) + ["tproxy", "-c", conf]
        self.proc = zygote.start(argv, cwd, python_environ())
        watchdog = threading.Timer(60, self.proc.kill)
        watchdog.start()
        case.addCleanup(watchdog.cancel)
        case.addCleanup(self.stop)

    def read_until(self, text, since=None, each=None):
        """Read lines until one contains ``text`` (fail at the end of the
        output); with ``since`` (an index in :attr:`output`), a line read
        already from there on is the one if it contains ``text``; ``each``
        is called with each line read (as it arrives)."""
        if since is not None:
            for line in self.output[since:]:
                if text in line:
                    return line
        for line in iter(self.proc.stdout.readline, b""):
            self.output.append(line.decode("utf-8", "replace"))
            if each is not None:
                each(self.output[-1])
            if text in self.output[-1]:
                return self.output[-1]
        self.case.fail("no {!r} in the output:\n{}".format(text, "".join(self.output)))

    def send_signal(self, signum):
        self.proc.send_signal(signum)

    def running(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.returncode is None:
            self.proc.terminate()
            self.proc.communicate()
        return self.proc.returncode

    def assertStopsCleanly(self):
        """``SIGTERM`` ends it cleanly (twistd ends by re-raising the signal
        that stopped it)."""
        self.case.assertIn(self.stop(), (0, -signal.SIGTERM), "".join(self.output))


class ReopenSignalTests(TestCase):
    """``SIGUSR1`` reopens the access log's file (for logrotate), in a real
    ``twistd``: :class:`tests.test_reload.SighupTests`; services made for
    tests install no signal handler."""

    def test_notInTests(self):
        """A service given a reactor (tests) leaves the signals alone."""
        service = makeService(options(self, local()), reactor=MemoryReactorClock())
        self.assertFalse(service.signals)

    def test_reopenFailureLogged(self):
        """A failing reopen callback is logged; the others still run."""
        service = makeService(options(self, local(plugins=[])), reactor=MemoryReactorClock())
        calls = []
        service.gateway.on_reopen(lambda: 1 / 0)
        service.gateway.on_reopen(lambda: calls.append(1))
        service.gateway.reopen()
        self.assertEqual(calls, [1])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


def _at_once(f, *args, **kwargs):
    """``callFromThread`` that runs ``f`` at once (no reactor turn to wait for)."""
    f(*args, **kwargs)


class TwistdLogReopenTests(TestCase):
    """
    ``SIGUSR1`` with twistd writing its own log file (``--logfile``): twistd
    rotates it (``twistd.log`` to ``twistd.log.1``); a file logrotate renamed
    already (and maybe created again, empty) is reopened at its path instead
    (twistd's rotation did nothing, and its lines went on into the renamed
    file). The handler is called as the signal would; what it hands the
    reactor (``callFromThread``) runs at once.
    """

    def setUp(self):
        if not hasattr(signal, "SIGUSR1"):
            raise SkipTest("no SIGUSR1 here")
        from twisted.scripts._twistd_unix import UnixAppLogger
        original = signal.getsignal(signal.SIGUSR1)
        self.addCleanup(signal.signal, signal.SIGUSR1, original)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        cwd = os.path.abspath(temp_path(self))
        os.makedirs(cwd)
        self.path = os.path.join(cwd, "twistd.log")
        observer = UnixAppLogger({"logfile": self.path, "nodaemon": True,
                                  "syslog": False})._getLogObserver()
        self.log_file = observer._outFile
        self.addCleanup(self.log_file.close)
        # (twistd's handler hands the rotation to the global reactor)
        self.patch(reactor, "callFromThread", _at_once)
        fake = MemoryReactorClock()
        fake.callFromThread = _at_once
        self.service = makeService(options(self, local(plugins=[])), reactor=fake)
        gateway_service._reopen_on_sigusr1(self.service)

    def signal(self):
        signal.getsignal(signal.SIGUSR1)(signal.SIGUSR1, None)

    def write(self, text):
        self.log_file.write(text)
        self.log_file.flush()

    def read(self, path):
        with open(path) as f:
            return f.read()

    def test_renamed(self):
        self.write("before\n")
        os.rename(self.path, self.path + "-20261205")
        self.signal()
        self.write("after\n")
        self.assertEqual(self.read(self.path + "-20261205"), "before\n")
        self.assertEqual(self.read(self.path), "after\n")

    def test_renamedAndCreated(self):
        """logrotate's ``create``: an empty file at the path."""
        self.write("before\n")
        os.rename(self.path, self.path + ".1")
        open(self.path, "w").close()
        self.signal()
        self.write("after\n")
        self.assertEqual(self.read(self.path + ".1"), "before\n")
        self.assertEqual(self.read(self.path), "after\n")
        self.assertFalse(os.path.exists(self.path + ".2"))

    def test_notRenamed(self):
        """Nothing renamed it: twistd's own rotation, as before."""
        self.write("before\n")
        self.signal()
        self.write("after\n")
        self.assertEqual(self.read(self.path + ".1"), "before\n")
        self.assertEqual(self.read(self.path), "after\n")


class DefaultsUnchangedTests(TestCase):
    """The built-in defaults and etc/conf.json agree (README promises it)."""

    def test_same(self):
        self.assertEqual(validate_config({}),
                         load_config(os.path.join(ROOT, "etc", "conf.json")))
