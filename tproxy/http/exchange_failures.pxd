from tproxy.http.body cimport RequestBody

cdef class UpstreamFailures(RequestBody):
    pass
