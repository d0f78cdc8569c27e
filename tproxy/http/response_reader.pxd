# The compiled upstream connection (tproxy/compiled.py): this first class of
# UpstreamProtocol declares its fields (their meaning: upstream.py); the
# Protocol base keeps an instance dict for any other name.
cimport cython

from tproxy.http.bases cimport UpstreamConnection
from tproxy.http.exchange cimport Exchange

cdef class ResponseHeadReader(UpstreamConnection):
    cdef public object pool, key, factory, transport, parser, timer, due
    cdef public int connected
    cdef public Exchange exchange
    cdef public bint head_only, idle, _eof_body, _informational, _head_spans
    cdef public bint _checking, reading, reading_paused, upgrading
    cdef public Py_ssize_t requests, max_head, _head_left
    cdef public object _head, _head_fed, _reason, _feeding, _whole, _whole_read
    cdef public double deadline, _fires_at
    cdef dict __dict__
    cdef object __weakref__
    cpdef _count_head(self, Exchange ex, Py_ssize_t n)
    cpdef on_status(self, status)
    cpdef on_header(self, name, value)
    @cython.locals(ex=Exchange)
    cpdef on_headers_complete(self)
    cpdef on_message_begin(self)
    @cython.locals(ex=Exchange)
    cpdef on_body(self, data)
    @cython.locals(ex=Exchange)
    cpdef on_message_complete(self)

# the callbacks of the lent parsers: C calls to the connection's
@cython.final
cdef class _Callbacks:
    cdef public ResponseHeadReader conn
