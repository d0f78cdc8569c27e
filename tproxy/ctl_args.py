# -*- test-case-name: tests.test_ctl -*-
"""
The command line of ``tproxyctl`` (:func:`parser`): its commands, options
and the checks of their values; :mod:`tproxy.ctl` runs the command named
(``args.command``).
"""

import argparse
import math

from tproxy import __version__
from tproxy.admin_client import DEFAULT_ADMIN

__all__ = ["parser"]


def parser():
    """The ``argparse`` parser of ``tproxyctl``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true",
                        help="print the admin API's JSON answer as it is")
    # the connection's options are taken after the command too
    # (``tproxyctl status --admin URL``, as kubectl takes its flags): SUPPRESS
    # leaves the value given before the command when they are not repeated
    _connection(common, argparse.SUPPRESS)
    p = argparse.ArgumentParser(
        prog="tproxyctl", description="Control a running tproxy through its admin API.",
        epilog="Exit status: 0 ok, 1 an error answer or a bad configuration, "
               "2 bad usage, 3 the admin API unreachable.")
    _connection(p, None)
    p.add_argument("--version", action="version",
                   version="tproxyctl {} (distribution tproxy-gateway)".format(__version__))
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("status", parents=[common], help="the registered servers, as a table")
    s.add_argument("--prefix", help="only this group")

    def target(s, weight=True):
        s.add_argument("--port", type=_port, required=True)
        s.add_argument("--host", help="default: the address tproxy sees this call from")
        s.add_argument("--prefix", help="the group [default]")
        if weight:
            s.add_argument("--weight", type=_weight, help="1-1000")
            s.add_argument("--max-conns", metavar="N", type=_given,
                           help="requests in flight at most, 0 (no limit) to 1000000 "
                                "[kept by later heartbeats that leave it out]")
            routable = s.add_mutually_exclusive_group()
            routable.add_argument("--routable", dest="routable", action="store_true",
                                  default=None,
                                  help="a request's path may choose the group [the default]")
            routable.add_argument("--not-routable", dest="routable", action="store_false",
                                  help="only a plugin or a route naming the group "
                                       "chooses it (a canary, a shadow pool)")

    s = sub.add_parser("add", parents=[common], help="register (or heartbeat) a server")
    target(s)
    s = sub.add_parser("remove", parents=[common], help="remove a registration")
    target(s, weight=False)
    s = sub.add_parser("heartbeat", parents=[common],
                       help="register, then heartbeat until SIGTERM / Ctrl-C")
    target(s)
    s.add_argument("--every", type=_positive, metavar="SECONDS",
                   help="seconds between heartbeats [a third of the TTL]")
    s.add_argument("--count", type=int, default=0, help="stop after N registrations")
    s.add_argument("--remove-on-exit", action="store_true",
                   help="remove the registration when stopped")

    s = sub.add_parser("routes", help="the routes plugin's rules")
    actions = s.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    a = actions.add_parser("list", parents=[common], help="every route")
    a = actions.add_parser("get", parents=[common], help="one route as JSON")
    a.add_argument("name")
    a = actions.add_parser("put", parents=[common], help="add or replace a route (JSON)")
    a.add_argument("name")
    a.add_argument("file", nargs="?", default="-", help="the route's JSON [stdin]")
    a = actions.add_parser("delete", parents=[common], help="remove a route")
    a.add_argument("name")
    a = actions.add_parser("match", parents=[common],
                           help="which route a request would take, and why")
    a.add_argument("--path", required=True)
    a.add_argument("--method")
    a.add_argument("--host")
    a.add_argument("--header", action="append", metavar="'NAME: VALUE'")
    a.add_argument("--body")

    s = sub.add_parser("health", parents=[common],
                       help="exit 0 if the admin API answers its health check")

    s = sub.add_parser("check", parents=[common],
                       help="validate a configuration file (as tproxy does at start)")
    s.add_argument("-c", "--config", required=True, metavar="FILE")
    return p


def _connection(p, default):
    """Add ``--admin``, ``--token`` and ``--timeout`` to ``p``, with
    ``default`` for the first two (``argparse.SUPPRESS`` on a command's
    parser: not given there, the global value stays)."""
    p.add_argument("--admin", metavar="URL", default=default,
                   help="the admin API [env TPROXY_ADMIN, default {}]".format(DEFAULT_ADMIN))
    p.add_argument("--token", default=default,
                   help="the admin bearer token [env TPROXY_TOKEN]")
    p.add_argument("--timeout", type=_positive, metavar="SECONDS",
                   default=10.0 if default is None else default,
                   help="seconds to wait for the admin API [10]")


def _port(text):
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError("a port is a number from 1 to 65535")
    return int(text)


def _weight(text):
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError("a weight is a number from 1 to 1000")
    return int(text)


def _given(text):
    """Any text but an empty one (which the admin API would take for no
    value): the API checks the rest."""
    if not text.strip():
        raise argparse.ArgumentTypeError("a value is required")
    return text


def _positive(text):
    try:
        value = float(text)
    except ValueError:
        value = 0
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError("a number of seconds greater than 0")
    return value
