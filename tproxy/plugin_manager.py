# -*- test-case-name: tests.test_plugins -*-
"""
tproxy's pluggy plugin manager (:class:`PluginManager`, which
:func:`tproxy.plugins.build_plugin_manager` makes): pluggy's, with a quicker
look for hook implementations at registration (an object's dunder names are
not looked at, and what :func:`_quick_look` sees plainly -- not a hook
implementation, or a marked function of a plugin's class -- is answered
without asking pluggy), hook specifications read once per process (pluggy's
answers kept), and, on CPython, each registered instance given a plain
``dict`` of its own (:func:`_own_dict`: its attribute reads in the hooks
specialise).  The answers are pluggy's own, sooner: ``tests.test_plugins``
compares them on every kind of attribute.
"""

import sys
import types

import pluggy

__all__ = ["PluginManager"]


class PluginManager(pluggy.PluginManager):
    """
    pluggy's manager, which does not look at an object's dunder attributes
    for hook implementations (no hook is named ``__x__``): a plugin instance
    has some thirty of them, and each look costs microseconds at every
    start, reload and test harness.  Nor does it ask pluggy (whose look is
    ``inspect.getattr_static``, ~10 microseconds) about an instance's other
    attributes where :func:`_quick_look` has the answer at once (its hook
    implementations among them).
    """

    def parse_hookimpl_opts(self, plugin, name):
        if name[:2] == "__" and name[-2:] == "__":
            return None
        answer = _quick_look(plugin, name)
        if answer is _ASK:
            return pluggy.PluginManager.parse_hookimpl_opts(self, plugin, name)
        return answer

    def parse_hookspec_opts(self, module_or_class, name):
        """
        pluggy's answer, kept for each namespace, name and value: a manager
        reads the same hook specifications (:mod:`tproxy.hookspecs`) at
        every start, reload and test harness, and pluggy's look
        (``inspect.getattr_static``) costs ~10 microseconds a name.  An
        attribute that is not the namespace's own, or a namespace that
        cannot be a key, is asked of pluggy each time.
        """
        try:
            value = vars(module_or_class).get(name, _ABSENT)
            key = (module_or_class, name, self.project_name)
            cached = _SPECS.get(key) if value is not _ABSENT else None
        except TypeError:
            value = _ABSENT
        if value is _ABSENT:
            return pluggy.PluginManager.parse_hookspec_opts(self, module_or_class, name)
        if cached is None or cached[0] is not value:
            cached = _SPECS[key] = (value, pluggy.PluginManager.parse_hookspec_opts(
                self, module_or_class, name))
        opts = cached[1]
        return dict(opts) if opts is not None else None

    def register(self, plugin, name=None):
        name = pluggy.PluginManager.register(self, plugin, name)
        if _CPYTHON:
            _own_dict(plugin)
        return name


_CPYTHON = sys.implementation.name == "cpython"

#: the attribute pluggy's ``HookimplMarker("tproxy")`` puts on a function
#: (``"tproxy"``: the project's name, also the entry points' group)
_MARKER = "tproxy_impl"
_ABSENT = object()
#: ``{(namespace, name, project): (value, pluggy's hook spec options)}``
_SPECS = {}


def _quick_look(plugin, name):
    """
    pluggy's answer about the attribute ``name`` of the plugin ``plugin`` (a
    module or an instance), found as pluggy finds it (without running
    descriptors), where it is plain to see: ``None`` (not a hook
    implementation) for a function without tproxy's marker; in a module,
    anything but a function, a bound method, a ``staticmethod`` or a
    ``classmethod``; a value of an instance's own that is neither a function
    nor a bound method; in an instance's class (or a base class), a
    ``staticmethod`` or ``classmethod`` without the marker, or a plain value
    (no ``__get__``, not callable).  The marker's options (pluggy's answer
    too) for a marked function of a plain module, or of the class of an
    instance whose class is a plain ``type`` and which has no value of its
    own by that name: the hook implementations of every plugin instance.
    Anything else (a class plugin, a slot, a bound method, another
    descriptor, a metaclass) is :data:`_ASK`: left to pluggy.
    """
    if isinstance(plugin, types.ModuleType):
        value = plugin.__dict__.get(name, _ABSENT)
        if isinstance(value, types.FunctionType):
            opts = getattr(value, _MARKER, None)
            if opts is None:
                return None
            return opts if type(plugin) is types.ModuleType and type(opts) is dict else _ASK
        if value is not _ABSENT and not isinstance(
                value, (types.MethodType, staticmethod, classmethod)):
            return None
        return _ASK
    if isinstance(plugin, type):
        return _ASK
    try:
        own = object.__getattribute__(plugin, "__dict__")
    except AttributeError:
        return _ASK
    value = own.get(name, _ABSENT) if type(own) is dict else _ABSENT
    if value is not _ABSENT:
        if isinstance(value, (types.FunctionType, types.MethodType)):
            return _ASK
        return None
    for klass in type(plugin).__mro__:
        value = klass.__dict__.get(name, _ABSENT)
        if value is not _ABSENT:
            break
    else:
        return _ASK
    if isinstance(value, (staticmethod, classmethod)):
        if (getattr(value, _MARKER, None) is None
                and getattr(value.__func__, _MARKER, None) is None):
            return None
        return _ASK
    if isinstance(value, types.FunctionType):
        opts = getattr(value, _MARKER, None)
        if opts is None:
            return None
        # pluggy's look (inspect.getattr_static) reads the class and its
        # bases as this does when the class's type is ``type`` itself and
        # the instance's __dict__ is a plain dict without the name
        plain = type(type(plugin)) is type and type(own) is dict
        return opts if plain and type(opts) is dict else _ASK
    if not callable(value) and not hasattr(type(value), "__get__"):
        return None
    return _ASK


#: :func:`_quick_look`'s answer "ask pluggy"
_ASK = object()


def _own_dict(plugin):
    """
    Give a plugin instance a plain ``dict`` of its own for its attributes.

    pluggy's ``register`` lists a plugin's names with ``dir()``, which makes
    CPython build the instance's ``__dict__``, a dict that shares its keys
    with the class's other instances.  CPython 3.11 cannot specialise
    attribute reads on such a dict (``LOAD_ATTR_WITH_HINT`` reads the value
    from the shared keys, finds none and falls back, every time): each
    ``self.x`` in a hook then costs ~100 instructions more (the access log's
    ``log`` hook 17.8k -> 20.7k instructions).  A copy is an ordinary dict,
    whose reads specialise.  Not on PyPy, whose instances are not dicts.
    """
    d = getattr(plugin, "__dict__", None)
    if type(d) is dict and not isinstance(plugin, (type, types.ModuleType)):
        try:
            plugin.__dict__ = dict(d)
        except (AttributeError, TypeError):   # (a class that does not allow it)
            pass
