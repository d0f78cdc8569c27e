cimport cython

from tproxy.http.exchange cimport Exchange
from tproxy.http.response_reader cimport ResponseHeadReader

# final: see connection.pxd (start, send, release and abort are declared in
# bases.pxd)
@cython.final
cdef class UpstreamProtocol(ResponseHeadReader):
    cpdef set_deadline(self, seconds)
    cpdef pause_reading(self)
    cpdef resume_reading(self)
    @cython.locals(ex=Exchange, n=Py_ssize_t, end=Py_ssize_t)
    cpdef dataReceived(self, data)
    @cython.locals(ex=Exchange)
    cpdef on_body(self, data)
    @cython.locals(ex=Exchange)
    cpdef on_message_complete(self)
