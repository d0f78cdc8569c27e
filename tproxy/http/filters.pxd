# The compiled exchange (tproxy/compiled.py): its parts are one chain of
# classes, FilterChain <- ResponseSide <- RequestBody <- UpstreamFailures <-
# Exchange, and this first one declares the fields of all (their meaning:
# exchange.py).  Every name an exchange sets must be here: a compiled
# exchange takes no other attribute.

from tproxy.http.bases cimport ClientConnection, ListenerFields, UpstreamConnection

cdef class FilterChain:
    cdef public ClientConnection conn
    cdef public ListenerFields factory
    cdef public object ctx, phases, request, plugins
    cdef public bint keep_alive, body_expected, request_chunked, expect_continue
    cdef public object upstream_head_fields
    cdef public bint request_complete, head_method, host_missing, done
    cdef public UpstreamConnection upstream
    cdef public object peer_held, out, filter_chain, held_chunk, head_held
    cdef public bint reused, answered, upstream_keepalive, upstream_full
    cdef public bint response_started, response_chunked, response_close
    # a body's, a retry's ...
    cdef public object pending, last_failure, body_waiter, body_limit, body_size
    cdef public object held_peer, body_kept
    cdef public Py_ssize_t pending_size, pending_limit, body_kept_size
    cdef public bint hold_body, body_lost, client_blocked
    cpdef _filter_body(self, data, eof)
    cpdef finish(self)
