# -*- test-case-name: tests.test_control -*-
"""
The control channel between the parent of a multi-worker tproxy and each of
its workers (:mod:`tproxy.supervisor`, :mod:`tproxy.worker`): one UNIX
socket pair per worker, handed to the worker as a file descriptor when it
is spawned.

A message is a JSON object in a 32-bit length-prefixed frame
(``Int32StringReceiver``): ``{"op": NAME, ...}``.  A *call* carries an
``"id"``; the receiver answers ``{"op": "reply", "id": ID, "result": ...}``
or ``{"op": "reply", "id": ID, "error": TEXT}``.  A message without an id
is a one-way notice.  The receiving side's ``handler`` has a method
``control_<op>(message)`` for each operation it serves (its return value,
or a Deferred of it, is the reply's ``result``), may have
``control_connected(protocol)`` called when the channel is up, and
``control_lost(reason)`` called once when the channel closes (every call still waiting fails with
:class:`ChannelClosed`).

The operations (parent -> worker unless said otherwise):

``hello`` (worker -> parent, a call)
    the worker's ``pid``; the result is its start-up package: the
    configuration file's text and name, the worker's index, the listening
    file descriptors by listener key, the descriptor of its log events'
    socket (``log``: :mod:`tproxy.worker_logs`), and a snapshot of the
    registry (:func:`tproxy.replica.snapshot`).
``ready`` (worker -> parent, a notice)
    ``init_worker`` ran and the worker accepts connections.
``registry`` (a call)
    registry changes to apply (:meth:`tproxy.replica.ReplicaRegistry.apply`);
    the reply is the acknowledgement the admin API waits for.
``counts`` (a call)
    the result is the worker's in-flight and total requests per peer, its
    view of their health, and with ``health: true`` its health object of
    each peer it holds down (:mod:`tproxy.box_status`).

Messages are JSON, not AMP: a snapshot of 100,000 registrations is
several megabytes, beyond AMP's 64 KiB per value.
"""

import json
import socket

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.error import ConnectionDone
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver

__all__ = ["ChannelClosed", "ControlProtocol", "MAX_MESSAGE", "nonblocking"]

log = Logger()

#: the largest message accepted (bytes); a snapshot of the largest registry
#: the limits allow (``registry.max_servers`` 100,000) is ~15 MB
MAX_MESSAGE = 256 * 1024 * 1024


class ChannelClosed(Exception):
    """The control channel closed before a call was answered."""


class ControlProtocol(Int32StringReceiver):
    """
    One end of a control channel.

    :param handler: the object whose ``control_<op>`` methods serve the
        messages received, and whose ``control_lost(reason)`` (if any) is
        called when the channel closes.
    """

    MAX_LENGTH = MAX_MESSAGE

    def __init__(self, handler):
        self.handler = handler
        self._next_id = 0
        self._waiting = {}
        self.closed = False

    def connectionMade(self):
        connected = getattr(self.handler, "control_connected", None)
        if connected is not None:
            connected(self)

    def call(self, op, **fields):
        """
        Send ``op`` and wait for its reply.

        :return: a Deferred firing with the reply's ``result``, failing with
            :class:`ChannelClosed` if the channel closes first, or with
            ``RuntimeError(error text)`` if the other side failed.
        """
        if self.closed:
            from twisted.internet.defer import fail
            return fail(ChannelClosed(op))
        self._next_id += 1
        d = self._waiting[self._next_id] = Deferred()
        fields["id"] = self._next_id
        self.notify(op, **fields)
        return d

    def call_encoded(self, op, encoded):
        """:meth:`call` with the fields given as the JSON text of an object
        (``'{"peers": [...]}'``): one encoding for many channels."""
        if self.closed:
            from twisted.internet.defer import fail
            return fail(ChannelClosed(op))
        self._next_id += 1
        d = self._waiting[self._next_id] = Deferred()
        rest = encoded.strip()[1:].lstrip()
        head = '{"op":%s,"id":%d' % (json.dumps(op), self._next_id)
        self.sendString((head + ("}" if rest == "}" else "," + rest)).encode("utf-8"))
        return d

    def notify(self, op, **fields):
        """Send ``op`` as a notice (no reply)."""
        if self.closed:
            return
        fields["op"] = op
        self.sendString(json.dumps(fields, separators=(",", ":")).encode("utf-8"))

    def stringReceived(self, data):
        try:
            message = json.loads(data.decode("utf-8"))
            op = message["op"]
        except (ValueError, KeyError, TypeError):
            log.error("control channel: unreadable message dropped ({size} bytes)",
                      size=len(data))
            return
        if op == "reply":
            d = self._waiting.pop(message.get("id"), None)
            if d is None:
                return
            if "error" in message:
                d.errback(RuntimeError(message["error"]))
            else:
                d.callback(message.get("result"))
            return
        method = getattr(self.handler, "control_" + op, None)
        call_id = message.get("id")
        if method is None:
            if call_id is not None:
                self.notify("reply", id=call_id, error="unknown operation {!r}".format(op))
            return
        d = maybeDeferred(method, message)
        if call_id is None:
            d.addErrback(lambda f: log.failure("control operation {op} failed", f, op=op))
            return

        def failed(f):
            log.failure("control operation {op} failed", f, op=op)
            self.notify("reply", id=call_id, error=f.getErrorMessage())
        d.addCallbacks(lambda result: self.notify("reply", id=call_id, result=result),
                       failed)

    def lengthLimitExceeded(self, length):
        log.error("control channel: a message of {length} bytes is too long; closing",
                  length=length)
        self.transport.loseConnection()

    def connectionLost(self, reason=ConnectionDone()):
        self.closed = True
        waiting, self._waiting = self._waiting, {}
        for d in waiting.values():
            d.errback(ChannelClosed(reason.getErrorMessage()))
        lost = getattr(self.handler, "control_lost", None)
        if lost is not None:
            lost(reason)


def nonblocking(adopt, *args):
    """
    ``adopt(*args)`` (``reactor.adoptStreamPort``,
    ``adoptStreamConnection``) with the socket module's default timeout at 0
    meanwhile.  PyPy's ``socket.fromfd`` (which they call) makes the file
    descriptor blocking otherwise -- a flag all its copies share, in every
    process: a listening socket's next ``accept`` would wait for a
    connection, deaf to signals.
    """
    default = socket.getdefaulttimeout()
    socket.setdefaulttimeout(0.0)
    try:
        return adopt(*args)
    finally:
        socket.setdefaulttimeout(default)
