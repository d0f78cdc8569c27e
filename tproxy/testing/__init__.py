# -*- test-case-name: tests.test_testing,tests.test_builtins_harness -*-
"""
Test plugins without sockets: a real gateway, its real HTTP server and
upstream pool, and stub upstream servers, all wired in memory on a fake clock
(:class:`twisted.internet.testing.MemoryReactorClock` and the pumps of
:mod:`twisted.test.iosim`), in the spirit of :mod:`treq.testing`.

Every call of a :class:`Harness` moves bytes until nothing more happens and
returns; nothing waits for real time, so a test stays synchronous::

    from twisted.trial.unittest import SynchronousTestCase

    from tproxy import hookimpl
    from tproxy.testing import Harness, echo


    class Greeting(object):
        @hookimpl
        def header_filter(self, response):
            response.headers.set("X-Greeting", "hello")


    class GreetingTests(SynchronousTestCase):

        def test_header(self):
            h = Harness(
                config={"upstreams": {"default": {"peers": ["127.0.0.1:9001"]}}},
                plugins=["router", "least_conn", Greeting()],
                servers={"127.0.0.1:9001": echo},
            )
            response = h.request("GET", "/hello")
            self.assertEqual(response.status, 200)
            self.assertEqual(response.headers.get("x-greeting"), "hello")
            self.assertEqual(h.upstream_requests[0].uri, "/hello")
            self.assertEqual(h.contexts[0].peer.address, "127.0.0.1:9001")

What a test can look at:

- the client's view: the :class:`StubResponse` of :meth:`Harness.request`;
- the upstreams' view: :attr:`Harness.upstream_requests`, one
  :class:`UpstreamRequest` per request a stub server received;
- the phases' view: :attr:`Harness.contexts`, the
  :class:`~tproxy.context.RequestContext` of every finished request as the
  ``log`` phase saw it (``status``, ``route``, ``peer``, ``tried``,
  ``error``, ``vars``);
- what was logged: :attr:`Harness.events`, the :mod:`twisted.logger` events
  emitted while the harness worked (the ``access_log`` lines among them: in a
  harness its default target is ``"logger"``, not the standard output; and
  the admin API's audit events, namespace ``tproxy.audit``);
- the admin listener: :meth:`Harness.admin` sends a request to it over
  in-memory HTTP (every check included) and returns a
  :class:`tproxy.admin.AdminResponse`; :meth:`Harness.admin_raw` sends bytes
  as they are.

Time moves only with :meth:`Harness.advance`, which fires the timers that
fall due on the way (``LoopingCall`` s, timeouts, TTLs) in order, moving bytes
between each.

Stub servers (the values of ``servers``):

- a function ``handler(request) -> (status, headers, body)``, where
  ``request`` is an :class:`UpstreamRequest`; it may return a Deferred or be
  ``async def`` (a Deferred that never fires is an upstream that never
  answers);
- a :class:`twisted.web.resource.IResource`, served by a real
  :class:`twisted.web.server.Site`;
- any other :class:`twisted.internet.interfaces.IProtocolFactory` (to send
  bytes that are not HTTP, say);
- :data:`UNREACHABLE`: connection attempts hang until the connect timeout.

An address with no stub refuses connections.  An upstream with ``tls`` is
connected to its stub in the clear (the handshake is not simulated; its
connections are pooled apart, as with TLS).  :meth:`Harness.set_server`
puts a stub at an address, or takes it away (``None``), while the harness
runs: a backend that dies and comes back.

Stream listeners (``streams``, :mod:`tproxy.stream`) have their own harness,
:class:`StreamHarness`, on the same clock and pumps: :meth:`StreamHarness.connect`
opens a client connection (a :class:`StreamConnection`: ``send``,
``half_close``, ``close``, ``abort``, ``received``, ``eof``, ``closed``,
``reset``), the stubs are :class:`StreamServer` s (recording, echoing), FINs
and resets travel as on a TCP socket, and :attr:`StreamHarness.logged` holds
the :class:`~tproxy.stream.StreamContext` of every connection ``stream_log``
saw.

A client connection that stays open (:meth:`Harness.connect`, a
:class:`ClientConnection`) sends several requests (keep-alive), pipelines
them (:meth:`ClientConnection.send_request`), sends raw bytes
(:meth:`ClientConnection.send`) or stops reading its responses for a while
(:meth:`ClientConnection.stop_reading`, :meth:`ClientConnection.read_again`).  :meth:`Harness.plugin` is the plugin
object tproxy made for an entry of ``plugins`` (from a name, a module or a
class), :meth:`Harness.names` the plugins of a phase in execution order, and
:func:`check_settings` checks a plugin's settings as tproxy does at start.

Stability: :class:`Harness`, :class:`ClientConnection` (also
:class:`RawConnection`), :class:`StubResponse`,
:class:`UpstreamRequest`, :class:`PendingRequest`, :class:`RequestPending`,
:class:`ResponseIncomplete`, :func:`echo`, :func:`check_settings`,
:data:`UNREACHABLE`, :class:`StreamHarness`, :class:`StreamConnection` and
:class:`StreamServer` are public API; everything whose name starts with
``_`` is not.
"""

from tproxy.testing._network import UNREACHABLE, RequestPending
from tproxy.testing._settings import check_settings
from tproxy.testing.client import (ClientConnection, PendingRequest, RawConnection,
                                   ResponseIncomplete)
from tproxy.testing.http import Harness
from tproxy.testing.upstreams import StubResponse, UpstreamRequest, echo
from tproxy.testing.stream import StreamConnection, StreamHarness, StreamServer

__all__ = ["ClientConnection", "Harness", "PendingRequest", "RawConnection", "RequestPending",
           "ResponseIncomplete", "StreamConnection", "StreamHarness", "StreamServer",
           "StubResponse", "UNREACHABLE", "UpstreamRequest", "check_settings", "echo"]
