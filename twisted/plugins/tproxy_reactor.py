"""``twistd -r tproxy``: the epoll reactor with tproxy's event-dispatch shortcut."""
from twisted.application.reactors import Reactor

tproxy_reactor = Reactor("tproxy", "tproxy.reactor",
                         "epoll, dispatching events without a logging context per event")
