# The compiled pool (tproxy/compiled.py): its fields (their meaning: pool.py).
cimport cython

from tproxy.http.upstream cimport UpstreamProtocol

cdef class UpstreamPool:
    cdef public object reactor, read_timeout, connect_timeout, max_idle, idle_timeout
    cdef public object max_header_size, idle, tls, _creators, deadlines, seconds
    cdef dict __dict__
    cdef object __weakref__
    @cython.locals(conn=UpstreamProtocol)
    cpdef connect(self, peer, exchange, fresh=*)
    cpdef _idle(self, UpstreamProtocol conn)
    cpdef _forget(self, UpstreamProtocol conn)
