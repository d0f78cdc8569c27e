# The compiled pool (tproxy/compiled.py): its fields (their meaning: pool.py).
cimport cython

from tproxy.http.upstream cimport UpstreamProtocol

cdef class UpstreamPool:
    cdef public object reactor, read_timeout, connect_timeout, max_idle, idle_timeout
    cdef public object max_header_size, _creators, deadlines, seconds
    cdef public dict idle, tls
    cdef dict __dict__
    cdef object __weakref__
    @cython.locals(conn=UpstreamProtocol, idle=list)
    cpdef connect(self, peer, exchange, fresh=*)
    @cython.locals(idle=list)
    cpdef _idle(self, UpstreamProtocol conn)
    @cython.locals(idle=list)
    cpdef _forget(self, UpstreamProtocol conn)
