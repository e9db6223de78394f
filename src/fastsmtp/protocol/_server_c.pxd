# Declarations Cython adds to protocol/server.py when it compiles that file as
# fastsmtp.protocol._server_c (an "augmenting .pxd": the .py stays plain Python).
#
# ServerConnection becomes an extension type whose attributes are C struct
# slots, not dict entries: the compiled code reads and writes them directly.
# Without this, the compiled module runs more instructions than CPython 3.11
# runs the .py, whose specialising interpreter caches instance attribute
# lookups. Every slot is a plain object, so values and behaviour are the
# .py's. Every attribute the connection (or a module beside it) sets
# belongs here: the type has no instance __dict__, so one not listed fails.
# A `cdef dict __dict__` would be made with every connection, and a cpdef
# method looks itself up again (making a bound method) whenever the instance
# dict differs from the last call's: with 20 sessions, nearly every call
# (Callgrind: 170k instructions per message, 136k without the dicts). The
# type itself is immutable: its methods cannot be replaced at run time
# (subclass it instead).

from fastsmtp.wire._c cimport DataDecoder as _DataDecoder, LineReader as _LineReader

# blank_envelope and its table: a C call and a C copy.
cdef dict _BLANK

# The settings the mail path reads, as C fields; one per Settings, found in C.
cdef class _Profile:
    cdef readonly bint lmtp, strict_crlf, lenient_addresses, dsn, require_tls, require_auth
    cdef readonly object max_transactions, max_recipients, max_message_size
    cdef readonly object max_line_length, max_command_line
    cdef readonly tuple extensions, body_types
    cdef readonly object greeting, helo, bye
    cdef object _settings
    cdef dict _ehlo
    cpdef ehlo_for(self, extensions)

cdef dict _PROFILES
cpdef _Profile _profile_of(settings)
cpdef blank_envelope()

cdef class ServerConnection:
    cdef public object settings, session, envelope, state
    cdef public _Profile _profile
    # The compiled wire layer's types (the twin runs only with it): their
    # per-line methods are C calls, and done and size C reads.
    cdef public _LineReader _reader
    cdef public _DataDecoder _decoder
    cdef public object _keep_body, _decoded, _data_done
    cdef public object _chunk_left, _chunk_size, _chunk_last, _chunk_refusal, _chunk_return
    cdef public object _chunks_started, _chunks_total
    cdef public object _decision, _notice, _eof, _errors, _junk, _transactions
    cdef public list _out
    cdef public object _extensions, _body_types, _starttls, _relay, _auth_mechanisms, _sasl
    cdef public object _extended_before
    cdef public frozenset _auto_accept
    # What the I/O layer calls per read: compiled callers (fastsmtp._connection_c)
    # call these in C, others as usual.
    cpdef greet(self, reply=*)
    cpdef receive_data(self, data)
    cpdef bytes data_to_send(self)
    cpdef next_event(self)
    cpdef respond(self, reply=*)
    # Called on self once or more per message: C calls from the compiled code.
    cpdef _send(self, reply)
    cpdef _decide(self, event)
    cpdef _accepted(self, reply)
    cpdef _hello(self, verb, args)
    cpdef _greeted(self, verb, host_name, reply)
    cpdef _wait(self, event)
    cpdef _take_mail(self, address, options, ret, envid)
    cpdef _take_rcpt(self, address, options, dsn)
    cpdef _close(self, reason)
    cpdef _bad(self, reply)
    cpdef _count_error(self)
    cpdef _count_junk(self)
    cpdef _reset_transaction(self)
    cpdef _answer_end(self, reply)
    cpdef _end_message(self, bint accepted)
    cpdef _body_event(self)
