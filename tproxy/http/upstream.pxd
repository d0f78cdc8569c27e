cimport cython

from tproxy.http.exchange cimport Exchange
from tproxy.http.response_reader cimport ResponseHeadReader

cdef class UpstreamProtocol(ResponseHeadReader):
    cpdef set_deadline(self, seconds)
    cpdef start(self, exchange, head_only, data, timeout)
    cpdef send(self, data, timeout)
    cpdef pause_reading(self)
    cpdef resume_reading(self)
    cpdef release(self)
    cpdef abort(self)
    @cython.locals(ex=Exchange, n=Py_ssize_t, end=Py_ssize_t)
    cpdef dataReceived(self, data)
    @cython.locals(ex=Exchange)
    cpdef on_body(self, data)
    @cython.locals(ex=Exchange)
    cpdef on_message_complete(self)
