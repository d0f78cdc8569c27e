from tproxy.http.exchange_failures cimport UpstreamFailures

cdef class Exchange(UpstreamFailures):
    cpdef run(self)
    cpdef balance(self)
    cpdef _balanced(self, peer)
    cpdef upstream_connected(self, conn, reused)
    cpdef _close_upstream(self)
    cpdef _release_peer(self)
