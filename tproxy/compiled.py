"""
The request path's hot modules, compiled by Cython on CPython.

``pip install`` compiles :data:`MODULES` from their ``.py`` source, typed by
the ``.pxd`` file beside each (``cdef class`` for the client connection, the
upstream connection and the exchange, typed attributes, C calls among
their methods; see setup.py).  The ``.py`` files are the only source: PyPy,
or a CPython where compiling failed, runs them as they are.

Which one runs is chosen once, when :mod:`tproxy` is imported
(:func:`choose`), for all of them together (the compiled classes know each
other's layout, so a compiled module never runs beside the pure-Python
version of another):

- the pure-Python modules when ``TPROXY_COMPILED=0`` is in the environment,
  on PyPy, or when nothing was compiled;
- the pure-Python modules, with a warning, when compiling failed (the
  manifest the build writes says why), or when a module's ``.py`` or
  ``.pxd`` is not the one it was compiled from (an edit after the build:
  ``pip install -e .`` compiles it anew);
- else the compiled ones.

``twistd tproxy`` logs the choice at start, in its line of the fast paths,
and the warning after it (:data:`STATE`, :data:`WARNING`).

A compiled module is found before its ``.py`` by Python's own import
system; the pure-Python choice installs a meta-path finder that loads the
``.py`` files instead.
"""

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import platform
import sys

#: the modules compiled, as setup.py builds them (those with a ``.pxd``
#: beside them are typed; the others are compiled as they are)
MODULES = (
    "tproxy.http.bases",
    "tproxy.http.filters",
    "tproxy.http.response",
    "tproxy.http.body",
    "tproxy.http.exchange_failures",
    "tproxy.http.exchange",
    "tproxy.http.response_reader",
    "tproxy.http.upstream",
    "tproxy.http.reader",
    "tproxy.http.connection",
    "tproxy.http.pool",
    "tproxy.http.wire",
    "tproxy.http.upstream_head",
    "tproxy.http.response_fields",
    "tproxy.http.dates",
    "tproxy.builtins._least_conn_index",
)

#: written by the build beside this module: each module's source digest,
#: or why nothing was compiled
MANIFEST = "_compiled.json"

#: what :func:`choose` decided, for the start log line: ``"on"``, or
#: ``"off (why)"``
STATE = "off (not chosen yet)"

#: what the start log warns of (a failed or stale build), or ``None``
WARNING = None

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def source_digest(name, root=_ROOT):
    """The digest of a module's ``.py`` and ``.pxd`` (if any) under ``root``."""
    base = os.path.join(root, *name.split("."))
    digest = hashlib.sha256()
    for path in (base + ".py", base + ".pxd"):
        if os.path.exists(path):
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()


def class_defaults(cls, **values):
    """
    Set ``values`` as class attributes of the pure-Python ``cls``: the state
    an instance starts with, read through the class until the instance sets
    it (CPython 3.11 keeps at most 30 names of an instance inline: see
    ``tests/test_inline_values.py``).  A compiled class (an extension type,
    whose fields start at ``None``, ``False`` or 0 as declared in its
    ``.pxd``) takes no class attributes and is left as it is.
    """
    try:
        for name, value in values.items():
            setattr(cls, name, value)
    except TypeError:
        pass   # (an extension type)


class _PureFinder(object):
    """Finds :data:`MODULES` as their ``.py`` files (a compiled module
    beside one would be found first by the path's own finder)."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if fullname not in MODULES:
            return None
        source = os.path.join(_ROOT, *fullname.split(".")) + ".py"
        return importlib.util.spec_from_file_location(
            fullname, source, loader=importlib.machinery.SourceFileLoader(fullname, source))


def _built(root):
    """The manifest the build wrote (``None``: no build here)."""
    try:
        with open(os.path.join(root, "tproxy", MANIFEST)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _compiled_found(name, root):
    """Whether an extension module of ``name`` is where the ``.py`` is."""
    base = os.path.join(root, *name.split("."))
    return any(os.path.exists(base + suffix)
               for suffix in importlib.machinery.EXTENSION_SUFFIXES)


def choose(environ=os.environ):
    """Choose the compiled or the pure-Python modules (see the module's
    docstring); call before any of :data:`MODULES` is imported."""
    global STATE, WARNING
    STATE, WARNING = decide(environ, platform.python_implementation())
    if STATE != "on" and _PureFinder not in sys.meta_path:
        sys.meta_path.insert(0, _PureFinder)
    return STATE


def decide(environ, implementation, root=_ROOT):
    """
    ``(state, warning)``: ``"on"`` if the compiled modules under ``root``
    are to be used, else ``"off (why)"`` (see the module's docstring); and
    what to warn of, or ``None``.
    """
    if environ.get("TPROXY_COMPILED", "") == "0":
        return "off (TPROXY_COMPILED=0)", None
    if implementation != "CPython":
        return "off (not CPython)", None
    built = _built(root)
    if built is not None and "failed" in built:
        return "off (compiling failed)", (
            "compiling the hot modules failed at install ({}): the pure-Python "
            "modules are used".format(built["failed"]))
    found = [name for name in MODULES if _compiled_found(name, root)]
    if built is None or not found:
        return "off (not compiled)", None
    digests = built.get("modules", {})
    stale = [name for name in MODULES
             if name not in found or digests.get(name) != source_digest(name, root)]
    if stale:
        return "off (stale build)", (
            "{} changed since it was compiled: the pure-Python modules are used "
            "(pip install -e . compiles them again)".format(", ".join(stale)))
    return "on", None
