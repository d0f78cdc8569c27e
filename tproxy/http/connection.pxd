cimport cython

from tproxy.http.exchange cimport Exchange
from tproxy.http.reader cimport RequestReader

cdef class ProxyProtocol(RequestReader):
    cpdef pause(self, reason)
    cpdef unpause(self, reason)
    cpdef write(self, data)
    cpdef write_all(self, seq)
    cpdef can_keep_alive(self)
    @cython.locals(done=Exchange)
    cpdef exchange_done(self, ex)
