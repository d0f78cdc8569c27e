# -*- test-case-name: tests.test_registry_redis,tests.test_rate_limit_redis -*-
"""
The connections to Redis of the shared registry
(:mod:`tproxy.registry_redis`) and of the ``rate_limit`` plugin's Redis
store (:mod:`tproxy.builtins._rate_limit_stores`): how Redis being away is
known from the connections themselves, not learnt from a command that
waited (txredisapi holds a command until it has a connection).

- :func:`parse_url`: the host, port, database and password of a
  ``redis://`` URL (an IPv6 host in brackets); :func:`host_port` names an
  address the same way.
- :func:`endpoint`: an IP address is connected to directly (a refusal is
  known at once; a :class:`HostnameEndpoint` reports it only when its next
  attempt would start, 0.3 s later), a name through ``HostnameEndpoint``.
- :class:`ReportingEndpoint`: tells its owner of every failed connection
  attempt (txredisapi's reconnecting ``ClientService`` keeps them to itself).
- :func:`watched_pool`: a txredisapi pool that tells its owner how many
  connections it holds whenever that changes.
- :func:`is_reconnection_noise`: the log events of a reconnecting pool that
  the owner's own "unreachable" and "answers again" lines replace (kept out
  of the log twistd writes by :func:`quiet_the_log`, which ``makeService``
  calls, and of a worker's by :func:`quiet`).
"""

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import CancelledError
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import FilteringLogObserver, LogLevel, PredicateResult
from zope.interface import implementer

from tproxy.config import ConfigError
from tproxy.log_levels import wrap_the_log

__all__ = ["ReportingEndpoint", "endpoint", "host_port", "is_reconnection_noise", "parse_url",
           "quiet", "quiet_the_log", "watched_pool"]


def parse_url(url, path="registry.url"):
    """
    ``(host, port, db, password)`` of ``redis://[:password@]host[:port][/db]``;
    an IPv6 host is written in brackets (``redis://[::1]:6379/0``) and
    returned without them (``"::1"``).

    :raises ConfigError: naming ``path`` for a bad URL.
    """
    if not url.startswith("redis://"):
        raise ConfigError((path, "bad Redis URL {!r} (expected redis://"
                                 "[:password@]host[:port][/db])".format(url)))
    rest = url[len("redis://"):]
    password = None
    if "@" in rest:
        auth, rest = rest.rsplit("@", 1)
        password = auth[1:] if auth.startswith(":") else auth
    hostport, _, db = rest.partition("/")
    if hostport.startswith("["):
        host, bracket, port = hostport[1:].partition("]")
        if not bracket or not isIPv6Address(host) or port[:1] not in ("", ":"):
            raise ConfigError((path, "bad Redis URL {!r}: an IPv6 host is an address "
                                     "in brackets, [::1]".format(url)))
        port = port[1:]
    else:
        host, _, port = hostport.partition(":")
    try:
        port = int(port) if port else 6379
        db = int(db) if db else 0
    except ValueError:
        raise ConfigError((path, "bad Redis URL {!r}".format(url)))
    if not host or not 1 <= port <= 65535:
        raise ConfigError((path, "bad Redis URL {!r}: port {} is out of range".format(
            url, port)))
    return host, port, db, password


def host_port(host, port):
    """``host:port``, an IPv6 host in brackets (``[::1]:6379``)."""
    return "[{}]:{}".format(host, port) if ":" in host else "{}:{}".format(host, port)


def endpoint(reactor, host, port, timeout):
    """
    The endpoint of ``host:port``: an address is connected to directly (a
    refusal is known at once; a :class:`HostnameEndpoint` reports it only
    when its next attempt would start, 0.3 s later), a name through
    :class:`HostnameEndpoint`.
    """
    if isIPAddress(host):
        return TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
    if isIPv6Address(host):
        return TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
    return HostnameEndpoint(reactor, host, port, timeout=timeout)


@implementer(IStreamClientEndpoint)
class ReportingEndpoint(object):
    """
    An endpoint that tells ``failed(failure)`` of each failed attempt
    (txredisapi's reconnecting service keeps them to itself); ``name`` is
    how the lines Twisted logs about it name it.
    """

    def __init__(self, endpoint, failed, name):
        self.endpoint = endpoint
        self.failed = failed
        self.name = name

    def __repr__(self):
        return "<{}>".format(self.name)

    def connect(self, protocolFactory):
        d = self.endpoint.connect(protocolFactory)

        def failed(failure):
            if not failure.check(CancelledError):    # cancelled: stopped
                self.failed(failure)
            return failure
        return d.addErrback(failed)


_POOL = []


def watched_pool(changed, address, db, size, password, convert_numbers=True):
    """
    A txredisapi connection pool (a ``RedisFactory``: connect it with
    ``startConnecting(endpoint)``) that calls ``changed(size)`` whenever it
    gains or loses a connection.  txredisapi is imported here, on first use
    (only a configuration with Redis needs it).

    :param address: how txredisapi names the server (``"host:port"``).
    :param db: the database number, ``None`` for 0 (no ``SELECT`` to wait for).
    :param convert_numbers: whether replies that look like numbers are
        numbers (txredisapi's ``convertNumbers``).
    """
    if not _POOL:
        import txredisapi

        class WatchedPool(txredisapi.RedisFactory):
            def __init__(self, changed, address, db, size, password, convert):
                txredisapi.RedisFactory.__init__(
                    self, address, db, size, True, txredisapi.ConnectionHandler,
                    "utf-8", password, None, convert)
                self.changed = changed

            def addConnection(self, conn):
                txredisapi.RedisFactory.addConnection(self, conn)
                self.changed(self.size)

            def delConnection(self, conn):
                txredisapi.RedisFactory.delConnection(self, conn)
                self.changed(self.size)

        _POOL.append(WatchedPool)
    return _POOL[0](changed, address, db, size, password, convert_numbers)


# -- the log ---------------------------------------------------------------------------

#: the message txredisapi logs (through ``twisted.python.log``) for each
#: closed connection it finds in its pool's queue
_DISCARDING = ("Discarding dead connection.",)


def is_reconnection_noise(event):
    """
    Whether a log event is one of those a reconnecting Redis pool of tproxy
    writes per attempt or per connection while Redis is away, which the
    owner's own lines (one when Redis goes, one when it answers again)
    replace: ``ClientService``'s info line "Scheduling retry N to connect
    <endpoint> in S seconds." for a :class:`ReportingEndpoint`, and
    txredisapi's "Discarding dead connection.".  Nothing at warning level
    or above is.
    """
    level = event.get("log_level")
    if level is not None and level > LogLevel.info:
        return False
    if isinstance(event.get("endpoint"), ReportingEndpoint):
        return event.get("log_namespace", "").startswith("twisted.application.")
    return event.get("message") == _DISCARDING and not event.get("isError")


def _predicate(event):
    return PredicateResult.no if is_reconnection_noise(event) else PredicateResult.maybe


def quiet(observer):
    """``observer`` without the :func:`is_reconnection_noise` events."""
    return FilteringLogObserver(observer, [_predicate])


def quiet_the_log(beginner=None):
    """
    Keep the :func:`is_reconnection_noise` events out of the log the process
    is about to begin: its observers are wrapped in :func:`quiet`
    (:func:`tproxy.log_levels.wrap_the_log`; the events still reach every
    other observer).  Idempotent.
    """
    wrap_the_log(quiet, beginner)
