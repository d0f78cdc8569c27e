# -*- test-case-name: tests.test_testing,tests.test_builtins_harness -*-
"""
The HTTP harness (:class:`Harness`, see :mod:`tproxy.testing`): a gateway
on an in-memory network with its stub upstream servers
(:mod:`tproxy.testing.upstreams`) and its clients
(:mod:`tproxy.testing.client`).
"""

import json

from twisted.internet.interfaces import IProtocolFactory
from twisted.web.resource import IResource

from tproxy.admin import AdminResponse
from tproxy.admin_page import install as install_status_page
from tproxy.http.server import ProxyFactory
from tproxy.testing._network import UNREACHABLE, _Network, _address
from tproxy.testing.client import ClientConnection, PendingRequest, _Client, _request_bytes, _str
from tproxy.testing._tcp import _TCPPump, _TCPTransport
from tproxy.testing.upstreams import _HandlerResource, _StubSite


#: The address the harness's clients connect to (what the proxy's
#: ``getHost()`` says).
_PROXY_ADDRESS = ("127.0.0.1", 8080)

#: The address of the admin listener the harness's admin clients connect to.
_ADMIN_ADDRESS = ("127.0.0.1", 9180)



class Harness(_Network):
    """
    A gateway with its plugins, its HTTP server and its upstream pool, whose
    network and clock are in memory.

    :param config: a configuration ``dict`` as in ``conf.json`` (validated
        and completed by :func:`tproxy.config.validate_config`; ``None`` for
        the defaults).
    :param plugins: the ``plugins`` list to use instead of the
        configuration's: names (built-ins, entry points, dotted paths) and
        ``{"name", "settings", "routes"}`` dicts as in ``conf.json``, and also
        plugin objects -- a module, a class (made with its validated
        ``settings``: ``{"name": MyPlugin, "settings": {...}}``) or an
        instance --, all run in the order given.
    :param servers: the stub upstream servers: ``{"host:port": stub}`` (see
        the module docstring).  The configuration's ``upstreams`` and the
        registry decide which addresses tproxy connects to; ``servers``
        decides what answers there.
    :param entry_points: the entry points of the group ``tproxy`` that names
        resolve against (default: the installed ones).

    :raises tproxy.config.ConfigError: for an invalid configuration or plugin.
    :raises Exception: what an ``init_worker`` failed with.

    :ivar clock: the :class:`~twisted.internet.testing.MemoryReactorClock`
        that is the gateway's reactor (also ``reactor``).
    :ivar gateway: the :class:`tproxy.gateway.Gateway`.
    :ivar registry: the gateway's registry.
    :ivar config: the validated configuration.
    :ivar factory: the :class:`tproxy.http.server.ProxyFactory` the harness's
        clients connect to.
    :ivar admin_factory: the admin listener's factory
        (:meth:`tproxy.admin.AdminRoutes.site`) that :meth:`admin` and
        :meth:`admin_raw` connect to.
    :ivar upstream_requests: every :class:`UpstreamRequest` the stub servers
        received, in order.
    :ivar contexts: the :class:`~tproxy.context.RequestContext` of every
        finished request, in the order their ``log`` phase ran (the harness's
        ``log`` implementation runs after every other one).
    :ivar events: the :mod:`twisted.logger` events emitted while the harness
        was working (see :meth:`messages`).
    """

    def __init__(self, config=None, plugins=None, servers=None, entry_points=None):
        self.upstream_requests = []
        _Network.__init__(self, servers)
        self._start(config, plugins, entry_points)
        self.contexts = self._recorder.contexts
        self.factory = ProxyFactory(self.gateway)
        # the admin listener's status page and its JSON endpoints, as twistd has them
        install_status_page(self.gateway, [("proxy", "memory", self.factory)])
        self.admin_factory = self.gateway.admin.site()

    def _server_factory(self, stub):
        if stub is UNREACHABLE:
            return stub
        if IResource.providedBy(stub):
            return _StubSite(stub, self.clock, self.upstream_requests.append)
        if IProtocolFactory.providedBy(stub):
            return stub
        if callable(stub):
            return _StubSite(_HandlerResource(stub), self.clock,
                             self.upstream_requests.append)
        raise TypeError("a stub server is a handler function, an IResource, an "
                        "IProtocolFactory or UNREACHABLE, not {!r}".format(stub))

    def _connect(self, client, client_address, server, server_address):
        """Connect two protocols with in-memory TCP transports (FINs and
        resets travel as on a socket: an upgraded connection's half-close
        reaches the stub upstream)."""
        client_io = _TCPTransport(client, isServer=False, hostAddress=client_address,
                                  peerAddress=server_address)
        server_io = _TCPTransport(server, isServer=True, hostAddress=server_address,
                                  peerAddress=client_address)
        server.makeConnection(server_io)
        client.makeConnection(client_io)
        self._pumps.append(_TCPPump(client, server, client_io, server_io, False,
                                    clock=self.clock))

    # -- what a test calls --------------------------------------------------------

    def request(self, method, uri, headers=None, body=b"", client="127.0.0.1",
                wait=True):
        """
        Send one request through the proxy, on a new client connection.

        A ``Host`` field is added when ``headers`` has none, and a
        ``Content-Length`` when there is a body.

        :param method: ``"GET"``, ...
        :param uri: the request target (``"/api/users?id=1"``).
        :param headers: a ``dict`` or a list of ``(name, value)`` pairs.
        :param body: ``bytes`` (or ``str``, sent as UTF-8).
        :param client: the client's address, as the proxy sees it (for
            ``trusted_proxies``).
        :param wait: with ``False``, return a :class:`PendingRequest` at once.
        :return: a :class:`StubResponse`.
        :raises RequestPending: if the response is not complete once nothing
            more happens without the clock moving (an upstream that does not
            answer, a plugin waiting for a timer).
        :raises ResponseIncomplete: if the proxy closed the connection first.
        """
        data = _request_bytes(method, uri, headers, body)
        protocol = _Client(data, method.upper())
        client_address = _address(client, next(self._ports))
        with self._observing():
            proxy = self.factory.buildProtocol(client_address)
            self._connect(protocol, client_address, proxy, _address(*_PROXY_ADDRESS))
            pending = PendingRequest(self, protocol, method, uri)
            self.flush()
        return pending.result() if wait else pending

    def connect(self, client="127.0.0.1", close_on_eof=True):
        """
        Open a client connection to the proxy and keep it open: for
        keep-alive, pipelining and raw bytes (see :class:`ClientConnection`).
        It is a TCP connection in memory: FINs and resets travel as on a
        socket.

        :param client: the client's address, as the proxy sees it.
        :param close_on_eof: as for :class:`ClientConnection`.
        :rtype: :class:`ClientConnection`
        """
        connection = ClientConnection(self, close_on_eof)
        client_address = _address(client, next(self._ports))
        server_address = _address(*_PROXY_ADDRESS)
        with self._observing():
            proxy = self.factory.buildProtocol(client_address)
            client_io = _TCPTransport(connection, isServer=False,
                                      hostAddress=client_address, peerAddress=server_address)
            server_io = _TCPTransport(proxy, isServer=True,
                                      hostAddress=server_address, peerAddress=client_address)
            proxy.makeConnection(server_io)
            connection.makeConnection(client_io)
            self._pumps.append(_TCPPump(connection, proxy, client_io, server_io, False,
                                        clock=self.clock))
            self.flush()
        return connection

    def admin(self, method, uri, headers=None, body=b"", client="127.0.0.1"):
        """
        Send a request to the admin API over HTTP, on a new connection to the
        admin listener (every check included: token, ``Host``, browser
        requests, limits).

        A ``Host`` field (``localhost``) is added when ``headers`` has none,
        and a ``Content-Length`` when there is a body; a ``dict`` or ``list``
        body is sent as JSON (with ``Content-Type: application/json``).

        :param uri: path and query (``"/upstream/add?port=9001&prefix=api"``).
        :param headers: a ``dict`` or a list of ``(name, value)`` pairs.
        :param client: the caller's address.
        :return: a :class:`tproxy.admin.AdminResponse` (``status``, ``obj``:
            the decoded JSON body, ``None`` for another type; ``headers``:
            every response field; ``body``).
        """
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode("utf-8")
            headers = (list(headers.items()) if hasattr(headers, "items")
                       else list(headers or []))
            if not any(n.lower() == "content-type" for n, _ in headers):
                headers.append(("Content-Type", "application/json"))
        response = self.admin_raw(_request_bytes(method, uri, headers, body), client,
                                  method)
        is_json = "json" in (response.headers.get("content-type") or "")
        obj = json.loads(response.body.decode("utf-8")) if is_json and response.body else None
        return AdminResponse(response.status, obj,
                             [(_str(n), _str(v)) for n, v in response.headers.raw],
                             response.body)

    def admin_raw(self, data, client="127.0.0.1", method="GET", wait=True):
        """
        Send ``data`` (``bytes``, as they are) to the admin listener on a new
        connection and read one response.

        :param method: the request's method (a ``HEAD`` response has no body).
        :param wait: with ``False``, return a :class:`PendingRequest` at once.
        :return: a :class:`StubResponse`.
        :raises RequestPending: if no complete response came yet.
        :raises ResponseIncomplete: if the listener closed the connection
            first.
        """
        protocol = _Client(data, method.upper())
        client_address = _address(client, next(self._ports))
        with self._observing():
            server = self.admin_factory.buildProtocol(client_address)
            self._connect(protocol, client_address, server, _address(*_ADMIN_ADDRESS))
            pending = PendingRequest(self, protocol, method, "(admin)")
            self.flush()
        return pending.result() if wait else pending

    def reload(self, config=None, plugins=None, entry_points=None):
        """
        Reload as ``SIGHUP`` does (:mod:`tproxy.reload`): a new gateway with
        ``config`` and ``plugins`` (as for the constructor) serves the
        requests read from now on, the registry goes on; the old gateway's
        requests in flight finish on it, and its ``on_stop`` callbacks run
        once they have (looked at after ``tproxy.reload.RETIRE_POLL``
        seconds of the clock, then at doubling intervals up to
        ``RETIRE_POLL_MAX``: ``advance`` it).

        :raises tproxy.config.ConfigError: for an invalid configuration or
            plugin (the old gateway goes on, untouched).
        :raises Exception: what an ``init_worker`` failed with (the new
            gateway is stopped, the old one goes on).
        :return: the requests in flight on the old gateway (how many).
        """
        from tproxy.gateway import _update_static
        from tproxy.reload import in_flight, retire
        old, old_config, old_ttl = self.gateway, self.config, self.registry.ttl
        try:
            self._start(config, plugins, entry_points, previous=old)
        except BaseException:
            new = self.gateway
            if new is not old:
                _update_static(old.registry, new.config, old.config)
                old.registry.ttl = old_ttl
                old.health.configure(old.config.get("health"))
                self._wait(new.stop, "stopping the new gateway")
            self.gateway, self.config, self.registry = old, old_config, old.registry
            raise
        self.factory.use(self.gateway)
        self.gateway.take_over(old)
        install_status_page(self.gateway, [("proxy", "memory", self.factory)])
        pending = in_flight(old, [self.factory], [])
        with self._observing():
            retire(old, pending)
            self.flush()
        return len(pending)

    def stop(self):
        """Stop the gateway: its ``on_stop`` callbacks run."""
        with self._observing():
            self._wait(self.gateway.stop, "stopping the gateway")
            self.factory.pool.close()
            self.flush()
