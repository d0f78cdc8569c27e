# -*- test-case-name: tests.test_retry -*-
"""
When a failed attempt of a request goes on to the next peer: nginx's
``proxy_next_upstream``, configured by ``proxy.next_upstream``,
``proxy.tries``, ``proxy.next_upstream_timeout`` and
``proxy.retry_body_buffer``.

Conditions (``proxy.next_upstream``, default ``["error", "timeout"]`` as
nginx):

- ``error``: the connection could not be made, or was lost before a
  response head came;
- ``timeout``: connecting, or waiting for the response head, timed out;
- ``invalid_header``: the peer sent an invalid or unusable response head;
- ``http_500``, ``http_502``, ``http_503``, ``http_504``, ``http_429``: the
  peer answered that status (the response is dropped, unless it is the
  last try: then it goes to the client);
- ``non_idempotent``: also retry ``POST``, ``PATCH`` and ``LOCK`` once the
  request was sent (without it, they are retried only when the connection
  failed, nothing sent);
- ``off``: never retry.

Rules that hold whatever the conditions: a request is never retried after a
byte of the response reached the client; at most ``proxy.tries`` peers are
tried (``0``, the default: each peer of the group once, as nginx's
``proxy_next_upstream_tries 0``); no new try starts after ``proxy.next_upstream_timeout`` seconds
(``0``: no limit) since the first; a request whose body went upstream is
retried only if the whole body sent so far was kept, that is, at most
``proxy.retry_body_buffer`` bytes (beyond, tproxy keeps nothing and the
failure is final).

A request that fails on a *reused* keep-alive connection before any
response byte (the peer closed it while it was idle: the race every pool
has) is sent again once on a fresh connection to the same peer when it is
idempotent (or ``non_idempotent`` is set) and its body was kept; that does
not count as a try, nor as a failure of the peer.
"""

__all__ = ["RetryPolicy", "NON_IDEMPOTENT"]

#: Methods nginx does not retry once sent, unless ``non_idempotent``.
NON_IDEMPOTENT = frozenset(["POST", "PATCH", "LOCK"])

_STATUSES = {"http_500": 500, "http_502": 502, "http_503": 503,
             "http_504": 504, "http_429": 429}


class RetryPolicy(object):
    """
    The retry settings of a proxy listener.

    :param proxy: the ``proxy`` configuration section.
    :ivar conditions: the ``next_upstream`` conditions (a frozenset).
    :ivar statuses: the response statuses that are retried (a frozenset).
    :ivar tries: ``proxy.tries`` (``0``: infinity, each peer of the group is
        tried once at most, since a balancer never returns a peer tried).
    :ivar timeout: ``proxy.next_upstream_timeout`` (``0``: none).
    :ivar body_buffer: ``proxy.retry_body_buffer``.
    """

    def __init__(self, proxy):
        conditions = frozenset(proxy.get("next_upstream", ("error", "timeout")))
        if "off" in conditions:
            conditions = frozenset()
        self.conditions = conditions
        self.statuses = frozenset(s for c, s in _STATUSES.items() if c in conditions)
        self.non_idempotent = "non_idempotent" in conditions
        self.tries = proxy.get("tries", 0) or float("inf")   # 0: no limit
        self.timeout = proxy.get("next_upstream_timeout", 0)
        self.body_buffer = proxy.get("retry_body_buffer", 65536)

    def may_resend(self, method):
        """Whether a request of ``method`` that was sent may be sent again."""
        return self.non_idempotent or method not in NON_IDEMPOTENT
