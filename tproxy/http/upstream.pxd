cimport cython

from tproxy.http.exchange cimport Exchange
from tproxy.http.response_reader cimport ResponseHeadReader

cdef class _Callbacks

# final: see connection.pxd (start, send, release and abort are declared in
# bases.pxd)
@cython.final
cdef class UpstreamProtocol(ResponseHeadReader):
    cpdef set_deadline(self, seconds)
    cpdef pause_reading(self)
    cpdef resume_reading(self)
    @cython.locals(ex=Exchange, n=Py_ssize_t, end=Py_ssize_t, callbacks=_Callbacks)
    cpdef dataReceived(self, data)
    cpdef on_message_begin(self)
    @cython.locals(ex=Exchange)
    cpdef on_body(self, data)
    @cython.locals(ex=Exchange)
    cpdef on_message_complete(self)

# the callbacks of the lent parsers: a C call to the connection's
@cython.final
cdef class _Callbacks:
    cdef public UpstreamProtocol conn
