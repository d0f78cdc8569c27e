# -*- test-case-name: tests.test_testing,tests.test_builtins_harness -*-
"""
The in-memory network both harnesses stand on: in-memory connections and
their pumps on a fake clock (:mod:`tproxy.testing._clock`), stub servers by
address, captured log events, and a gateway built from a configuration and
plugin objects (:mod:`tproxy.testing._entries`; see :mod:`tproxy.testing`).
"""

import itertools

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import maybeDeferred
from twisted.internet.error import ConnectionRefusedError, TimeoutError
from twisted.logger import Logger, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.test import iosim

from tproxy import hookimpl
from tproxy.addresses import parse_host_port
from tproxy.config import validate_config
from tproxy.gateway import Gateway
from tproxy.plugins import BUILTINS, build_plugin_manager, tproxy_entry_points
from tproxy.testing._clock import _Clock
from tproxy.testing._entries import _access_log_to_events, _plugin_entry


_log = Logger()

#: The registration name of the harness's own ``log`` recorder.
_RECORDER = "tproxy.testing"

#: Pump rounds after which :meth:`Harness.flush` gives up (something is
#: sending forever).
_MAX_ROUNDS = 10000


class RequestPending(Exception):
    """
    The request has no complete response yet: the upstream did not answer
    (or the proxy is waiting for a timer).  Send it with ``wait=False`` and
    :meth:`Harness.advance` the clock.
    """


class _Unreachable(object):
    """The type of :data:`UNREACHABLE`."""

    def __repr__(self):
        return "UNREACHABLE"


#: A stub server whose connection attempts never complete: each fails with a
#: ``TimeoutError`` once the connect timeout (``timeouts.connect``) has
#: passed on the harness's clock.
UNREACHABLE = _Unreachable()


# ---------------------------------------------------------------------------
# the pieces
# ---------------------------------------------------------------------------


class _Transport(iosim.FakeTransport):
    """
    An iosim transport with what tproxy's protocols use of a TCP transport:
    ``connected``, and an ``abortConnection`` that drops unsent bytes.
    """

    @property
    def connected(self):
        return not self.disconnected

    def abortConnection(self):
        self.stream = []
        self.disconnecting = True


def _address(host, port):
    if ":" in host:
        return IPv6Address("TCP", host, port)
    return IPv4Address("TCP", host, port)


def _text(address):
    host = address.host
    return "{}:{}".format("[%s]" % host if ":" in host else host, address.port)


class _Recorder(object):
    """
    The harness's plugin: keeps every context the ``log`` phase saw (and,
    for a :class:`StreamHarness`, every one ``stream_log`` saw).
    """

    def __init__(self):
        self.contexts = []
        self.logged = []

    @hookimpl(trylast=True)
    def log(self, ctx):
        """Keep ``ctx``."""
        self.contexts.append(ctx)

    @hookimpl(trylast=True)
    def stream_log(self, ctx):
        """Keep ``ctx``."""
        self.logged.append(ctx)


# ---------------------------------------------------------------------------
# the harness
# ---------------------------------------------------------------------------


class _Network(object):
    """
    What :class:`Harness` and :class:`StreamHarness` share: the clock, the
    in-memory connections and their pumps, the stub servers' addresses, the
    log events, and the gateway built from a configuration and plugin objects.
    """

    def __init__(self, servers):
        self.clock = self.reactor = _Clock()
        self.events = []
        self._observer = self.events.append
        self._depth = 0
        self._pumps = []
        self._ports = itertools.count(40000)
        self._servers = {}
        for address, stub in (servers or {}).items():
            self._servers[parse_host_port(address)] = self._server_factory(stub)

    def _start(self, config, plugins, entry_points, previous=None):
        """
        Validate ``config`` (its ``plugins`` replaced by ``plugins``), load
        the plugins, register the recorder and start the gateway (one that
        replaces ``previous``, a reload: the same recorder goes on).
        """
        installed = tproxy_entry_points() if entry_points is None else list(entry_points)
        config = dict(config or {})
        given = {}
        if plugins is not None:
            taken = set(BUILTINS) | {ep.name for ep in installed}
            config["plugins"] = [_plugin_entry(p, given, taken) for p in plugins]
        self.config = validate_config(config, source="<harness config>")
        # (what the test named the entry by, its registered name), for plugin()
        self._entries = []
        counts = {}
        for entry in self.config["plugins"]:
            name = entry["name"]
            counts[name] = counts.get(name, 0) + 1
            unique = name if counts[name] == 1 else "{}#{}".format(name, counts[name])
            self._entries.append((given[name].obj if name in given else name, unique))

        plugin_manager = build_plugin_manager(
            _access_log_to_events(self.config), source="<harness config>",
            entry_points=installed + list(given.values()))
        # Registered last and trylast: pluggy puts it at the very end of the
        # ``log`` (and ``stream_log``) implementations, after trylast ones.
        if previous is None:
            self._recorder = _Recorder()
        plugin_manager.register(self._recorder, name=_RECORDER)
        self.gateway = Gateway(self.config, self.clock, plugin_manager, previous=previous)
        self.registry = self.gateway.registry
        self._wait(self.gateway.start, "init_worker")

    def set_server(self, address, stub):
        """
        Put ``stub`` at ``address`` (``"host:port"``) from now on, or take the
        server there away (``None``: connections are refused): a backend that
        dies or comes back.  Connections open stay as they are.
        """
        key = parse_host_port(address)
        if stub is None:
            self._servers.pop(key, None)
        else:
            self._servers[key] = self._server_factory(stub)

    def _server_factory(self, stub):
        raise NotImplementedError()

    def _connect(self, client, client_address, server, server_address):
        raise NotImplementedError()

    # -- the plugins -------------------------------------------------------------

    def plugin(self, entry, occurrence=1):
        """
        The plugin object tproxy registered for an entry of ``plugins``: the
        ``Plugin(settings)`` instance made from a name, a module or a class,
        or the object itself.

        :param entry: what the entry named: a name (``"least_conn"``,
            ``"apikey"``, ``"mycompany.auth"``) or the object given (a
            module, a class, an instance).
        :param occurrence: which entry, when it is listed more than once
            (1 is the first).
        :raises KeyError: if no such entry is listed.
        """
        found = [unique for named, unique in self._entries
                 if named is entry or (isinstance(entry, str) and named == entry)]
        if len(found) < occurrence:
            raise KeyError("{!r} is not listed in plugins{}".format(
                entry, "" if occurrence == 1 else " {} times".format(occurrence)))
        return self.gateway.plugins.get_plugin(found[occurrence - 1])

    def names(self, phase):
        """
        The registered names of the plugins implementing ``phase``
        (``"access"``, ``"stream_log"``...), in execution order, as
        ``twistd tproxy --list-plugins`` shows them (route-scoped ones
        included; the harness's own recorder left out).  A plugin listed
        twice is ``name#2`` the second time.
        """
        caller = getattr(self.gateway.plugins.hook, phase, None)
        if caller is None or phase.startswith("_"):
            raise ValueError("{!r} is not a hook of tproxy.hookspecs".format(phase))
        return [impl.plugin_name for impl in reversed(caller.get_hookimpls())
                if impl.plugin_name != _RECORDER]

    # -- moving bytes -----------------------------------------------------------

    def flush(self):
        """
        Move bytes between every connection, make the connections tproxy
        asked for and run the calls due now, until nothing more happens.
        (Every other method does this; call it after firing a Deferred a stub
        handler returned.)
        """
        with self._observing():
            for _ in range(_MAX_ROUNDS):
                self.clock.advance(0)
                moved = self._connect_pending()
                for pump in list(self._pumps):
                    if pump.quiet:
                        continue
                    if pump.pump(advanceClock=False):
                        moved = True
                    elif pump.clientIO.disconnected and pump.serverIO.disconnected:
                        self._pumps.remove(pump)
                    else:
                        pump.quiet = pump.may_rest()
                if not moved:
                    return
        raise RuntimeError("tproxy.testing: still moving bytes after {} rounds"
                           .format(_MAX_ROUNDS))

    def _observing(self):
        """Collect log events into :attr:`events` while the block runs
        (``with self._observing():``; blocks nest)."""
        return _Observing(self)

    def _connect_pending(self):
        """Answer the ``connectTCP`` and ``connectSSL`` calls made since the
        last round (TLS is not simulated: a TLS upstream's bytes go in the
        clear, to the stub at its address)."""
        made = False
        clock = self.clock
        while clock.tcpClients or clock.sslClients:
            if clock.tcpClients:
                host, port, factory, timeout, _ = clock.tcpClients.pop(0)
            else:
                host, port, factory, _, timeout, _ = clock.sslClients.pop(0)
            # (the connectors of both kinds in one list: only a failure
            # hands one back, which the pool does not read)
            connector = clock.connectors.pop(0)
            made = True
            server = self._servers.get((host, port))
            if server is None:
                factory.clientConnectionFailed(connector, Failure(
                    ConnectionRefusedError("no stub server at {}:{}".format(host, port))))
            elif server is UNREACHABLE:
                self.clock.callLater(timeout, factory.clientConnectionFailed, connector,
                                     Failure(TimeoutError("connect to {}:{}".format(host, port))))
            else:
                local = _address("127.0.0.1" if ":" not in host else "::1", next(self._ports))
                remote = _address(host, port)
                self._connect(factory.buildProtocol(remote), local,
                              server.buildProtocol(local), remote)
        return made

    def _wait(self, fn, what):
        """
        Call ``fn`` and return its result once the harness is quiet (raise
        its failure), logging what happens meanwhile.
        """
        box = []
        with self._observing():
            maybeDeferred(fn).addBoth(box.append)
            self.flush()
        if not box:
            raise RequestPending("{} has not finished (clock at {}s)".format(
                what, self.clock.seconds()))
        if isinstance(box[0], Failure):
            box[0].raiseException()
        return box[0]


    # -- time and logs ------------------------------------------------------------

    def advance(self, seconds):
        """
        Move the clock ``seconds`` forward, running each timer that falls due
        on the way at its own time and moving bytes after each.
        """
        with self._observing():
            self.flush()
            end = self.clock.seconds() + seconds
            while True:
                due = [c.getTime() for c in self.clock.getDelayedCalls()
                       if c.getTime() <= end]
                if not due:
                    break
                self._advance_to(min(due))
                self.flush()
            self._advance_to(end)
            self.flush()

    def _advance_to(self, when):
        now = self.clock.seconds()
        if when > now:
            self.clock.advance(when - now)
        if self.clock.seconds() < when:   # float rounding: land exactly
            self.clock.rightNow = when
        self.clock.advance(0)

    def messages(self):
        """:attr:`events` formatted as text, one string each."""
        return [formatEvent(e) for e in self.events]


class _Observing(object):
    """
    The context of :meth:`_Network._observing` (a plain class: every flush,
    request and timer step of a harness enters one, and a generator-based
    context manager costs several times more).
    """

    __slots__ = ("network",)

    def __init__(self, network):
        self.network = network

    def __enter__(self):
        network = self.network
        network._depth += 1
        if network._depth == 1:
            globalLogPublisher.addObserver(network._observer)

    def __exit__(self, *exc_info):
        network = self.network
        network._depth -= 1
        if network._depth == 0:
            globalLogPublisher.removeObserver(network._observer)
        return False
