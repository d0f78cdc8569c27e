# -*- test-case-name: tests.test_registry_redis -*-
"""
The shared registry's subscriber: the connection on which
:class:`tproxy.registry_redis.RedisRegistry` receives the changes the
instances publish (its ``channel``), subscribed once connected; each message
goes to the registry's ``published``, and the connection's coming and going
to its ``_subscriber_ready`` and ``_subscriber_lost``.  A message that
cannot be applied closes the connection (the reconnection's snapshot catches
up); logged under ``tproxy.registry_redis``, the registry's namespace.
"""

from twisted.logger import Logger

__all__ = ["subscriber_factory"]

log = Logger(namespace="tproxy.registry_redis")


def _subscriber_factory_class():
    import txredisapi

    class Subscriber(txredisapi.SubscriberProtocol):
        """The connection that receives the published changes."""

        def connectionMade(self):
            d = txredisapi.SubscriberProtocol.connectionMade(self)
            registry = self.factory.registry
            ready = self.whenConnected()
            ready.addCallback(lambda _: self.subscribe(registry.channel))
            ready.addCallbacks(lambda _: registry._subscriber_ready(),
                               lambda f: self.transport.loseConnection())
            return d

        def messageReceived(self, pattern, channel, message):
            try:
                self.factory.registry.published(message)
            except Exception:
                log.failure("registry: applying a change from Redis failed")
                self.factory.registry._subscribed = False
                self.transport.loseConnection()

        def connectionLost(self, why):
            txredisapi.SubscriberProtocol.connectionLost(self, why)
            self.factory.registry._subscriber_lost(why)

    class SubscriberFactory(txredisapi.RedisFactory):
        protocol = Subscriber

        def __init__(self, registry):
            txredisapi.RedisFactory.__init__(
                self, registry.address, None, 1, True, txredisapi.ConnectionHandler,
                "utf-8", registry.password, None, False)
            self.registry = registry

    return SubscriberFactory


def subscriber_factory(registry):
    """The reconnecting factory of ``registry``'s subscriber connection (txredisapi
    imported on first use: only a configuration with Redis needs it)."""
    return _subscriber_factory_class()(registry)
