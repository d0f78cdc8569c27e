# The compiled bases (tproxy/compiled.py, tproxy/http/bases.py): the
# factory's fields (their meaning: server.py; Twisted's Factory is a base
# too, any other name goes to the instance dict), and the methods of both
# connections that the exchange calls (C calls through these types).

cdef class ListenerFields:
    cdef public object clock, seconds, scheme, pool, first_timers, connections
    cdef public object gateway, phases, tries, keepalive_timeout, keepalive_requests
    cdef public object header_timeout, first_timeout, max_line, max_header, max_body
    cdef public object max_header_line, body_buffer, body_timeout
    cdef public object client_send_timeout, underscores, lingering_time, lingering_timeout
    cdef public object send_timeout, read_timeout, upgrade_protocols, upgrade_idle_timeout
    cdef public object trusted, health, retry, max_unchecked
    cdef public Py_ssize_t requests
    cdef public bint draining, log_client_errors
    cdef dict __dict__
    cdef object __weakref__

cdef class ClientConnection:
    cdef public ListenerFields factory
    cpdef write(self, data)
    cpdef write_all(self, seq)
    cpdef can_keep_alive(self)
    cpdef exchange_done(self, ex)
    cpdef pause(self, reason)
    cpdef unpause(self, reason)

cdef class UpstreamConnection:
    cpdef start(self, exchange, head_only, data, timeout)
    cpdef send(self, data, timeout)
    cpdef release(self)
    cpdef abort(self)
