"""
The built-in plugins: ``registry``, ``router``, ``least_conn`` and
``access_log``.

Each is an ordinary plugin module with a ``class Plugin``, written only against
the public API (the gateway, the request context, the registry and the admin
routes) that a third-party plugin has; the configuration's ``plugins`` list
names them like any other.
"""
