"""
The built-in plugins: ``registry``, ``router``, ``least_conn``,
``access_log``, ``routes`` and ``health_check`` (active health checks); and
the gateway plugins (docs/gateway-plugins.md), off unless listed:
``request_id``, ``key_auth``, ``jwt_auth``, ``ip_restriction``, ``cors``,
``rate_limit``, ``prometheus``, ``hmac_auth``, ``cache``.  Modules whose names
start with ``_`` are helpers shared by built-ins, not plugins.

Each is an ordinary plugin module with a ``class Plugin``, written only against
the public API (the gateway, the request context, the registry, the health state and
the admin routes) that a third-party plugin has; the configuration's ``plugins`` list
names them like any other.
"""
