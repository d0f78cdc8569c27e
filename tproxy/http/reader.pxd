# The compiled client connection (tproxy/compiled.py): this first class of
# ProxyProtocol declares the fields its __init__ stores (their meaning:
# connection.py; the factory is ClientConnection's, bases.pxd); the Protocol
# base keeps an instance dict for any other
# name (the rare ones: linger, line_part ...).
cimport cython

from tproxy.http.exchange cimport Exchange
from tproxy.http.bases cimport ClientConnection

cdef class RequestReader(ClientConnection):
    cdef public object transport, remote_addr, trusted, forwarded, parser
    cdef public object queue, paused, head_start, timer, url, fields, chunk_mark
    cdef public int connected
    cdef public Exchange reading
    cdef public object exchange   # (an Exchange, or a refusal waiting its turn)
    cdef public Py_ssize_t served, head_size, heads, head_bytes, line_bytes, carry
    cdef public bint closing, checking, chunked, line_done, last_read
    cdef public double idle_since, body_since
    cdef dict __dict__
    cdef object __weakref__
    cpdef dataReceived(self, data)
    cpdef on_message_begin(self)
    cpdef on_url(self, url)
    cpdef on_header(self, name, value)
    @cython.locals(ex=Exchange)
    cpdef on_headers_complete(self)
    cpdef _body_head(self, Exchange ex, length)
    cpdef on_body(self, data)
    @cython.locals(ex=Exchange)
    cpdef on_message_complete(self)
