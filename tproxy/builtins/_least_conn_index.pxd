# The compiled index of least_conn (tproxy/compiled.py): its fields (their
# meaning: _least_conn_index.py), C calls among its methods; attributes read
# as C fields at each request.
cimport cython

cdef class _Index

@cython.final
cdef class _Rec:
    cdef public object peer
    cdef public _Index index
    cdef public _Bucket bucket
    cdef public _Rec prev, next
    cdef public double passed
    cdef public Py_ssize_t round, total

@cython.final
cdef class _Bucket:
    cdef public _Rec first, last
    cdef public Py_ssize_t size, round
    cdef public double score
    @cython.locals(last=_Rec)
    cpdef append(self, _Rec rec)
    @cython.locals(prev=_Rec, following=_Rec)
    cpdef remove(self, _Rec rec)

@cython.final
cdef class _Index:
    cdef public dict buckets, passes, full
    cdef public list keys, spare
    cdef public set queued
    cdef public Py_ssize_t placed
    cdef public double vt
    cdef public object down, key
    cdef public _Bucket hot, other
    @cython.locals(keys=list, bucket=_Bucket, rec=_Rec)
    cpdef first(self)
    @cython.locals(old=_Bucket, weight=double, start=double, passed=double,
                   total=Py_ssize_t, active=Py_ssize_t)
    cpdef changed(self, peer, _Rec rec)
    @cython.locals(bucket=_Bucket)
    cpdef _Bucket bucket(self, double score, Py_ssize_t round)
    @cython.locals(rec=_Rec)
    cpdef add(self, peer, passed, total)
    @cython.locals(rec=_Rec)
    cpdef record(self, peer)
    @cython.locals(rec=_Rec)
    cpdef forget(self, peer)
    @cython.locals(rec=_Rec, old=_Bucket)
    cpdef place(self, peer)
    @cython.locals(rec=_Rec)
    cpdef drop(self, peer)
    @cython.locals(buckets=dict, bucket=_Bucket)
    cpdef new_bucket(self, key)
    cpdef retire(self, key)

@cython.final
cdef class _StateKey:
    cdef public object serial
    @cython.locals(rec=_Rec, states=dict, index=_Index)
    cpdef peer_changed(self, peer)
