# -*- test-case-name: tests.test_ctl -*-
"""
``tproxyctl``: the admin API from a terminal or a script (standard library
only: no reactor, no third-party client).

::

    tproxyctl status [--prefix G] [--json]
    tproxyctl add --port P [--host H] [--prefix G] [--weight W] [--max-conns N]
                  [--routable | --not-routable]
    tproxyctl remove --port P [--host H] [--prefix G]
    tproxyctl heartbeat --port P [--host H] [--prefix G] [--weight W] [--max-conns N]
                        [--routable | --not-routable]
                        [--every N] [--count N] [--remove-on-exit]
    tproxyctl routes list | get NAME | put NAME [FILE|-] | delete NAME
    tproxyctl routes match --path P [--method M] [--host H] [--header 'K: V'] [--body B]
    tproxyctl check -c FILE
    tproxyctl health

The admin API's address comes from ``--admin`` or ``TPROXY_ADMIN``
(``http://127.0.0.1:9180`` by default; ``host:port`` is enough), its token
from ``--token`` or ``TPROXY_TOKEN``.  Every command takes ``--json`` to
print the API's answer as it is.

Exit status: ``0`` success; ``1`` the API answered an error (its status and
message on standard error), or ``check`` found a problem; ``2`` bad usage;
``3`` the admin API could not be reached.

``heartbeat`` is for a backend's own start script: it registers the server,
then repeats the registration every ``--every`` seconds (by default a third
of the TTL the API reports, so that two heartbeats may be lost), keeps
going while tproxy is unreachable (a restart), and stops cleanly on
``SIGTERM`` or Ctrl-C (removing the registration with
``--remove-on-exit``).
"""

import json
import os
import shlex
import signal
import sys
import threading
from urllib.parse import quote

from tproxy.admin_client import (
    DEFAULT_ADMIN, AdminClient, AdminError, NotAdmin, Unreachable, not_admin_message)
from tproxy.ctl_args import parser
from tproxy.ctl_text import format_match, format_registration, format_routes, format_status

__all__ = ["main", "run"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def _target(args):
    return {"port": str(args.port), "host": args.host, "prefix": args.prefix}


def _expect(client, obj, key, method, path):
    """``obj``, an answer of ``method path``, when it is an object with
    ``key`` (what tproxy's admin API always sends there).

    :raises NotAdmin: otherwise."""
    if not isinstance(obj, dict) or key not in obj:
        raise NotAdmin(not_admin_message(method, path, client.base,
                                         "no {!r} in it".format(key)))
    return obj


def _call(client, key, method, path, query=None):
    """``client.call`` checked by :func:`_expect`."""
    return _expect(client, client.call(method, path, query), key, method, path)


def cmd_status(client, args, out, err):
    obj = _call(client, "groups", "GET", "/upstream/status", {"prefix": args.prefix})
    out.write(_json(obj) if args.json else format_status(obj))
    return EXIT_OK


def _registration(args):
    """The query of ``/upstream/add``: ``--max-conns`` goes as given (the
    admin API checks it and says what is wrong), ``--routable`` /
    ``--not-routable`` as ``true`` / ``false``; left out, neither is sent
    (a heartbeat keeps what the registration has)."""
    return dict(_target(args), weight=None if args.weight is None else str(args.weight),
                max_conns=args.max_conns,
                routable=None if args.routable is None else
                ("true" if args.routable else "false"))


def cmd_add(client, args, out, err):
    query = _registration(args)
    obj = _call(client, "server", "GET", "/upstream/add", query)
    out.write(_json(obj) if args.json else format_registration(obj))
    return EXIT_OK


def _remove(client, args):
    """``/upstream/remove`` of the server of ``args``.  A ``404`` naming the
    prefixes the server is registered under says which ``--prefix`` to pass
    (the admin API's own words say ``prefix=``)."""
    try:
        return _call(client, "removed", "GET", "/upstream/remove", _target(args))
    except AdminError as e:
        obj = e.obj if isinstance(e.obj, dict) else {}
        under = obj.get("registered_under")
        if e.status != 404 or not isinstance(under, list) or not under:
            raise
        raise AdminError(e.status, e.obj, "404 server {} not registered; it is registered "
                         "under {} (pass {})".format(
                             obj.get("server"), ", ".join(repr(p) for p in under),
                             " or ".join("--prefix " + shlex.quote(str(p)) for p in under)))


def cmd_remove(client, args, out, err):
    obj = _remove(client, args)
    out.write(_json(obj) if args.json else "removed {}\n".format(obj.get("removed")))
    return EXIT_OK


class _Stop(object):
    """Set by SIGTERM / SIGINT; ``wait(seconds)`` returns ``True`` once set."""

    def __init__(self):
        self.event = threading.Event()

    def wait(self, seconds):
        return self.event.wait(seconds)

    def set(self, *ignored):
        self.event.set()


def cmd_heartbeat(client, args, out, err, stop=None):
    """
    Register, then heartbeat until stopped (``stop.wait(seconds)`` returning
    true) or ``--count`` registrations were sent.
    """
    if stop is None:
        stop = _Stop()
        _on_signals(stop.set)
    query = _registration(args)
    every = args.every
    sent = 0
    unreachable = False   # the last heartbeat failed (said once, until one passes)
    warned = False
    # the pace: --every, else a third of the TTL the last answer gave (kept
    # through failures: waiting longer could let the registration expire)
    wait = every if every is not None else 10.0
    while True:
        try:
            obj = _call(client, "server", "GET", "/upstream/add", query)
        except Unreachable as e:
            if not unreachable:
                err.write("tproxyctl: {} (retrying every {:g} s)\n".format(e, wait))
                err.flush()
            unreachable = True
        except AdminError as e:
            if 400 <= e.status < 500 and e.status not in (408, 429):
                err.write("tproxyctl: {}\n".format(e))
                return EXIT_ERROR  # the request itself is wrong: retrying will not help
            if not unreachable:   # (a 503: a shared registry away; it passes)
                err.write("tproxyctl: {}\n".format(e))
                err.flush()
            unreachable = True
        else:
            ttl = obj.get("expires_in")
            if every is None:
                wait = max(1.0, ttl / 3.0) if ttl else 10.0
            elif ttl and every >= ttl and not warned:
                warned = True
                err.write("tproxyctl: warning: --every {:g} is not less than the TTL "
                          "({:g} s): the registration expires between heartbeats\n".format(
                              every, ttl))
            if args.json:
                out.write(_json(obj))
            elif obj.get("created") or unreachable or sent == 0:
                out.write(format_registration(obj, None if not unreachable else
                                              "registered again:"))
            out.flush()
            unreachable = False
        sent += 1
        if args.count and sent >= args.count:
            break
        if stop.wait(wait):
            break
    if args.remove_on_exit:
        try:
            obj = _remove(client, args)
            out.write("removed {}\n".format(obj.get("removed")))
        except (AdminError, Unreachable, NotAdmin) as e:
            err.write("tproxyctl: removing on exit failed: {}\n".format(e))
            return EXIT_ERROR
    if not args.json:
        out.write("heartbeat stopped\n")
    return EXIT_OK


def _on_signals(handler):
    """Call ``handler()`` on SIGTERM and SIGINT (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for name in ("SIGTERM", "SIGINT"):
        number = getattr(signal, name, None)
        if number is not None:
            signal.signal(number, lambda *ignored: handler())


def cmd_routes(client, args, out, err):
    action = args.action
    if action == "list":
        obj = _call(client, "routes", "GET", "/routes")
        out.write(_json(obj) if args.json else format_routes(obj))
    elif action == "get":
        obj = _call(client, "group", "GET", "/routes/" + _segment(args.name))
        out.write(_json(obj))
    elif action == "put":
        body = _read_body(args.file)
        status, obj = client.request("PUT", "/routes/" + _segment(args.name), body=body)
        if status >= 400:
            raise AdminError(status, obj)
        _expect(client, obj, "route", "PUT", "/routes/" + _segment(args.name))
        out.write(_json(obj) if args.json else "route {} {}\n".format(
            args.name, "added" if obj.get("created") else "replaced"))
    elif action == "delete":
        obj = _call(client, "deleted", "DELETE", "/routes/" + _segment(args.name))
        out.write(_json(obj) if args.json else "route {} deleted\n".format(obj.get("deleted")))
    elif action == "match":
        query = {"path": args.path, "method": args.method, "host": args.host,
                 "body": args.body}
        for header in args.header or ():
            name, sep, value = header.partition(":")
            if not sep or not name.strip():
                raise _Usage("--header must look like 'Name: value', not {!r}".format(header))
            query["header." + name.strip()] = value.strip()
        obj = _call(client, "decided_by", "GET", "/routes/match", query)
        out.write(_json(obj) if args.json else format_match(obj))
    return EXIT_OK


#: The paths ``health`` asks, in order: the health endpoint, and on a tproxy
#: without it (``404``) the registry's status.
HEALTH_PATHS = ("/healthz", "/upstream/status")


def cmd_health(client, args, out, err):
    """
    Whether the process serves its admin API (for container and service
    probes): the first of :data:`HEALTH_PATHS` that exists must answer 200.
    """
    for path in HEALTH_PATHS:
        status, obj = client.request("GET", path)
        if status != 404:
            break
    if status != 200:
        raise AdminError(status, obj)
    if path == "/healthz" and not (isinstance(obj, dict) and obj.get("status") == "ok"):
        raise NotAdmin(not_admin_message("GET", path, client.base,
                                         'no "status": "ok" in it'))
    _expect(client, obj, "status" if path == "/healthz" else "groups", "GET", path)
    out.write(_json(obj) if args.json else "ok (GET {} {})\n".format(path, status))
    return EXIT_OK


def cmd_check(client, args, out, err):
    """Validate a configuration file with tproxy's own startup checks."""
    from tproxy.config import ConfigError, load_config, uses_tls
    from tproxy.plugin_checks import plugin_warnings
    from tproxy.plugins import build_plugin_manager
    try:
        config = load_config(args.config)
        pm = build_plugin_manager(config, source=args.config)
        if uses_tls(config):
            # the certificates and keys, as twistd tproxy --check loads them
            from tproxy.tls import check_tls
            check_tls(config)
    except ConfigError as e:
        e.source = e.source or args.config
        err.write(str(e) + "\n")
        return EXIT_ERROR
    names = [p["name"] for p in config["plugins"]]
    warnings = plugin_warnings(config, pm)
    if args.json:
        out.write(_json({"ok": True, "file": args.config, "plugins": names,
                         "warnings": [{"path": p, "warning": w} for p, w in warnings]}))
    else:
        for path, warning in warnings:
            err.write("{}: {}: warning: {}\n".format(args.config, path, warning))
        out.write("{}: OK (plugins: {})\n".format(args.config, ", ".join(names) or "none"))
    return EXIT_OK


class _Usage(Exception):
    """A usage error found after parsing."""


def _segment(name):
    return quote(name, safe="")


def _read_body(path):
    if path in (None, "-"):
        if sys.stdin is None or sys.stdin.isatty():
            raise _Usage("give the route's JSON as a FILE argument or on standard input")
        data = sys.stdin.buffer.read()
    else:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise _Usage("cannot read {}: {}".format(path, e.strerror or e))
    return data


def _json(obj):
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def main(argv=None, out=None, err=None, environ=None, stop=None):
    """
    Run ``tproxyctl`` with ``argv``; return the exit status.

    :param out: / :param err: text streams (default ``sys.stdout`` /
        ``sys.stderr``).
    :param environ: the environment (default ``os.environ``).
    :param stop: for ``heartbeat``: an object whose ``wait(seconds)`` returns
        true when it should stop (default: one set by SIGTERM / SIGINT).
    """
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    environ = environ if environ is not None else os.environ
    p = parser()
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    admin = args.admin or environ.get("TPROXY_ADMIN") or DEFAULT_ADMIN
    token = args.token if args.token is not None else environ.get("TPROXY_TOKEN")
    try:
        client = AdminClient(admin, token, args.timeout)
    except ValueError as e:
        err.write("tproxyctl: {}\n".format(e))
        return EXIT_USAGE
    try:
        if args.command == "heartbeat":
            return cmd_heartbeat(client, args, out, err, stop)
        return _COMMANDS[args.command](client, args, out, err)
    except _Usage as e:
        err.write("tproxyctl: {}\n".format(e))
        return EXIT_USAGE
    except Unreachable as e:
        err.write("tproxyctl: {}\n".format(e))
        return EXIT_UNREACHABLE
    except AdminError as e:
        if getattr(args, "json", False) and e.obj is not None:
            out.write(_json(e.obj))
        err.write("tproxyctl: {}\n".format(e))
        return EXIT_ERROR
    except NotAdmin as e:
        err.write("tproxyctl: {}\n".format(e))
        return EXIT_ERROR


#: the function of each command of :func:`tproxy.ctl_args.parser`
_COMMANDS = {"status": cmd_status, "add": cmd_add, "remove": cmd_remove,
             "routes": cmd_routes, "health": cmd_health, "check": cmd_check}


def run():
    """The ``tproxyctl`` console script."""
    sys.exit(main())


if __name__ == "__main__":
    run()
