from tproxy.http.response cimport ResponseSide

cdef class RequestBody(ResponseSide):
    cpdef _send_body(self, data)
    cpdef _write_body(self, data)
