from tproxy.http.reader cimport RequestReader

cdef class ProxyProtocol(RequestReader):
    cpdef pause(self, reason)
    cpdef unpause(self, reason)
    cpdef write(self, data)
    cpdef write_all(self, seq)
    cpdef can_keep_alive(self)
    cpdef exchange_done(self, ex)
