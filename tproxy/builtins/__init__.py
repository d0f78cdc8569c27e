"""
The built-in plugins: ``registry``, ``router``, ``least_conn``,
``access_log``, ``routes`` and ``health_check``.

Each is an ordinary plugin module with a ``class Plugin``, written only against
the public API (the gateway, the request context, the registry, the health state and
the admin routes) that a third-party plugin has; the configuration's ``plugins`` list
names them like any other.
"""
