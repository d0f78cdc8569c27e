# -*- test-case-name: tests.test_admin,tests.test_registry -*-
"""
The parameters of the ``registry`` plugin's endpoints
(:mod:`tproxy.builtins.registry`), parsed and checked: each ``parse_*``
function takes the text a request gave (``None`` when absent) and returns
the value, or raises :class:`BadParameter` (the ``400`` answer: ``error``,
``field``, ``value``).
"""

import ipaddress
import json
import re

from tproxy.addresses import unicast_problem
from tproxy.config_schema import GROUP_NAME

__all__ = ["BadParameter", "DEFAULT_GROUP", "PARAMETERS", "check_caller", "parse_host",
           "parse_max_conns",
           "parse_port", "parse_prefix", "parse_routable", "parse_weight",
           "request_parameters"]

#: The group of requests that match no other prefix.
DEFAULT_GROUP = "default"

MAX_PREFIX_LENGTH = 200
MAX_HOST_LENGTH = 253
MAX_WEIGHT = 1000

_PORT = re.compile(r"[0-9]{1,5}")
_WEIGHT = re.compile(r"[0-9]{1,4}")
_MAX_CONNS = re.compile(r"[0-9]{1,7}")
# RFC 1123 labels; "_" is also accepted, as the configuration accepts it
# (container service names use it)
_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_NUMBER = re.compile(r"[0-9]+|0[xX][0-9A-Fa-f]*")   # a last label the resolver reads as IPv4
_GROUP_NAME = re.compile(GROUP_NAME)   # the configuration's rule


class BadParameter(ValueError):
    """
    A request parameter is invalid.

    :ivar field: the parameter's name.
    :ivar message: what is wrong, for the user.
    :ivar value: the value received (``None`` when absent).
    """

    #: the answer's status
    status = 400

    def __init__(self, field, message, value=None, status=400):
        ValueError.__init__(self, field, message, value)
        self.field = field
        self.message = message
        self.value = value
        self.status = status

    def as_dict(self):
        """The JSON body of the answer (``400``, or :attr:`status`)."""
        return {"error": self.message, "field": self.field, "value": self.value}


def parse_port(value):
    """
    A port number from its decimal text (``"8080"``): 1 to 65535, digits only.

    :raises BadParameter: if absent, not a number, or out of range.
    """
    if value is None or value == "":
        raise BadParameter("port", "port is required", value)
    if not _PORT.fullmatch(value):
        raise BadParameter("port", "port must be a number from 1 to 65535", value)
    port = int(value)
    if not 1 <= port <= 65535:
        raise BadParameter("port", "port {} is out of range (1-65535)".format(port), value)
    return port


def parse_max_conns(value):
    """
    ``max_conns`` from its decimal text: 0 (no limit) to 1000000; ``None`` if
    absent or empty.

    :raises BadParameter: if not an integer in range.
    """
    if value is None or value == "":
        return None
    if not _MAX_CONNS.fullmatch(value) or int(value) > 1000000:
        raise BadParameter("max_conns", "max_conns must be an integer from 0 (no "
                           "limit) to 1000000", value)
    return int(value)


def parse_weight(value):
    """
    A weight from its decimal text: 1 to 1000; ``None`` if absent or empty.

    :raises BadParameter: if not an integer in range.
    """
    if value is None or value == "":
        return None
    if not _WEIGHT.fullmatch(value) or not 1 <= int(value) <= MAX_WEIGHT:
        raise BadParameter("weight", "weight must be an integer from 1 to {}".format(
            MAX_WEIGHT), value)
    return int(value)


#: hosts already parsed and accepted: a heartbeat names the same few again
#: and again (emptied when full)
_HOSTS = {}
_CALLERS = set()   # callers' addresses found unicast
_HOSTS_MAX = 4096


def parse_host(value, field="host"):
    """
    A host name or IP address, normalised: a host name lower-cased, an IP
    address in its canonical form (IPv6 compressed, brackets removed, an
    IPv4-mapped IPv6 address as IPv4).

    :raises BadParameter: if it is neither.
    """
    host = _HOSTS.get(value)
    if host is None:
        host = _parse_host(value, field)
        if len(_HOSTS) >= _HOSTS_MAX:
            _HOSTS.clear()
        _HOSTS[value] = host
    return host


def _parse_host(value, field):
    bad = BadParameter(field, "host must be a host name or an IP address", value)
    if not value or len(value) > MAX_HOST_LENGTH + 2:
        raise bad
    host = value
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            raise bad
    if ":" in host:
        if "%" in host:  # no zone ids: they name an interface of this machine
            raise bad
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            raise bad
        return _unicast(str(address.ipv4_mapped or address), field, value)
    try:
        return _unicast(str(ipaddress.IPv4Address(host)), field, value)
    except ipaddress.AddressValueError:
        pass
    if len(host) > MAX_HOST_LENGTH:
        raise bad
    labels = host.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels) or \
            _NUMBER.fullmatch(labels[-1]):
        # a last label that is a number (decimal, or hex: "0x7f000001") is
        # an IPv4 address the resolver would read ("10.1", "0x0": 0.0.0.0),
        # malformed in dotted decimal, not a name
        raise bad
    return host.lower()


def check_caller(address):
    """
    Refuse the caller's ``address`` (found from the connection or a trusted
    header) as a registration's host if it names no one server.

    :raises BadParameter: for ``0.0.0.0``, ``::``, broadcast, multicast.
    """
    if address not in _CALLERS:
        _unicast(address, "host", address)
        if len(_CALLERS) >= _HOSTS_MAX:
            _CALLERS.clear()
        _CALLERS.add(address)


def _unicast(address, field, value):
    """``address``, unless it names no one server (``0.0.0.0``, ``::``,
    broadcast, multicast)."""
    problem = unicast_problem(address)
    if problem is not None:
        raise BadParameter(field, "host " + problem, value)
    return address


def parse_routable(value):
    """
    Whether a group may be chosen by path, from ``true``/``false`` (also
    ``1``/``0``, ``yes``/``no``); ``None`` if absent or empty.

    :raises BadParameter: for another value.
    """
    if value is None or value == "":
        return None
    text = value.strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise BadParameter("routable", "routable must be true or false", value)


def parse_prefix(value, field="prefix"):
    """
    A group name: ``/``-separated segments of ``[A-Za-z0-9._~-]``; one leading
    and one trailing ``/`` are ignored; absent or empty is
    :data:`DEFAULT_GROUP`.

    :raises BadParameter: for other characters (``:`` included), empty
        segments, ``.`` or ``..`` segments, or more than 200 characters.
    """
    if value is None:
        return DEFAULT_GROUP
    prefix = value
    if prefix.startswith("/"):
        prefix = prefix[1:]
    if prefix.endswith("/"):
        prefix = prefix[:-1]
    if prefix == "":
        return DEFAULT_GROUP
    if len(prefix) > MAX_PREFIX_LENGTH:
        raise BadParameter(field, "prefix is longer than {} characters".format(
            MAX_PREFIX_LENGTH), value)
    if not _GROUP_NAME.fullmatch(prefix):
        raise BadParameter(
            field, "prefix must be '/'-separated segments of letters, digits "
            "and ._~- (no empty, '.' or '..' segments)", value)
    return prefix


#: the parameters of an add/remove request (remove reads only ``host``,
#: ``port`` and ``prefix``, and takes the others so that one query string
#: serves both)
PARAMETERS = ("host", "max_conns", "port", "prefix", "routable", "weight")


def request_parameters(request):
    """
    The parameters of an add/remove request: its query (and form) arguments,
    and the members of a JSON object body (numbers and booleans as their
    text; ``null`` is absent); one given both in the query and in the body
    is a ``400`` that names it.

    A parameter not in :data:`PARAMETERS` is a ``400`` that names it, as an
    unknown key of the configuration is: a misspelt ``prefx`` would
    otherwise remove the server of the default group.

    A body is read as JSON (``application/json``) or as a form
    (``application/x-www-form-urlencoded``); any other body is a ``415``,
    and a JSON object sent as a form (``curl -d '{...}'``) a ``400``, rather
    than parameters silently missing.

    :raises BadParameter: for a body of another type, a JSON body that is
        not an object, a member that is an object or a list, a parameter
        given twice, or an unknown parameter.
    """
    body = request.json
    if body is None:
        if request.body:
            _check_unread_body(request)
        _check_known(request.args)
        return request.args
    if not isinstance(body, dict):
        raise BadParameter("body", "the JSON body must be an object", None)
    args = dict(request.args)
    for name, value in body.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float)):
            value = str(value)
        elif not isinstance(value, str):
            raise BadParameter(name, "{} must be a string or a number".format(name),
                               None)
        if name in args:
            # which one was meant cannot be told (as twice in the query)
            raise BadParameter(name, "parameter {} given twice (in the query and in "
                               "the JSON body)".format(json.dumps(name)), value)
        args[name] = value
    _check_known(args)
    return args


def _check_known(args):
    """Raise :class:`BadParameter` for the first parameter of ``args`` (in
    sorted order) that is not one of :data:`PARAMETERS`."""
    unknown = sorted(name for name in args if name not in PARAMETERS)
    if unknown:
        raise BadParameter(unknown[0], "unknown parameter {} (known: {})".format(
            repr(unknown[0]), ", ".join(PARAMETERS)), args[unknown[0]])


def _check_unread_body(request):
    """Raise :class:`BadParameter` if ``request`` has a body that was not
    read as JSON nor as a form (see :func:`request_parameters`)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise BadParameter(
            "body", "a body of Content-Type {} is not read: send application/json "
            "or application/x-www-form-urlencoded".format(repr(ctype) if ctype else "(none)"),
            ctype or None, status=415)
    if request.body.lstrip()[:1] == b"{":
        raise BadParameter(
            "body", "the body is a JSON object sent as a form (Content-Type: "
            "application/x-www-form-urlencoded, curl -d's default): send "
            "Content-Type: application/json", None)
