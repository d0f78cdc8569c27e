# -*- test-case-name: tests.test_cache -*-
"""
The ``cache`` plugin's ``DELETE`` on its admin path
(:mod:`tproxy.builtins.cache`): purge the entries whose path starts with
``?prefix=``, or every entry.  What could be a typo (an unknown parameter, a
body, a prefix not starting with ``/``) is a ``400``, nothing purged: each
would otherwise purge everything, or nothing with a ``200``.
"""

__all__ = ["purge"]


def purge(responses, admin_path, request):
    """The answer to ``DELETE admin_path`` (``request``), purging
    ``responses`` (a :class:`tproxy.builtins._cache_store.ResponseStore`)."""
    if request.body:
        # a JSON {"prefix": ...} would otherwise purge everything
        return 400, {"error": "DELETE {} takes no body: give the prefix in "
                              "the query (?prefix=/api/)".format(admin_path),
                     "field": "body", "value": None}
    for name in sorted(request.args):
        if name != "prefix":   # a typo would purge everything
            return 400, {"error": "unknown parameter {!r} (known: prefix)".format(name),
                         "field": name, "value": request.args[name]}
    prefix = request.args.get("prefix")
    if prefix is not None and not prefix.startswith("/"):
        # a key's path starts with "/": "static/" would purge
        # nothing and say so with a 200
        return 400, {"error": "prefix must be a path prefix starting with "
                              "'/' (/static/)", "field": "prefix", "value": prefix}
    return 200, {"purged": responses.purge(prefix)}
