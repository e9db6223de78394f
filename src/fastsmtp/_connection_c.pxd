# Declarations Cython adds to connection.py when it compiles that file as
# fastsmtp._connection_c (an "augmenting .pxd", as protocol/_server_c.pxd is).
#
# SMTPProtocol becomes an extension type whose attributes are C struct
# slots. Its ServerConnection is typed, so the per-read calls into the
# compiled state machine (declared cpdef in _server_c.pxd) are C calls, not
# attribute lookups. The flags are C ints and the clock readings doubles;
# the rest are plain objects. The type has no __dict__ of its own (see
# _server_c.pxd for why); BufferedSMTPProtocol, its Python subclass, has
# one made only when an attribute not listed here is set, which makes
# every cpdef call slower: one that the class sets belongs here.
# data_received, _process and _flush are cpdef: the per-read path calls them
# directly, and a subclass (or a test's monkeypatch) can still replace them.

from fastsmtp.protocol._server_c cimport ServerConnection as _CompiledConnection

# new_id's counter and prefix, as C values.
cdef str _ID_PREFIX
cdef unsigned long long _last_id

cdef class SMTPProtocol:
    cdef public _CompiledConnection conn
    cdef public object server, hooks, transport, _body, _timer, _loop, _buffer
    cdef public object _gate, _proxy, _limit_key
    cdef public bint _busy, _stopping, _lost, _admitted, _started, _write_paused
    cdef public bint _timed, _heard, _answered
    cdef public double _last_activity, _progress
    cdef public Py_ssize_t _progress_octets

    # Once per connection, from connection_made (and the gates of _pregreet).
    cpdef _admit(self)
    cpdef _start(self)
    cpdef data_received(self, data)
    cpdef _process(self)
    cpdef _flush(self)
    # Once per message, from the compiled _on_message.
    cpdef _deliver(self, size)
    cpdef _answer_message(self, result, size)
