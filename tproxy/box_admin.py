# -*- test-case-name: tests.processes.test_workers -*-
"""
The admin API of a box of workers (``"workers": N``): the parent's admin
routes, made to answer for the whole box (:meth:`BoxAdmin.instrument`).

- Every handler answers once the workers have acknowledged the registry
  changes it made (:meth:`tproxy.replica.PublishingRegistry.synced`).
- ``/upstream/status`` and the status page's group and peer pages ask the
  workers for their counts when called (:mod:`tproxy.box_status` adds them).
- A ``GET`` route registered with ``gather`` (``/metrics``,
  ``/status/overview``) asks every worker the same request and combines
  the answers.
- A plugin's state-changing route (``PUT /routes/{name}``) is made in the
  parent, then in every worker, and kept in a journal for the workers
  started later.
- The active health checks' results (the ``health_check`` plugin probes in
  the parent only) are relayed to every worker.

The workers answer over their control channels (:mod:`tproxy.control`,
:mod:`tproxy.worker`); the processes themselves are
:mod:`tproxy.supervisor`'s.
"""

import functools
import json
import signal

from twisted.internet.defer import DeferredList, maybeDeferred
from twisted.logger import Logger

from tproxy.admin import AdminResponse, as_response
from tproxy.box_status import STATUS_PAGE, add_counts
from tproxy.replica import SYNC_TIMEOUT

__all__ = ["BoxAdmin", "COUNTS_TIMEOUT"]

log = Logger()

#: seconds ``/upstream/status`` (and a gathered route) waits for a worker's answer
COUNTS_TIMEOUT = 2.0

#: plugins' admin changes kept to replay to workers started later
MAX_JOURNAL = 10000


def _forwarded(admin, key):
    """Whether the admin route ``key`` = ``(method, path)`` changes a
    plugin's state in memory (made in every worker): not a ``GET``, not
    tproxy's own, and not ``shared`` (a change of the registry, or of a
    store every worker reads: see ``AdminRoutes.route``)."""
    method, _ = key
    return (method not in ("GET", "HEAD", "OPTIONS") and admin.owners.get(key) is not None
            and key not in admin.shared)


def _own_first(results, combine):
    """``combine(results)`` once the parent's own answer (the first) is
    known; its failure is the request's (the admin API answers 500)."""
    ok, own = results[0]
    if not ok:
        return own
    return combine(results)


def _worker_answer(answer):
    """A worker's answer to a gathered ``GET`` (``status``, ``headers``,
    ``body``) as the :class:`AdminResponse` its handler made: ``obj`` is
    the decoded body of a JSON answer (one without a ``Content-Type`` of
    its own, as a handler's ``(status, obj)``), else ``None``."""
    body = answer["body"].encode("latin-1")
    obj = None
    if not any(name.lower() == "content-type" for name, _ in answer["headers"]):
        try:
            obj = json.loads(body.decode("utf-8"))
        except ValueError:
            pass   # not JSON after all: the body as it is
    return AdminResponse(answer["status"], obj, answer["headers"], body)


def _checks_state(registry):
    """``[[group, host, port, check_ok, active_down, last_check]]``: the
    active checks' state of the peers that have one, for a new worker."""
    state = []
    for group in registry.groups():
        for peer in group.peers.values():
            h = peer.health
            if h is not None and (h.check_ok or h.active_down):
                state.append([group.name, peer.host, peer.port, h.check_ok, h.active_down,
                              h.last_check])
    return state


class BoxAdmin(object):
    """
    The parent's admin API, answering for the box (see the module docstring).

    :param supervisor: the :class:`tproxy.supervisor.Supervisor` whose live
        workers (``live_workers()``) and current generation (its
        ``journal``) it reads.
    """

    def __init__(self, supervisor):
        self.supervisor = supervisor
        self.reactor = supervisor.reactor
        self.publisher = supervisor.publisher
        self._checks = []   # active check results not yet sent to the workers


    def instrument(self, gateway):
        """
        Make ``gateway``'s admin API answer for the box: every handler
        answers once the workers have acknowledged the registry changes it
        made (:meth:`tproxy.replica.PublishingRegistry.synced`), and
        ``/upstream/status`` shows the workers' counts.
        """
        gateway.on_reopen(self._reopen_workers)
        admin = gateway.admin
        for key, handler in list(admin.routes.items()):
            if key in (("GET", "/upstream/status"), ("GET", "/upstream/servers")):
                handler = self._with_counts(handler)
            elif key in STATUS_PAGE:
                handler = self._with_counts(handler, STATUS_PAGE[key], gateway)
            elif key in admin.gathers:
                handler = self._gathering(handler, admin.gathers[key])
            elif _forwarded(admin, key):
                handler = self._forwarding(handler)
            admin.routes[key] = self._synced(handler)
        for key, (segments, handler) in list(admin.patterns.items()):
            if _forwarded(admin, key):
                handler = self._forwarding(handler)
            admin.patterns[key] = (segments, self._synced(handler))

    def _forwarding(self, handler):
        """
        ``handler`` of a plugin's state-changing admin route (``PUT
        /routes/{name}``, the cache's ``DELETE``): the parent's plugin
        instance answers, and a request it accepted (2xx) is then made in
        every worker, and recorded for the workers started later, before
        the answer goes out.
        """
        def forward(request):
            d = maybeDeferred(handler, request)

            def answered(result):
                status = getattr(result, "status", None)
                if status is None:
                    status = result[0]
                if not 200 <= int(status) < 300:
                    return result
                entry = {"method": request.method, "path": request.path,
                         "args": request.args, "body": request.body.decode("latin-1"),
                         "content_type": request.headers.get("content-type", "")}
                self._journal(entry)
                ds = []
                for h in self.supervisor.live_workers():
                    if h.channel is not None and not h.channel.closed:
                        call = h.channel.call("admin", request=entry)
                        call.addTimeout(SYNC_TIMEOUT, self.reactor)
                        call.addCallback(self._forwarded, h, entry)
                        call.addErrback(self._not_forwarded, h, entry)
                        ds.append(call)
                return DeferredList(ds).addCallback(lambda _: result)
            return d.addCallback(answered)
        return forward

    def _gathering(self, handler, gather):
        """
        ``handler`` of a ``GET`` route registered with ``gather``
        (``prometheus``'s ``/metrics``): the parent answers, every live
        worker answers the same request (those silent for
        ``COUNTS_TIMEOUT`` are left out), and ``gather`` combines them.
        """
        def gathering(request):
            entry = {"method": "GET", "path": request.path, "args": request.args}
            handles = [h for h in self.supervisor.live_workers()
                       if h.channel is not None and not h.channel.closed]
            asks = []
            for h in handles:
                d = h.channel.call("ask", request=entry)
                d.addTimeout(COUNTS_TIMEOUT, self.reactor)
                asks.append(d)
            own = maybeDeferred(handler, request).addCallback(as_response)

            def combine(results):
                (_, answer), answers = results[0], results[1:]
                workers = [(h.index, _worker_answer(a))
                           for h, (ok, a) in zip(handles, answers) if ok]
                return gather(request, answer, workers)
            return DeferredList([own] + asks, consumeErrors=True,
                                fireOnOneErrback=False).addCallback(_own_first, combine)
        return gathering

    def _journal(self, entry):
        """Keep ``entry`` for the workers started later (the last
        ``PUT``/``DELETE`` of a path replaces the earlier ones)."""
        journal = self.supervisor.generation.journal
        if entry["method"] in ("PUT", "DELETE"):
            journal[:] = [e for e in journal if not (
                e["path"] == entry["path"] and e["method"] in ("PUT", "DELETE"))]
        journal.append(entry)
        if len(journal) > MAX_JOURNAL:
            del journal[0]
            log.warn("more than {n} admin changes to replay to new workers: the oldest "
                     "is dropped (put lasting routes in the configuration file)",
                     n=MAX_JOURNAL)

    def _forwarded(self, status, handle, entry):
        if not 200 <= status < 300:
            log.warn("worker {index} answered {status} to {method} {path} (the parent "
                     "accepted it)", index=handle.index, status=status,
                     method=entry["method"], path=entry["path"])

    def _not_forwarded(self, f, handle, entry):
        log.warn("worker {index} did not apply {method} {path}: {error}",
                 index=handle.index, method=entry["method"], path=entry["path"],
                 error=f.getErrorMessage())

    def _reopen_workers(self):
        """``SIGUSR1`` to the parent: every worker reopens its access log."""
        for h in self.supervisor.live_workers():
            h.signal(signal.SIGUSR1)

    def _synced(self, handler):
        publisher = self.publisher
        reactor = self.reactor

        def synced(request):
            d = maybeDeferred(handler, request)

            def wait(result):
                s = publisher.synced()
                if s.called:
                    return result
                s.addTimeout(SYNC_TIMEOUT, reactor)

                def late(f):
                    log.warn("a worker did not acknowledge a registry change within "
                             "{timeout} s", timeout=SYNC_TIMEOUT)
                s.addErrback(late)
                return s.addCallback(lambda _: result)
            return d.addCallback(wait)
        return synced

    def counts(self):
        """
        Ask every live worker for its counts.

        :return: a Deferred firing ``(workers, {(group, host, port): {handle:
            (active, total, healthy, health)}})``, ``workers`` being the
            handles that answered, ``health`` the worker's health object of a
            peer it holds down (``None`` otherwise, or from a worker of
            before).
        """
        handles = [h for h in self.supervisor.live_workers() if h.channel is not None and not h.channel.closed]
        ds = []
        for h in handles:
            d = h.channel.call("counts", health=True)
            d.addTimeout(COUNTS_TIMEOUT, self.reactor)
            ds.append(d)

        def gathered(results):
            per = {}
            answered = []
            for h, (ok, rows) in zip(handles, results):
                if not ok:
                    continue
                answered.append(h)
                for row in rows:
                    group, host, port, active, total, healthy = row[:6]
                    health = row[6] if len(row) > 6 else None
                    per.setdefault((group, host, port), {})[h] = (active, total, healthy,
                                                                  health)
            return answered, per
        return DeferredList(ds, consumeErrors=True).addCallback(gathered)

    def _with_counts(self, handler, add=None, gateway=None):
        if add is None:
            add = add_counts
        else:   # a status page's: it reads the gateway's registry
            add = functools.partial(add, gateway=gateway)

        def status(request):
            d = self.counts()

            def answer(gathered):
                workers, per = gathered
                d2 = maybeDeferred(handler, request)
                return d2.addCallback(add, workers, per)
            return d.addCallback(answer)
        return status

    # -- active health checks -------------------------------------------------------

    def relay_check(self, peer, ok, detail, rise, fall):
        """An active check's result (the ``health_check`` plugin probes in
        the parent only): sent to every worker at the end of the reactor
        turn, with the others of that turn."""
        if not self._checks:
            self.reactor.callLater(0, self._send_checks)
        self._checks.append([peer.group.name, peer.host, peer.port, ok, detail, rise, fall])

    def _send_checks(self):
        checks, self._checks = self._checks, []
        for h in self.supervisor.live_workers():
            if h.channel is not None:
                h.channel.notify("health", checks=checks)
