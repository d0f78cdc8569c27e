cimport cython

from tproxy.http.exchange cimport Exchange
from tproxy.http.response_reader cimport ResponseHeadReader, _Callbacks

# final: see connection.pxd (start, send, release and abort are declared in
# bases.pxd)
@cython.final
cdef class UpstreamProtocol(ResponseHeadReader):
    cpdef set_deadline(self, seconds)
    cpdef pause_reading(self)
    cpdef resume_reading(self)
    @cython.locals(ex=Exchange, n=Py_ssize_t, end=Py_ssize_t, callbacks=_Callbacks)
    cpdef dataReceived(self, data)
