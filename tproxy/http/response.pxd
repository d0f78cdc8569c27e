from tproxy.http.filters cimport FilterChain

cdef class ResponseSide(FilterChain):
    cpdef upstream_head(self, status, reason, fields, upstream_keepalive, cleaned=*)
    cpdef _send_head(self, status, reason, raw, body, lines=*, dated=*)
    cpdef upstream_body(self, data)
    cpdef upstream_reading(self)
    cpdef upstream_read_done(self)
    cpdef _send(self, data)
    cpdef upstream_end(self)
