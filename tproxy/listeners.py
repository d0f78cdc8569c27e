# -*- test-case-name: tests.test_reload,tests.test_tls -*-
"""
The listeners a configuration asks for (:func:`listener_specs`), what
identifies one across reloads (:func:`listener_key`), and the factory that
serves each kind (:func:`make_factory`): what the single process, the
parent of workers, each worker and a reload share.
"""

__all__ = ["BACKLOG", "kind_of", "listen_path", "listener_clashes", "listener_key",
           "listener_specs", "make_factory", "own_listener_of", "server_endpoint",
           "with_backlog"]

#: The accept queue of a listener whose endpoint string names none (``tcp``,
#: ``tcp6``, ``unix``, ``ssl``): nginx's ``listen ... backlog`` default, where
#: Twisted's is 50 (the kernel caps it at ``net.core.somaxconn``).
BACKLOG = 511

#: where each endpoint kind takes its ``backlog`` as a positional field
#: (after the kind): ``tcp:PORT:INTERFACE:BACKLOG``, ``tcp6:PORT:BACKLOG``...
_BACKLOG_FIELD = {"tcp": 2, "tcp6": 1, "unix": 2, "ssl": 5}


def listener_specs(config):
    """
    ``[(kind, name, endpoint description, stream entry or None, tls)]``: the
    listeners ``config`` asks for; ``kind`` is ``"proxy"``, ``"admin"`` or
    ``"stream"``; ``tls`` is ``None`` or ``(tls settings, their JSON path,
    whether the listener speaks HTTP)`` for a listener behind TLS.
    :func:`listener_key` identifies a listener across reloads.
    """
    tls = config.get("tls")
    specs = []
    if not tls or "listen" in tls:
        specs.append(("proxy", "proxy", config["listen"], None, None))
    if tls:
        # TLS on "listen", or on its own listener beside the plain one
        specs.append(("proxy", "HTTPS proxy" if specs else "proxy",
                      tls.get("listen", config["listen"]), None, (tls, "tls", True)))
    specs.append(("admin", "admin API", config["admin"]["listen"], None, None))
    for i, stream in enumerate(config.get("streams", ())):
        stream_tls = stream.get("tls")
        specs.append(("stream", "stream of group {} (streams[{}])".format(stream["group"], i),
                      stream["listen"], stream,
                      (stream_tls, "streams[{}].tls".format(i), False) if stream_tls else None))
    return specs


def with_backlog(description):
    """
    The endpoint string ``description`` with ``backlog=`` :data:`BACKLOG`
    added when it is a ``tcp``, ``tcp6``, ``unix`` or ``ssl`` endpoint that
    names no backlog of its own (as a field or positionally); any other
    unchanged (``systemd:`` sockets come made; a bad string is reported by
    the listener).
    """
    try:
        from twisted.internet.endpoints import _parse
        args, kwargs = _parse(description)
    except Exception:   # (ImportError: a Twisted without it; the string: at listen)
        return description
    field = _BACKLOG_FIELD.get(args[0].lower()) if args else None
    if field is None or "backlog" in kwargs or len(args) > field + 1:
        return description
    longer = "{}:backlog={}".format(description, BACKLOG)
    try:
        # (a description ending in a "\\" would escape the added ':')
        if _parse(longer) != (args, dict(kwargs, backlog=str(BACKLOG))):
            return description
    except Exception:
        return description
    return longer


def server_endpoint(reactor, description):
    """The server endpoint of the endpoint string ``description``, its accept
    queue :data:`BACKLOG` unless it names one (:func:`with_backlog`)."""
    from twisted.internet.endpoints import serverFromString
    return serverFromString(reactor, with_backlog(description))


def listener_clashes(config):
    """
    ``[(JSON path, problem)]``: the listeners of ``config`` that would bind
    where an earlier one does (the same UNIX socket; the same TCP port on the
    same address, or on all addresses), which would stop the start (or a
    reload) with "address already in use" after ``--check`` said the file was
    valid.  Port ``0`` (any free port) never clashes.
    """
    from tproxy.addresses import bind_place
    tls = config.get("tls")
    seen, problems = [], []
    for kind, _, description, stream, on_tls in listener_specs(config):
        path = ("tls.listen" if on_tls and kind == "proxy" and "listen" in tls
                else listen_path(kind, stream, config))
        place = bind_place(description)
        if place is not None:
            for other_path, other, other_place in seen:
                if _overlap(place, other_place):
                    problems.append((path, "{} binds where {} ({}) does: each "
                                     "listener needs its own port or socket".format(
                                         description, other_path, other)))
                    break
            seen.append((path, description, place))
    return problems


def _overlap(a, b):
    if a[0] != b[0]:
        return False
    if a[0] == "unix":
        return a[1] == b[1]
    if a[1] != b[1]:
        return False
    anywhere = ("0.0.0.0", "::")
    return a[2] == b[2] or a[2] in anywhere or b[2] in anywhere


def own_listener_of(config):
    """:func:`tproxy.addresses.own_listeners` of ``config``'s listeners: which
    of them (by name) a connection to ``(host, port)`` would reach."""
    from tproxy.addresses import own_listeners
    return own_listeners([(name, description)
                          for _, name, description, _, _ in listener_specs(config)])


def listener_key(kind, description, tls):
    """What identifies a listener across reloads: its kind and endpoint, and
    whether it speaks TLS (the description
    :meth:`tproxy.gateway_service.GatewayService.endpoint` gives it).  A TLS
    listener is kept whatever its TLS settings: the reload gives it a
    :class:`tproxy.tls.ServerTLS` of the new settings and plugins (files
    read again).  One turning between plain and TLS on the same endpoint is
    refused: that needs a restart."""
    return (kind, description + " (TLS)" if tls else description)


def make_factory(kind, gateway, stream=None, tls=None):
    """A new factory for a listener of ``kind`` serving ``gateway``."""
    from tproxy.http.server import ProxyFactory
    from tproxy.stream import StreamFactory
    if kind == "proxy":
        return ProxyFactory(gateway, scheme="https" if tls else "http")
    if kind == "stream":
        return StreamFactory(gateway, stream)
    return gateway.admin.site()


def kind_of(factory):
    """``"proxy"``, ``"stream"`` or ``"admin"``: what ``factory`` serves."""
    kind = getattr(factory, "kind", None)
    return {"http": "proxy", "stream": "stream"}.get(kind, "admin")


def listen_path(kind, stream, config):
    """The JSON path of a listener's endpoint string."""
    if kind == "admin":
        return "admin.listen"
    if kind == "stream":
        return "streams[{}].listen".format(config["streams"].index(stream))
    return "listen"
