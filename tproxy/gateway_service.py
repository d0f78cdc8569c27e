# -*- test-case-name: tests.test_shutdown,tests.test_tap,tests.test_reload -*-
"""
The service that runs a gateway (:class:`GatewayService`, what
:func:`tproxy.tap.makeService` returns): ``init_worker``, the child
services, then the listeners on start; on stop, the listeners closed, the
open connections drained for at most ``shutdown_timeout`` seconds, then the
rest; ``SIGHUP`` (reload), ``SIGUSR1`` (reopen) and a ``SIGTERM`` /
``SIGINT`` that stops once (:mod:`tproxy.stop_signals`) in a real
``twistd`` run.  Also the endpoints it listens on (:func:`open_endpoint`, with TLS
when configured) and how a failure at start is told: one line
(:class:`StartupError`, :func:`one_line`) and exit status 1.
"""

import os
import sys

from twisted.application.service import MultiService, Service
from twisted.internet.defer import DeferredList, maybeDeferred
from twisted.logger import Logger

from tproxy.fastio_accept import fast_listener
from tproxy.stop_signals import stop_once_on_signals

__all__ = ["GatewayService", "StartupError", "open_endpoint", "with_tls", "one_line",
           "exit_status_on_exit"]

#: (the namespace of ``twistd tproxy``'s lines: "proxy listening on ...")
log = Logger(namespace="tproxy.tap")


class GatewayService(MultiService):
    """
    Runs a gateway: on start, every ``init_worker`` first, then the child
    services, then the listeners; on stop, the reverse, with a drain of the
    open connections between the listeners and the child services (see
    :meth:`stopService`).

    :param gateway: the :class:`tproxy.gateway.Gateway`.
    :param listeners: ``[(name, endpoint, factory)]``: what to listen on.
    :param signals: install a ``SIGUSR1`` handler that runs
        ``gateway.reopen`` (the access log's file reopened for logrotate)
        and a ``SIGHUP`` handler that runs :meth:`reload`; only the service
        of a real ``twistd`` run does.
    :param config_path: the configuration file :meth:`reload` reads
        (``None``: the built-in defaults).

    :ivar gateway: the gateway serving new requests (a reload replaces it).
    :ivar reloader: the :class:`tproxy.reload.Reloader`.
    """

    def __init__(self, gateway, listeners, signals=False, config_path=None):
        MultiService.__init__(self)
        self.gateway = gateway
        self.listeners = listeners
        self.signals = signals
        self.ports = []
        from tproxy.reload import Reloader
        self.reloader = Reloader(self, config_path)

    def reload(self):
        """
        Re-read the configuration file and serve new requests with it, or
        refuse it and keep the running one (see :mod:`tproxy.reload`).

        :return: a Deferred firing ``True`` (reloaded) or ``False`` (refused).
        """
        return self.reloader.reload()

    def endpoint(self, description, tls=None, plugin_manager=None):
        """The server endpoint of an endpoint string (see
        :func:`open_endpoint`)."""
        return open_endpoint(self.gateway.reactor, description, tls, plugin_manager)

    def startService(self):
        """
        Start the gateway and listen.

        A failure that happens before the reactor runs (the usual case: a port
        in use fails at once) raises ``SystemExit`` with a one-line message;
        a later one is logged and stops the reactor with exit status 1.
        """
        Service.startService(self)
        if self.signals:
            _reopen_on_sigusr1(self)
            _reload_on_sighup(self)
            # (the reactor installs its handlers as it starts: after this)
            self.gateway.reactor.callWhenRunning(stop_once_on_signals, self.gateway.reactor)
        early = []

        def failed(f):
            if early is not None:
                early.append(f)
            else:
                self._failed_late(f)
        d = maybeDeferred(self.gateway.start)
        d.addCallback(lambda _: [s.startService() for s in self])
        d.addCallback(lambda _: self._listen())
        d.addErrback(failed)
        early, found = None, early
        if found:
            raise SystemExit(one_line(found[0]))

    def _listen(self):
        ds = [self._listen_one(*listener) for listener in self.listeners]
        return DeferredList(ds, fireOnOneErrback=True, consumeErrors=True).addErrback(
            lambda f: f.value.subFailure)

    def _listen_one(self, name, endpoint, factory, record=True):
        def listening(port):
            if record:
                self.ports.append(port)
            if (getattr(factory, "kind", None) == "http"
                    and getattr(port, "factory", None) is factory):
                # plain HTTP (TLS wraps the factory): its connections' fast
                # write and close as methods of their transport's class
                fast_listener(port)
            address = port.getHost()
            if hasattr(address, "port"):
                address = "{}:{}".format(address.host, address.port)
            log.info("{name} listening on {address}", name=name, address=address)
            return port

        def failed(f):
            raise StartupError("cannot listen for the {} on {}: {}".format(
                name, endpoint.description, f.getErrorMessage()))
        return endpoint.endpoint.listen(factory).addCallbacks(listening, failed)

    def _failed_late(self, f):
        log.critical("{message}", message=one_line(f))
        exit_status_on_exit(1)
        reactor = self.gateway.reactor
        if reactor.running:
            reactor.stop()

    def stopService(self):
        """
        Stop gracefully, as nginx's graceful quit: stop listening; drain the
        connections open (:meth:`_drain`); then stop the child services and
        the gateway (its ``on_stop`` callbacks), and close the idle upstream
        connections.

        :return: a Deferred that fires when all is done (twistd runs this in
            a "before shutdown" trigger and waits for it before the reactor
            stops).
        """
        Service.stopService(self)
        self.gateway.serving = False   # /readyz: 503 while draining
        ports, self.ports = self.ports, []
        d = DeferredList([maybeDeferred(p.stopListening) for p in ports],
                         consumeErrors=True)
        d.addCallback(lambda _: self._drain())
        d.addCallback(lambda _: MultiService.stopService(self))
        d.addCallback(lambda _: self.reloader.stop())
        d.addCallback(lambda _: self.gateway.stop())
        d.addCallback(lambda _: self._close_pools())
        return d

    def _drainable(self):
        """``(http, streams)``: the listeners' proxy and stream factories."""
        from tproxy.http.server import ProxyFactory
        from tproxy.stream import StreamFactory
        factories = [listener[2] for listener in self.listeners] + self.reloader.leaving
        return ([f for f in factories if isinstance(f, ProxyFactory)],
                [f for f in factories if isinstance(f, StreamFactory)])

    def _drain(self):
        """
        Let the connections open finish, for at most ``shutdown_timeout``
        seconds (the listeners are closed already): an HTTP connection
        serving requests closes after answering the requests read so far
        (the last response says ``Connection: close``), an idle one after
        the next request it begins within a second, or then (see
        :meth:`tproxy.http.server.ProxyFactory.drain`); a stream
        session goes on until it ends.  Whatever is left when the time is up
        is aborted; ``shutdown_timeout`` 0 aborts everything at once.

        :return: a Deferred that fires once every connection is closed.
        """
        http, streams = self._drainable()
        clock = self.gateway.reactor
        timeout = self.gateway.config.get("shutdown_timeout", 10)
        open_http = sum(f.open_connections for f in http)
        open_streams = sum(f.open_connections for f in streams)
        if not open_http and not open_streams:
            return None
        log.info("stopping: draining {http} HTTP connection(s) and {streams} stream "
                 "session(s) (shutdown_timeout {timeout} s)",
                 http=open_http, streams=open_streams, timeout=timeout)
        start = clock.seconds()
        aborted = []

        def abort():
            aborted.append((sum(f.abort() for f in http),
                            sum(f.abort() for f in streams)))

        if not timeout:
            abort()
        ds = [f.drain() for f in http] + [f.drain() for f in streams]
        done = DeferredList(ds, consumeErrors=True)
        if not aborted:
            timer = clock.callLater(timeout, abort)

            def stop_timer(result):
                if timer.active():
                    timer.cancel()
                return result
            done.addBoth(stop_timer)

        def report(_):
            if aborted:
                log.warn("stopped: {http} HTTP connection(s) and {streams} stream "
                         "session(s) aborted after shutdown_timeout ({timeout} s)",
                         http=aborted[0][0], streams=aborted[0][1], timeout=timeout)
            else:
                log.info("stopped: every connection closed in {elapsed:.3f} s",
                         elapsed=clock.seconds() - start)
        return done.addCallback(report)

    def _close_pools(self):
        """Close the idle upstream connections of the proxy listeners."""
        for f in self._drainable()[0]:
            f.pool.close()


class StartupError(Exception):
    """A startup failure whose message says it all (no traceback needed)."""


class _Endpoint(object):
    """An endpoint and the string it came from (for messages)."""

    def __init__(self, endpoint, description):
        self.endpoint = endpoint
        self.description = description


def one_line(f, subject="tproxy"):
    """The one line of a start's failure ``f``: a :class:`StartupError`'s
    message, else ``<subject> failed to start: <type>: <message>``
    (``subject``: ``"the new configuration"`` for a reload)."""
    if f.check(StartupError):
        return str(f.value)
    return "{} failed to start: {}: {}".format(
        subject, f.type.__name__, f.getErrorMessage())


def _reload_on_sighup(service):
    """
    Run ``service.reload`` in the reactor on ``SIGHUP`` (which would end the
    process otherwise: twistd installs no handler for it).
    """
    import signal
    signum = getattr(signal, "SIGHUP", None)
    if signum is None:  # not on Windows
        return
    reactor = service.gateway.reactor

    def reload(number, frame):
        reactor.callFromThread(service.reload)
    signal.signal(signum, reload)


def _reopen_on_sigusr1(service):
    """
    Run the current gateway's ``reopen`` in the reactor on ``SIGUSR1``
    (``callFromThread`` is what a signal handler may call), then the handler
    that was there: twistd's, which rotates its own log file when it writes
    one (``--logfile``; ``twistd.log`` becomes ``twistd.log.1``).  When
    logrotate renamed that file already (the path names another file, or
    none), twistd's rotation would do nothing (its lines would go on into
    the renamed file): the file is reopened at its path instead, as nginx
    reopens its logs.
    """
    import signal
    signum = getattr(signal, "SIGUSR1", None)
    if signum is None:  # not on Windows
        return
    previous = signal.getsignal(signum)
    twistd_log = _twistd_log_file(previous)
    reactor = service.gateway.reactor

    def reopen(number, frame):
        reactor.callFromThread(lambda: service.gateway.reopen())
        if twistd_log is not None and _renamed(twistd_log):
            reactor.callFromThread(twistd_log.reopen)
        elif callable(previous):
            previous(number, frame)
    signal.signal(signum, reopen)


def _twistd_log_file(handler):
    """The ``LogFile`` twistd's ``SIGUSR1`` handler rotates (a closure over
    it, in ``twisted.scripts._twistd_unix``), or ``None``."""
    from twisted.python.logfile import BaseLogFile
    for cell in getattr(handler, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:   # an empty cell
            continue
        if isinstance(value, BaseLogFile):
            return value
    return None


def _renamed(log_file):
    """Whether ``log_file``'s path no longer names the file it writes."""
    try:
        opened = os.fstat(log_file._file.fileno())
        named = os.stat(log_file.path)
    except (AttributeError, ValueError):
        return False   # not open: twistd's rotation decides
    except OSError:
        return True    # no file at the path
    return (opened.st_dev, opened.st_ino) != (named.st_dev, named.st_ino)


def exit_status_on_exit(status):
    """
    Make the process exit with ``status`` once twistd is done (twistd itself
    exits 0 after the reactor stops): a last ``atexit`` hook.
    """
    import atexit

    def _exit():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    atexit.register(_exit)


def open_endpoint(reactor, description, tls=None, plugin_manager=None):
    """
    The server endpoint of an endpoint string, as an :class:`_Endpoint`;
    with ``tls`` (``(settings, JSON path, speaks HTTP)``, see
    :func:`tproxy.listeners.listener_specs`), TLS in front of its connections,
    the ``certificate`` hook of ``plugin_manager`` choosing certificates; its
    accept queue 511 unless the string names one
    (:func:`tproxy.listeners.server_endpoint`).
    """
    from tproxy.listeners import server_endpoint
    return with_tls(reactor, server_endpoint(reactor, description), description, tls,
                    plugin_manager)


def with_tls(reactor, endpoint, description, tls=None, plugin_manager=None):
    """``endpoint`` (a server endpoint) as an :class:`_Endpoint` named
    ``description``, with TLS in front of its connections when ``tls`` is
    given (see :func:`open_endpoint`)."""
    e = _Endpoint(endpoint, description)
    if not tls:
        return e
    from tproxy.tls import HTTP_ALPN, ServerTLS
    from tproxy.tls_listener import TLSServerEndpoint
    settings, path, http = tls
    server_tls = (ServerTLS(settings, path, plugin_manager, HTTP_ALPN) if http
                  else ServerTLS(settings, path, plugin_manager))
    return _Endpoint(TLSServerEndpoint(e.endpoint, server_tls, reactor),
                     description + " (TLS)")
