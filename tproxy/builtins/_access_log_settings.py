# -*- test-case-name: tests.test_access_log -*-
"""
The ``access_log`` plugin's settings, read once when the plugin is made: their
schema (:data:`SETTINGS_SCHEMA`), the fields of a record (:data:`FIELDS`),
the header fields redacted by default (:data:`REDACT`), the target and its
path (:func:`target_of`), and what a line is made from: the header names
(:func:`header_names`), the ``%`` template of a line (:func:`template`) and
the choice of the fields (:func:`picker`).  The lines are made and written by
:mod:`tproxy.builtins.access_log`.
"""

import os

from tproxy.config import ConfigError

#: The fields of a request's record, in their default order.
FIELDS = ("time", "request_id", "client", "method", "uri", "status",
          "bytes_sent", "request_time", "upstream_addr", "upstream_time",
          "route", "error")

#: The header fields whose values are not written, by default.
REDACT = ("authorization", "proxy-authorization", "cookie", "set-cookie")

#: The ``%`` conversion of each field's value in a line (the others are
#: JSON text already).
_FORMATS = {"status": "%d", "bytes_sent": "%d", "request_time": "%.6f"}


def _headers_schema(what):
    return {
        "type": "array", "default": [], "uniqueItems": True,
        "items": {"type": "string", "pattern": "^([!#$%&'*+.^_`|~0-9A-Za-z-]+|[*])$"},
        "description": "{} header fields added to each record (\"*\": every "
                       "one)".format(what),
    }


#: The plugin's settings (``Plugin.settings_schema``).
SETTINGS_SCHEMA = {
    "type": "object",
    "properties": {
        "target": {
            "enum": ["stdout", "stderr", "file", "logger"],
            "description": "where the lines go; default \"file\" when path "
                           "is set, else \"stdout\"",
        },
        "path": {"type": ["string", "null"], "minLength": 1, "default": None,
                 "description": "the file of the \"file\" target"},
        "max_size": {"type": ["integer", "null"], "minimum": 1,
                     "default": 100 * 1024 * 1024,
                     "description": "rotate the file before it grows past "
                                    "this many bytes (null: never)"},
        "keep": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 5,
                 "description": "rotated files kept (path.1 ... path.N)"},
        "buffer_size": {"type": "integer", "minimum": 0, "maximum": 16 * 1024 * 1024,
                        "default": 65536,
                        "description": "write when this many bytes wait (0: "
                                       "every line at once)"},
        "flush_interval": {"type": "number", "exclusiveMinimum": 0,
                           "maximum": 60, "default": 0.1,
                           "description": "seconds a line may wait"},
        "fields": {"type": "array", "items": {"enum": list(FIELDS)},
                   "uniqueItems": True, "default": list(FIELDS)},
        "request_headers": _headers_schema("request"),
        "response_headers": _headers_schema("response"),
        "redact": {"type": "array", "items": {"type": "string"},
                   "default": list(REDACT),
                   "description": "header fields written as \"[redacted]\""},
    },
    "additionalProperties": False,
}


def target_of(settings):
    """
    ``(target, path)`` of ``settings``: ``target`` defaults to ``"file"``
    when ``path`` is set, else ``"stdout"``.

    :raises ConfigError: for ``target: "file"`` without ``path``, a
        ``path`` with another target, or a ``path`` that cannot be a log file
        (:func:`unusable_path`).
    """
    path = settings.get("path")
    target = settings.get("target") or ("file" if path else "stdout")
    if target == "file" and not path:
        raise ConfigError(("path", "the \"file\" target needs a path"))
    if path and target != "file":
        raise ConfigError(("path", "a path is only for the \"file\" target "
                                   "(target is {!r})".format(target)))
    if path:
        problem = unusable_path(path)
        if problem is not None:
            raise ConfigError(("path", problem))
    return target, path


def unusable_path(path):
    """
    Why ``path`` cannot be the access log's file, or ``None``: it is a
    directory, its directory does not exist, or it (or, not there yet, its
    directory) is not writable.  Checked when the settings are read, so
    ``--check`` and a reload name the JSON path (as ``nginx -t`` tries its
    log files) instead of a start failing in ``init_worker``.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return "{} is a directory".format(path)
    if not os.path.isdir(directory):
        return "cannot create {}: the directory {} does not exist".format(path, directory)
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            return "{} is not writable".format(path)
    elif not os.access(directory, os.W_OK):
        return "cannot create {}: the directory {} is not writable".format(path, directory)
    return None


def header_names(names):
    """``None`` (no headers), ``"*"`` (all), or the lower-cased names as
    ``bytes``."""
    if not names:
        return None
    if "*" in names:
        return "*"
    return tuple(n.lower().encode("ascii") for n in names)


def template(fields, request_headers, response_headers):
    """The ``%`` format of a line: ``{"time":%s,...}``."""
    names = list(fields)
    if request_headers is not None:
        names.append("request_headers")
    if response_headers is not None:
        names.append("response_headers")
    return "{" + ",".join('"%s":%s' % (n, _FORMATS.get(n, "%s")) for n in names) + "}"


def picker(fields):
    """A function taking the values of :data:`FIELDS` to those of ``fields``."""
    indexes = [FIELDS.index(f) for f in fields]
    return lambda values: tuple([values[i] for i in indexes])


__all__ = ["FIELDS", "REDACT", "SETTINGS_SCHEMA", "header_names", "picker", "target_of",
           "template"]
