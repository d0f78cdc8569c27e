cimport cython

from tproxy.http.reader cimport RequestReader

# final: the methods the exchange calls (pause, unpause, write, write_all,
# can_keep_alive, exchange_done: declared in bases.pxd) skip, when called
# in C, the look-up by name for a Python override (which each connection's
# own instance dict made miss on every call); a final class does not
# declare a base's method again.
@cython.final
cdef class ProxyProtocol(RequestReader):
    pass
