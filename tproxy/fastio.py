# -*- test-case-name: tests.test_fastio -*-
"""
Shortcuts through Twisted's private parts, kept in one place.

1. :func:`install_fast_write`: Twisted buffers every ``transport.write`` until
   the next reactor turn (Twisted issue #5303), which costs an
   ``epoll_ctl`` to start writing, a turn, the write, and another
   ``epoll_ctl`` to stop.  When nothing is buffered, sending at once is what the
   buffer would do anyway, one turn later: order is kept, and anything the
   socket does not take goes to the ordinary buffer (so backpressure and
   producers work as before).
2. The same, with ``close=True``, for ``transport.loseConnection``: with
   nothing buffered, Twisted still waits for the socket to be writable
   before it closes (an ``epoll_ctl`` to stop reading, one to start
   writing, a turn, an empty ``send`` and an ``epoll_ctl`` to stop).  The
   connection is closed at once instead (the kernel sends what it still
   holds, then its FIN), as nginx closes.
3. :func:`tproxy.fastio_accept.fast_listener`: the HTTP listener's
   connections are :class:`FastServer` transports, which have both as
   methods (and are made and closed without what Twisted does for every
   connection and nobody reads), accepted by a loop of tproxy's own
   (:mod:`tproxy.fastio_accept`, this module's other half);
   ``TCP_NODELAY`` is set once, on the listening socket.  The plain TCP
   upstream connections (:func:`connect_tcp`) are :class:`FastClient`
   transports, with the fast write as methods.
4. :class:`~tproxy.reactor.FastEPollReactor` (``twistd -r tproxy``, the
   default of ``twistd tproxy``): the epoll reactor without the
   ``log.callWithLogger`` wrapper around every event (Twisted issues #6789,
   #2534), which only sets up a legacy logging context.

They reach into Twisted internals, so they are enabled only on the Twisted
versions they were tested with (:data:`TESTED_TWISTED`), where what they read
is there (:data:`ENABLED`, ``fastio_accept._ACCEPT``), and only for plain TCP
transports; anywhere else tproxy runs on stock behaviour.  Set
``TPROXY_FAST_WRITE=0`` to turn 1-3 off.
"""

import os
import socket
from types import MethodType

import twisted
from twisted.internet import address, main, posixbase, tcp
from twisted.python.failure import Failure

#: Twisted releases whose internals these shortcuts were checked against
#: (26.10 on CPython 3.11; 26.4 is the newest for PyPy's Python 3.9, and 25.5
#: what pip installs there beside ``twisted[tls]``: a newer one needs a
#: pyOpenSSL that needs cryptography >= 45, which has no PyPy 3.9 wheel).
TESTED_TWISTED = ("26.10.0", "26.4.0", "25.5.0")

TWISTED_VERSION = twisted.__version__

ENABLED = (TWISTED_VERSION in TESTED_TWISTED
           and os.environ.get("TPROXY_FAST_WRITE", "1") != "0"
           and hasattr(tcp.Connection, "dataBuffer")
           # one stock write and close for both ends, which the fast ones fall back to
           and tcp.Server.write is tcp.Client.write is tcp.Connection.write
           and tcp.Server.writeSequence is tcp.Client.writeSequence is tcp.Connection.writeSequence
           and tcp.Server.loseConnection is tcp.Connection.loseConnection
           and getattr(tcp.Port, "transport", None) is tcp.Server)


#: the reason of a connection closed at once by a fast ``loseConnection``
_CLOSED = Failure(main.CONNECTION_DONE)


def install_fast_write(transport, close=False):
    """
    Make ``transport.write`` / ``writeSequence`` send at once when nothing is
    buffered, and with ``close``, ``transport.loseConnection`` close at once
    when nothing is buffered (its protocol's ``connectionLost`` then runs
    before it returns).  Does nothing (and returns ``False``) for other
    transports, TLS, or untested Twisted versions.  A :class:`FastServer`
    has them already (and is not changed: ``True``), a :class:`FastClient`
    its write (``close`` is then ignored: ``True``).
    """
    if isinstance(transport, (FastServer, FastClient)):
        return True
    if (not ENABLED or not isinstance(transport, tcp.Connection) or transport.TLS
            or type(transport).write is not _STOCK_WRITE):
        return False
    if isinstance(transport.socket, socket.socket):   # (not tproxy.testing's in-memory one)
        _inline(transport)
        if close:
            transport.loseConnection = MethodType(_lose_connection, transport)
    # (bound to the transport in its own dict: a reference cycle, which the
    # collector breaks; a FastServer or FastClient has none)
    transport.write = MethodType(_write, transport)
    transport.writeSequence = MethodType(_write_sequence, transport)
    return True


def _inline(transport):
    # Read by every write below (and by the upstream pool), and bufferSize by
    # every read (tproxy.reactor): made instance attributes, with the class
    # defaults' values (Twisted sets them on the instance when they change).
    # CPython 3.11 reads a class attribute through an instance by the
    # generic lookup (~250 instructions each, three per write); stored at
    # once, they are among the first names of the transport's class, which
    # it keeps inline.
    transport.dataBuffer = transport.dataBuffer
    transport.disconnecting = transport.disconnecting
    transport.TLS = transport.TLS
    transport.bufferSize = transport.bufferSize


#: Twisted's own methods, which the fast ones fall back to (the same for
#: ``tcp.Server`` and ``tcp.Client``: see :data:`ENABLED`)
_STOCK_WRITE = tcp.Connection.write
_STOCK_WRITE_SEQUENCE = tcp.Connection.writeSequence
_STOCK_LOSE = tcp.Connection.loseConnection


# The fast write and close look at ``_tempDataLen``, not the list
# ``_tempDataBuffer`` (non-empty whenever the count is not 0, Twisted keeps
# both; empty pieces alone are nothing to keep in order): a small int, one
# object fewer read per write on a connection not in cache.

def _write(self, data):
    if (self.dataBuffer or self._tempDataLen or self.TLS
            or not self.connected or self.disconnecting):
        return _STOCK_WRITE(self, data)
    try:
        sent = self.socket.send(data)
    except OSError:
        # would block, or a broken connection: the buffer and the
        # reactor's next write deal with it as they always do
        return _STOCK_WRITE(self, data)
    if sent < len(data):
        _STOCK_WRITE(self, memoryview(data)[sent:].tobytes())


def _write_sequence(self, seq):
    if (self.dataBuffer or self._tempDataLen or self.TLS
            or not self.connected or self.disconnecting):
        return _STOCK_WRITE_SEQUENCE(self, seq)
    if sum(map(len, seq)) < 65536:
        # small pieces: one joined send() is cheaper than sendmsg()
        return _write(self, b"".join(seq))
    try:
        # gather-write: no copy of large pieces (a chunk header, a body
        # piece and its CRLF) into one new string
        sent = self.socket.sendmsg(seq)
    except OSError:
        return _STOCK_WRITE_SEQUENCE(self, seq)
    for i, piece in enumerate(seq):
        if sent < len(piece):
            rest = [memoryview(piece)[sent:].tobytes()] if sent else [piece]
            return _STOCK_WRITE_SEQUENCE(self, rest + list(seq[i + 1:]))
        sent -= len(piece)


def _closes_now(t):
    """Whether ``t.loseConnection()`` may close at once: nothing to send, no
    producer, plain TCP, open."""
    return not (t.dataBuffer or t._tempDataLen or not t.connected or t.disconnecting
                or t.producer is not None or t.TLS)


def _lose_connection(self):
    if not _closes_now(self):
        return _STOCK_LOSE(self)
    self.stopReading()
    self.stopWriting()
    self.connectionLost(_CLOSED)   # (close the socket)


class _Lazy(object):
    """A ``tcp.Server`` attribute made when first read (then an ordinary
    instance attribute): ``logstr`` and ``repstr``, read only by logging and
    ``repr``, which Twisted formats for every connection."""

    def __init__(self, make):
        self.make = make

    def __get__(self, instance, owner):
        if instance is None:
            return self
        value = instance.__dict__[self.make.__name__] = self.make(instance)
        return value


class FastServer(tcp.Server):
    """
    The transport of a client connection of the HTTP listener (see
    :func:`tproxy.fastio_accept.fast_listener`): a ``tcp.Server`` whose ``write``,
    ``writeSequence`` and ``loseConnection`` are the fast ones of
    :func:`install_fast_write` (``close=True``), as methods: no per-connection
    functions, and no reference cycle once the connection is gone (functions
    bound in the transport's dict make one per connection, freed only by the
    collector, whose full collections hold every request in flight).

    What Twisted does for every connection and nobody reads is left out:
    ``__init__`` sets what ``tcp.Server.__init__`` sets, but the log prefix
    and ``repr`` string are made when first read (:class:`_Lazy`).  A fast
    close takes the socket out of the reactor without an ``epoll_ctl``
    (:meth:`tproxy.reactor.FastEPollReactor.forget`), and does not
    ``shutdown`` it before ``close`` (Twisted's own comment: not needed, the
    descriptor is close-on-exec and this process's only).  ``TCP_NODELAY``
    is set on the listening socket, which Linux passes on to the connections
    it accepts: ``setTcpNoDelay(True)`` makes no system call once the first
    connection showed it had it (:attr:`nodelay_inherited`).
    """

    write = _write
    writeSequence = _write_sequence
    _shouldShutdown = False

    #: whether accepted sockets come with TCP_NODELAY set (``None``: not
    #: known yet; the first connection's ``setTcpNoDelay(True)`` looks)
    nodelay_inherited = None

    def __init__(self, sock, protocol, client, server, sessionno, reactor):
        # tcp.Server.__init__ (checked by tests/test_fastio.py against it)
        self.reactor = reactor
        self._tempDataBuffer = []
        self._tempDataLen = 0
        self.socket = sock
        sock.setblocking(False)
        self.fileno = sock.fileno
        self.protocol = protocol
        if len(client) != 2:
            self._addressType = address.IPv6Address
        self.server = server
        self.client = client
        self.sessionno = sessionno
        self.hostname = client[0]
        _inline(self)
        self.startReading()
        self.connected = 1

    def loseConnection(self):
        if not _closes_now(self):
            return _STOCK_LOSE(self)
        # tcp.Connection.connectionLost, without what does nothing here
        # (no producer; not an abort; not watched for writing, nothing being
        # buffered)
        forget = getattr(self.reactor, "forget", None)
        if forget is None:
            self.stopReading()
            self.stopWriting()
        else:
            forget(self)   # (no epoll_ctl: the close does it)
        self.disconnected = 1
        self.connected = 0
        sock, protocol = self.socket, self.protocol
        del self.protocol, self.socket, self.fileno
        try:
            sock.close()
        except OSError:
            pass
        protocol.connectionLost(_CLOSED)

    @_Lazy
    def logstr(self):
        return "%s,%s,%s" % (self._getLogPrefix(self.protocol), self.sessionno, self.hostname)

    @_Lazy
    def repstr(self):
        return "<%s #%s on %s>" % (self.protocol.__class__.__name__, self.sessionno,
                                   self.server._realPortNumber)

    def setTcpNoDelay(self, enabled):
        inherited = FastServer.nodelay_inherited
        if enabled and inherited:
            return
        if enabled and inherited is None:
            try:
                inherited = bool(self.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            except OSError:
                inherited = False
            FastServer.nodelay_inherited = inherited
            if inherited:
                return
        tcp.Server.setTcpNoDelay(self, enabled)


class FastClient(tcp.Client):
    """
    The transport of a plain TCP upstream connection (:func:`connect_tcp`):
    a ``tcp.Client`` whose ``write`` and ``writeSequence`` are the fast ones
    of :func:`install_fast_write`, as methods: no per-connection functions
    in its dict, which made a reference cycle per connection (freed only by
    the collector) and two more objects each request touches.  The names
    every write reads are stored at once (:func:`_inline`), and every name
    one sets is among its class's instance keys before the first is made
    (:data:`CLIENT_NAMES`).
    """

    write = _write
    writeSequence = _write_sequence

    def __init__(self, host, port, bindAddress, connector, reactor=None):
        tcp.Client.__init__(self, host, port, bindAddress, connector, reactor)
        _inline(self)


#: Every name a :class:`FastClient` sets (those each request reads first),
#: put in its class's keys at import (:func:`_add_names`): CPython 3.11 keeps
#: values inline only for names added while its class's keys had room, which
#: each instance made takes from (``tests/test_inline_values.py``); the pool
#: opens connections several at a time, and the names Twisted sets once one
#: is made (``connected``, ``producer``...) gave every one a dictionary.
CLIENT_NAMES = (
    "socket", "bufferSize", "dataBuffer", "_tempDataLen", "TLS", "connected",
    "disconnecting", "protocol", "_tempDataBuffer", "producer", "streamingProducer",
    "producerPaused", "fileno", "reactor", "connector", "addr", "realAddress",
    "_requiresResolution", "logstr", "offset", "disconnected", "_writeDisconnected",
    "_writeDisconnecting", "_aborting", "doRead", "doWrite")


def _add_names(cls, names):
    """Put ``names`` among ``cls``'s shared instance keys, in this order,
    through an instance made for it and dropped (CPython; elsewhere it does
    nothing that lasts).  Call it before ``cls`` has instances."""
    probe = cls.__new__(cls)
    for name in names:
        object.__setattr__(probe, name, None)


_add_names(FastClient, CLIENT_NAMES)


class _FastConnector(tcp.Connector):
    """A ``tcp.Connector`` making a :class:`FastClient`, which it lets go
    of once the connection is lost (Twisted's keeps its transport, which
    keeps it: a reference cycle per connection)."""

    def _makeTransport(self):
        return FastClient(self.host, self.port, self.bindAddress, self, self.reactor)

    def connectionLost(self, reason):
        tcp.Connector.connectionLost(self, reason)
        if self.state == "disconnected":   # (the factory did not connect again)
            self.transport = None


#: what :func:`connect_tcp` replaces: the stock reactors' ``connectTCP``
_STOCK_CONNECT_TCP = posixbase.PosixReactorBase.connectTCP


def connect_tcp(reactor, host, port, factory, timeout):
    """
    ``reactor.connectTCP(host, port, factory, timeout=timeout)``, whose
    connection is a :class:`FastClient` if the fast paths are on and
    ``reactor`` connects as Twisted's own reactors do (not a test double).

    :return: the connector.
    """
    if ENABLED and getattr(type(reactor), "connectTCP", None) is _STOCK_CONNECT_TCP:
        connector = _FastConnector(host, port, factory, timeout, None, reactor)
        connector.connect()
        return connector
    return reactor.connectTCP(host, port, factory, timeout=timeout)
