# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled twin of :mod:`fastsmtp.wire._py`.

The contract is the docstring of ``fastsmtp.wire._py``: this module exports
the same names and gives the same results and errors for the same input cut
at the same points. Only the how differs:

- Input is read in place through the buffer protocol; lines are found with
  ``memchr`` and bytes moved with ``memcpy``, and no Python object is touched
  per byte or per line. Scans and copies over 64 KiB release the GIL; an
  object used from a second thread meanwhile raises ``RuntimeError`` rather
  than let its buffer move under the first.
- ``DataDecoder`` walks each region once: it finds the terminator, checks
  every line (bare line endings, then length, in ``_py``'s order) and copies
  the unstuffed body straight into the ``bytes`` it returns, cutting only at
  stuffing dots and inserted CRs.
- Address and parameter grammars are C loops over a character table; address
  literals call the same ``ipaddress`` classes as ``_py``.

C declarations (constants, structs, attributes) are in ``_c.pxd``.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
    _PyBytes_Resize,
)
from cpython.exc cimport PyErr_Clear
from cpython.mem cimport PyMem_RawFree, PyMem_RawRealloc
from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.ref cimport Py_XDECREF
from cpython.unicode cimport (
    PyUnicode_DATA,
    PyUnicode_DecodeASCII,
    PyUnicode_DecodeUTF8,
    PyUnicode_New,
)
from libc.string cimport memchr, memcpy, memmove

import ipaddress

from ._defs import BareLineEnding, DataError, LineTooLong, ParseError

__all__ = [
    "LineReader",
    "DataDecoder",
    "DotStuffer",
    "dot_stuff",
    "parse_command",
    "parse_mail",
    "parse_rcpt",
    "xtext_decode",
    "xtext_encode",
]

cdef tuple ERRORS = (
    DataError.NONE,
    DataError.TOO_BIG,
    DataError.LINE_TOO_LONG,
    DataError.BARE_LINE_ENDING,
)


# --- buffers -------------------------------------------------------------------


cdef int buf_reserve(Buf* b, Py_ssize_t n) except -1:
    """Make room for ``n`` more bytes after the live ones."""
    cdef Py_ssize_t live = b.end - b.start
    cdef Py_ssize_t cap
    cdef uchar* data
    if b.end + n <= b.cap:
        return 0
    if b.start:
        # Consumed bytes are reclaimed only when the tail is full, so taking
        # a line from the front never moves what follows it.
        memmove(b.data, b.data + b.start, live)
        b.start = 0
        b.end = live
        if live + n <= b.cap:
            return 0
    cap = max(live + n, 2 * b.cap, 256)
    data = <uchar*>PyMem_RawRealloc(b.data, cap)
    if data == NULL:
        raise MemoryError()
    b.data = data
    b.cap = cap
    return 0


cdef int buf_append(Buf* b, const uchar* data, Py_ssize_t n) except -1:
    """Append ``n`` bytes (the caller is marked busy: big copies let go of the GIL)."""
    if n <= 0:
        return 0
    buf_reserve(b, n)
    if n > NOGIL_MIN:
        with nogil:
            memcpy(b.data + b.end, data, n)
    else:
        memcpy(b.data + b.end, data, n)
    b.end += n
    return 0


cdef void buf_clear(Buf* b) noexcept nogil:
    b.start = b.end = 0
    if b.cap > KEEP_CAPACITY:
        PyMem_RawFree(b.data)
        b.data = NULL
        b.cap = 0


cdef void buf_consume(Buf* b, Py_ssize_t n) noexcept nogil:
    b.start += n
    if b.start == b.end:
        buf_clear(b)


cdef int get_buffer(object data, Py_buffer* view) except -1:
    """A contiguous view of ``data``; anything else goes through ``bytes()``, as in _py."""
    if try_get_buffer(data, view, PyBUF_SIMPLE) == 0:
        return 0
    PyErr_Clear()
    PyObject_GetBuffer(bytes(data), view, PyBUF_SIMPLE)
    return 0


cdef inline const uchar* find_lf(const uchar* data, Py_ssize_t n) noexcept nogil:
    return <const uchar*>memchr(data, LF, n) if n > 0 else NULL


cdef const uchar* scan_lf(const uchar* data, Py_ssize_t n) noexcept:
    """find_lf, letting go of the GIL for big scans."""
    cdef const uchar* lf
    if n <= NOGIL_MIN:
        return find_lf(data, n)
    with nogil:
        lf = find_lf(data, n)
    return lf


cdef inline uchar* emit(uchar* out, const uchar* data, Py_ssize_t n) noexcept nogil:
    memcpy(out, data, n)
    return out + n


cdef int busy_error(object obj) except -1:
    raise RuntimeError(f"{type(obj).__name__} used from two threads at once")


# --- command lines -------------------------------------------------------------


cdef class LineReader:
    """Split an inbound byte stream into command lines (see module doc)."""

    def __init__(self, max_line_length=512, strict=True):
        if max_line_length < 3:
            raise ValueError("max_line_length must be at least 3")
        self.max_line_length = max_line_length
        self._limit = PyNumber_AsSsize_t(max_line_length, NULL)
        self.strict = strict
        buf_clear(&self._buf)
        self._discarding = False

    def __dealloc__(self):
        PyMem_RawFree(self._buf.data)

    def __len__(self):
        return self._buf.end - self._buf.start

    cpdef feed(self, data):
        """Buffer ``data``; a line being discarded does not grow the buffer."""
        cdef Buf* b = &self._buf
        cdef Py_buffer view
        if self._busy:
            busy_error(self)
        self._busy = True
        try:
            # The inputs _py's bytearray += accepts: contiguous buffers only.
            if try_get_buffer(data, &view, PyBUF_SIMPLE) < 0:
                PyErr_Clear()
                raise TypeError(f"a bytes-like object is required, not {type(data).__name__!r}")
            try:
                if self._discarding and (
                    scan_lf(b.data + b.start, b.end - b.start) == NULL
                    and scan_lf(<const uchar*>view.buf, view.len) == NULL
                ):
                    # Until its LF, a discarded line is dropped as it arrives.
                    buf_clear(b)
                    return
                buf_append(b, <const uchar*>view.buf, view.len)
            finally:
                PyBuffer_Release(&view)
        finally:
            self._busy = False

    cpdef next_line(self):
        """Return the next line without its ending, or None if none is complete."""
        cdef Buf* b = &self._buf
        cdef const uchar* line = b.data + b.start
        cdef Py_ssize_t n = b.end - b.start
        cdef Py_ssize_t end, stop
        cdef const uchar* lf
        cdef bint has_cr
        if self._busy:
            busy_error(self)
        self._busy = True
        lf = scan_lf(line, n)
        self._busy = False
        if lf == NULL:
            if n >= self._limit and not self._discarding:
                # No LF within the limit: this line is too long whatever follows.
                self._discarding = True
                buf_clear(b)
            return None
        end = lf - line
        if self._discarding:
            buf_consume(b, end + 1)
            self._discarding = False
            raise LineTooLong("line too long")
        has_cr = end > 0 and line[end - 1] == CR
        stop = end - 1 if has_cr else end
        if end + 1 > self._limit:
            # RFC 5321 §4.5.3.1.4: the limit counts the CRLF.
            buf_consume(b, end + 1)
            raise LineTooLong("line too long")
        if self.strict and (not has_cr or memchr(line, CR, stop) != NULL):
            # RFC 5321 §2.3.8: CR and LF only ever come together, as CRLF.
            buf_consume(b, end + 1)
            raise BareLineEnding("bare CR or LF in command line")
        result = PyBytes_FromStringAndSize(<const char*>line, stop)
        buf_consume(b, end + 1)
        return result

    def take(self, n):
        """Remove and return up to ``n`` buffered bytes."""
        cdef Buf* b = &self._buf
        # The bounds of _py's self._buf[:n]: None is everything, a negative n
        # counts from the end, out-of-range values clip.
        cdef Py_ssize_t k = PY_SSIZE_T_MAX if n is None else PyNumber_AsSsize_t(n, NULL)
        cdef Py_ssize_t live = b.end - b.start
        if self._busy:
            busy_error(self)
        if k < 0:
            k = max(live + k, 0)
        k = min(k, live)
        chunk = PyBytes_FromStringAndSize(<const char*>b.data + b.start, k)
        buf_consume(b, k)
        return chunk

    cpdef bytes drain(self):
        """Remove and return every buffered byte."""
        cdef Buf* b = &self._buf
        if self._busy:
            busy_error(self)
        chunk = PyBytes_FromStringAndSize(<const char*>b.data + b.start, b.end - b.start)
        buf_clear(b)
        self._discarding = False
        return chunk


# --- DATA ----------------------------------------------------------------------


cdef inline uchar joined_at(const Buf* pending, const uchar* data, Py_ssize_t i) noexcept nogil:
    """Byte ``i`` of the pending bytes followed by ``data``."""
    return pending.data[i] if i < pending.end else data[i - pending.end]


cdef Py_ssize_t count_cr(const uchar* data, Py_ssize_t n) noexcept nogil:
    cdef const uchar* end = data + n
    cdef Py_ssize_t count = 0
    while data < end:
        data = <const uchar*>memchr(data, CR, end - data)
        if data == NULL:
            break
        count += 1
        data += 1
    return count


cdef class DataDecoder:
    """Streaming DATA decoder: dot-unstuffing and end detection (see module doc)."""

    def __init__(self, max_size=None, max_line_length=1000, strict=True, keep_body=True):
        self.max_size = max_size
        self._has_max_size = max_size is not None
        self._max_size = PyNumber_AsSsize_t(max_size, NULL) if self._has_max_size else 0
        self.max_line_length = max_line_length or 0
        self._limit = PyNumber_AsSsize_t(self.max_line_length, NULL)
        self.strict = strict
        self.keep_body = keep_body
        self.size = 0
        self._error = ERR_NONE
        self.done = False
        buf_clear(&self._pending)
        self._midline = False
        self._after_crlf = True

    def __dealloc__(self):
        PyMem_RawFree(self._pending.data)

    @property
    def error(self):
        """The first ``DataError`` met, or ``DataError.NONE``."""
        return ERRORS[self._error]

    cpdef tuple feed(self, data):
        """Decode ``data``; return ``(body, done, leftover)``."""
        cdef Py_buffer view
        if self.done:
            raise ValueError("feed() after the end of data")
        if self._busy:
            busy_error(self)
        self._busy = True
        try:
            get_buffer(data, &view)
            try:
                return self._feed(<const uchar*>view.buf, view.len)
            finally:
                PyBuffer_Release(&view)
        finally:
            self._busy = False

    cdef tuple _feed(self, const uchar* data, Py_ssize_t n):
        cdef Buf* pending = &self._pending
        cdef Py_ssize_t held = pending.end
        cdef bint clean = self._error == ERR_NONE
        cdef PyObject* out = NULL
        cdef Py_ssize_t length
        cdef Region region
        if (
            not self._midline
            and self._after_crlf
            and held + n >= 3
            and joined_at(pending, data, 0) == DOT
            and joined_at(pending, data, 1) == CR
            and joined_at(pending, data, 2) == LF
        ):
            # The terminator, right after the CRLF that ended the last region.
            self.done = True
            buf_clear(pending)
            return b"", True, PyBytes_FromStringAndSize(<const char*>data + 3 - held, n - 3 + held)
        if scan_lf(data, n) == NULL:
            self._keep(data, n)
            return b"", False, b""
        body = b""
        try:
            if clean and self.strict and self.keep_body:
                # Strict decoding only drops bytes, so the body fits in what is
                # buffered; the bytes object is shrunk in place afterwards.
                out = new_bytes(NULL, held + n)
            self._walk_released(data, n, clean, out, &region)
            self._midline = False
            self._after_crlf = region.crlf
            if clean:
                if region.bare:
                    self._fail(ERR_BARE_LINE_ENDING)
                elif region.too_long:
                    self._fail(ERR_LINE_TOO_LONG)
                else:
                    length = held + region.cut - region.dots + region.crs
                    self.size += length
                    if self._has_max_size and self.size > self._max_size:
                        self._fail(ERR_TOO_BIG)
                    elif out != NULL:
                        _PyBytes_Resize(&out, length)
                        body = <object>out
                    elif self.keep_body:
                        # strict=False may insert CRs: with the size known,
                        # walk again, decoding into a body of that size.
                        out = new_bytes(NULL, length)
                        self._walk_released(data, n, True, out, &region)
                        body = <object>out
        finally:
            Py_XDECREF(out)
        buf_clear(pending)
        if region.after >= 0:
            self.done = True
            return body, True, PyBytes_FromStringAndSize(
                <const char*>data + region.after, n - region.after
            )
        self._keep(data + region.cut, n - region.cut)
        return body, False, b""

    cdef void _walk_released(
        self, const uchar* data, Py_ssize_t n, bint clean, PyObject* out, Region* region
    ) noexcept:
        """_walk into the bytes object ``out`` (or NULL), without the GIL for big chunks."""
        cdef uchar* w = <uchar*>bytes_data(out) if out != NULL else NULL
        if n <= NOGIL_MIN:
            self._walk(data, n, clean, w, region)
            return
        with nogil:
            self._walk(data, n, clean, w, region)

    cdef void _walk(
        self, const uchar* data, Py_ssize_t n, bint clean, uchar* out, Region* region
    ) noexcept nogil:
        """Delimit the region in the pending bytes + ``data``; check and count it if ``clean``.

        The region ends just after the LF that starts the terminator, or else
        after the last LF. ``out``, when given, receives the decoded region.
        """
        cdef const uchar* pre = self._pending.data
        cdef Py_ssize_t pre_n = self._pending.end  # the first line starts in pre
        cdef Py_ssize_t limit = self._limit
        cdef bint check_bare = clean and self.strict
        cdef bint decoding = clean  # no error found in the region yet
        cdef Py_ssize_t start = 0  # the current line's part in data starts here
        cdef Py_ssize_t copied = 0  # data[:copied] is in out, or deliberately not
        cdef Py_ssize_t cut = 0, after = -1, lines = 0, dots = 0, crs = 0, end, length
        cdef bint bare = False, too_long = False, has_cr = False
        cdef uchar first
        cdef const uchar* lf
        if out != NULL and pre_n:
            first = pre[0] == DOT
            out = emit(out, pre + first, pre_n - first)
        while True:
            lf = find_lf(data + start, n - start)
            if lf == NULL:
                break
            end = lf - data
            has_cr = data[end - 1] == CR if end > start else pre_n > 0 and pre[pre_n - 1] == CR
            lines += 1
            if check_bare and not has_cr:
                # RFC 5321 §2.3.8: a bare LF (SMTP smuggling, CVE-2023-51764).
                bare = True
                check_bare = decoding = False
            if decoding:
                length = pre_n + end + 1 - start
                if (pre[0] if pre_n else data[start]) == DOT:
                    # RFC 5321 §4.5.2: the first "." of a line was added by the sender.
                    dots += 1
                    if out != NULL and not pre_n:
                        out = emit(out, data + copied, start - copied)
                        copied = start + 1
                if not has_cr:
                    # strict=False: a bare LF stands for CRLF.
                    crs += 1
                    length += 1
                    if out != NULL:
                        out = emit(out, data + copied, end - copied)
                        out[0] = CR
                        out += 1
                        copied = end
                if limit and length > limit:
                    # RFC 5321 §4.5.3.1.6; strict=True keeps looking for bare
                    # line endings, which are reported first.
                    too_long = True
                    decoding = False
            pre_n = 0
            start = cut = end + 1
            if (
                has_cr
                and n - start >= 3
                and data[start] == DOT
                and data[start + 1] == CR
                and data[start + 2] == LF
            ):
                after = start + 3
                break
        if check_bare:
            # Every line ends with CRLF, so any CR beyond one a line is bare.
            bare = count_cr(pre, self._pending.end) + count_cr(data, cut) != lines
        if decoding and not bare and out != NULL:
            emit(out, data + copied, cut - copied)
        region.cut = cut
        region.after = after
        region.dots = dots
        region.crs = crs
        region.bare = bare
        region.too_long = too_long
        region.crlf = has_cr

    cdef void _fail(self, int error) noexcept:
        if self._error == ERR_NONE:
            self._error = error

    cdef int _keep(self, const uchar* data, Py_ssize_t n) except -1:
        """Hold the unfinished last line (the pending bytes + ``data``) until its LF arrives."""
        cdef Buf* pending = &self._pending
        cdef Py_ssize_t length = pending.end + n
        cdef uchar last
        # "." and ".\r" may begin the terminator rather than a line: they are
        # checked, if need be, once their line is complete.
        cdef bint may_end = (
            0 < length <= 2
            and joined_at(pending, data, 0) == DOT
            and (length == 1 or joined_at(pending, data, 1) == CR)
        )
        if self._error == ERR_NONE and not may_end:
            if self._limit and length >= self._limit:
                self._fail(ERR_LINE_TOO_LONG)
            elif self._has_max_size and length > self._max_size:
                self._fail(ERR_TOO_BIG)
        if self._error != ERR_NONE and length > 2:
            # Only the terminator matters now. This line is not ".", so a
            # terminator can only start at its last byte, if that is a CR.
            last = joined_at(pending, data, length - 1)
            buf_clear(pending)
            if last == CR:
                buf_append(pending, &last, 1)
            self._midline = True
            return 0
        buf_append(pending, data, n)
        return 0


# --- dot-stuffing (RFC 5321 §4.5.2) --------------------------------------------


cdef Py_ssize_t stuffing_dots(const uchar* data, Py_ssize_t n) noexcept nogil:
    """How many lines after an LF in ``data`` start with "."."""
    cdef Py_ssize_t count = 0, start = 0
    cdef const uchar* lf
    while True:
        lf = find_lf(data + start, n - start)
        if lf == NULL:
            return count
        start = lf - data + 1
        if start < n and data[start] == DOT:
            count += 1


cdef void write_stuffed(uchar* out, const uchar* data, Py_ssize_t n) noexcept nogil:
    """Copy ``data`` to ``out`` with a "." added after each LF followed by "."."""
    cdef Py_ssize_t copied = 0, start = 0
    cdef const uchar* lf
    while True:
        lf = find_lf(data + start, n - start)
        if lf == NULL:
            break
        start = lf - data + 1
        if start < n and data[start] == DOT:
            out = emit(out, data + copied, start - copied)
            out[0] = DOT
            out += 1
            copied = start
    emit(out, data + copied, n - copied)


cdef bytes stuff(object source, bint at_line_start, bint finish):
    """Dot-stuff ``source``, then append the terminator if ``finish``."""
    cdef Py_buffer view
    cdef const uchar* data
    cdef Py_ssize_t n, dots
    cdef bint lead
    cdef bytes out
    cdef uchar* w
    cdef const char* terminator = b""
    cdef Py_ssize_t terminator_n = 0
    get_buffer(source, &view)
    try:
        data = <const uchar*>view.buf
        n = view.len
        lead = at_line_start and n > 0 and data[0] == DOT
        if n > NOGIL_MIN:
            with nogil:
                dots = stuffing_dots(data, n)
        else:
            dots = stuffing_dots(data, n)
        if finish:
            # Only an empty body or one ending in CRLF takes the short form.
            if n == 0 or (n >= 2 and data[n - 2] == CR and data[n - 1] == LF):
                terminator, terminator_n = b".\r\n", 3
            else:
                terminator, terminator_n = b"\r\n.\r\n", 5
        elif not lead and not dots and type(source) is bytes:
            return source
        out = PyBytes_FromStringAndSize(NULL, n + lead + dots + terminator_n)
        w = <uchar*>PyBytes_AS_STRING(out)
        if lead:
            w[0] = DOT
        if n > NOGIL_MIN:
            with nogil:
                write_stuffed(w + lead, data, n)
        else:
            write_stuffed(w + lead, data, n)
        memcpy(w + lead + n + dots, terminator, terminator_n)
        return out
    finally:
        PyBuffer_Release(&view)


cdef class DotStuffer:
    """Streaming dot-stuffing encoder (RFC 5321 §4.5.2)."""

    def __init__(self):
        self._at_line_start = True
        self._empty = True
        self._ends_cr = False
        self._ends_crlf = False

    def encode(self, data):
        """Return ``data`` with a "." added before each line that starts with "."."""
        cdef bytes out = stuff(data, self._at_line_start, False)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(out)
        cdef const uchar* w
        if n:
            # The output ends as the input does.
            w = <const uchar*>PyBytes_AS_STRING(out)
            self._ends_crlf = w[n - 1] == LF and (
                (n >= 2 and w[n - 2] == CR) or (n == 1 and self._ends_cr)
            )
            self._ends_cr = w[n - 1] == CR
            self._at_line_start = w[n - 1] == LF
            self._empty = False
        return out

    def finish(self):
        """Return the end-of-data terminator for what was encoded."""
        return b".\r\n" if self._empty or self._ends_crlf else b"\r\n.\r\n"


def dot_stuff(body):
    """Dot-stuff a whole body and append the terminator."""
    return stuff(body, True, True)


# --- commands ------------------------------------------------------------------


cdef inline bytes as_bytes(object data):
    return data if type(data) is bytes else bytes(data)


cdef bint is_ascii(const uchar* data, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if data[i] >= 0x80:
            return False
    return True


cdef inline uchar upper(uchar c) noexcept nogil:
    return c - 32 if 97 <= c <= 122 else c


cdef str upper_ascii(const uchar* data, Py_ssize_t n):
    """``data[:n]``, all ASCII, as an uppercased ``str``."""
    cdef str text = PyUnicode_New(n, 127)
    cdef uchar* w = <uchar*>PyUnicode_DATA(text)
    cdef Py_ssize_t i
    for i in range(n):
        w[i] = upper(data[i])
    return text


cdef bint starts_upper(const uchar* data, Py_ssize_t n, const char* word, Py_ssize_t k) noexcept:
    """Whether ``data[:n]``, ASCII-uppercased, starts with ``word[:k]``."""
    cdef Py_ssize_t i
    if n < k:
        return False
    for i in range(k):
        if upper(data[i]) != <uchar>word[i]:
            return False
    return True


def parse_command(line):
    """Split a command line into its uppercased verb and its arguments."""
    cdef bytes data = as_bytes(line)
    cdef const uchar* s = <const uchar*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data), verb_n, first, last
    cdef const uchar* space = <const uchar*>memchr(s, SP, n)
    verb_n = space - s if space != NULL else n
    if is_ascii(s, verb_n):
        verb = upper_ascii(s, verb_n)
    else:
        verb = data[:verb_n].decode("ascii", "replace").upper()
    if space == NULL:
        return verb, b""
    first, last = verb_n + 1, n
    while first < last and s[first] == SP:
        first += 1
    while last > first and s[last - 1] == SP:
        last -= 1
    return verb, PyBytes_FromStringAndSize(<const char*>s + first, last - first)


# --- addresses -----------------------------------------------------------------

cdef uchar CHARS[256]  # ATEXT | KEYCHAR flags of each octet


cdef void init_chars() noexcept:
    cdef const uchar* letdig = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    cdef const uchar* other_atext = b"!#$%&'*+-/=?^_`{|}~"
    cdef Py_ssize_t i
    for i in range(62):
        CHARS[letdig[i]] = ATEXT | KEYCHAR
    for i in range(19):
        CHARS[other_atext[i]] |= ATEXT
    CHARS[HYPHEN] |= KEYCHAR


init_chars()


cdef Py_ssize_t find(const uchar* data, Py_ssize_t n, uchar c) noexcept nogil:
    cdef const uchar* found = <const uchar*>memchr(data, c, n)
    return found - data if found != NULL else -1


cdef str check_utf8(const uchar* data, Py_ssize_t n, bint utf8, str what):
    """Decode ``data[:n]``; non-ASCII needs SMTPUTF8 and must be valid UTF-8."""
    if is_ascii(data, n):
        return PyUnicode_DecodeASCII(<char*>data, n, NULL)
    if not utf8:
        raise ParseError("utf8", f"non-ASCII {what} requires SMTPUTF8")
    try:
        return PyUnicode_DecodeUTF8(<char*>data, n, NULL)
    except UnicodeDecodeError:
        raise ParseError(
            "address" if what == "address" else "param", f"invalid UTF-8 in {what}"
        ) from None


cdef bint valid_atoms(const uchar* text, Py_ssize_t n, bint utf8) noexcept nogil:
    """Dot-string (RFC 5321 §4.1.2): atoms of atext joined by single dots."""
    cdef Py_ssize_t i, atom = 0  # length of the current atom
    cdef uchar c
    for i in range(n):
        c = text[i]
        if c == DOT:
            if not atom:
                return False
            atom = 0
        elif CHARS[c] & ATEXT or (utf8 and c >= 0x80):
            atom += 1
        else:
            return False
    return atom > 0


cdef bint valid_quoted(const uchar* text, Py_ssize_t n, bint utf8) noexcept nogil:
    """Quoted-string without its quotes: qtextSMTP or backslash pairs."""
    cdef Py_ssize_t i = 0
    cdef uchar c
    while i < n:
        c = text[i]
        if c == BACKSLASH:  # quoted-pairSMTP = "\" %d32-126
            if i + 1 >= n or not 32 <= text[i + 1] <= 126:
                return False
            i += 2
            continue
        if c == DQUOTE or not (32 <= c <= 126 or (utf8 and c >= 0x80)):
            return False
        i += 1
    return True


cdef int valid_domain(const uchar* domain, Py_ssize_t n, bint utf8) except -1:
    """Domain (sub-domains of let-dig and hyphens) or an address literal."""
    cdef Py_ssize_t i, label = 0  # start of the current label
    cdef uchar c
    if n and domain[0] == LBRACKET:
        return valid_literal(domain, n)
    if not n or n > 255:
        return False
    for i in range(n + 1):
        if i == n or domain[i] == DOT:
            if i == label or domain[label] == HYPHEN or domain[i - 1] == HYPHEN:
                return False
            label = i + 1
            continue
        c = domain[i]
        if not (CHARS[c] & KEYCHAR or (utf8 and c >= 0x80)):
            return False
    return True


cdef int valid_ip(object parse, const uchar* text, Py_ssize_t n) except -1:
    try:
        parse(PyUnicode_DecodeASCII(<char*>text, n, NULL))
    except ValueError:
        return False
    return True


cdef int valid_literal(const uchar* literal, Py_ssize_t n) except -1:
    """address-literal (RFC 5321 §4.1.3): IPv4, IPv6: or a general literal."""
    cdef const uchar* inner = literal + 1
    cdef Py_ssize_t inner_n = n - 2, colon, i
    cdef uchar c
    if n < 3 or literal[n - 1] != RBRACKET or not is_ascii(inner, inner_n):
        return False
    if starts_upper(inner, inner_n, b"IPV6:", 5):
        return valid_ip(ipaddress.IPv6Address, inner + 5, inner_n - 5)
    if 48 <= inner[0] <= 57:  # a digit
        return valid_ip(ipaddress.IPv4Address, inner, inner_n)
    # General-address-literal = Standardized-tag ":" 1*dcontent
    colon = find(inner, inner_n, COLON)
    if colon < 0 or colon == inner_n - 1 or not valid_atoms(inner, colon, False):
        return False
    for i in range(colon + 1, inner_n):
        c = inner[i]
        if not (33 <= c <= 90 or 94 <= c <= 126):
            return False
    return True


cdef int split_command(bytes data, bytes keyword, bint lenient, Path* out) except -1:
    """Check ``keyword`` (any case), then split the ``<path> params`` after it."""
    cdef const uchar* rest = <const uchar*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data), k = PyBytes_GET_SIZE(keyword), i
    cdef bint quoted = False
    cdef uchar c
    if not starts_upper(rest, n, keyword, k):
        raise ParseError("syntax", f"expected {keyword.decode()}")
    rest += k
    n -= k
    while n and rest[0] == SP:
        rest += 1
        n -= 1
    if not n:
        raise ParseError("syntax", "no address given")
    if rest[0] != LT:
        if not lenient:
            raise ParseError("address", "address must be in angle brackets")
        i = find(rest, n, SP)
        if i < 0:
            i = n  # no parameters
        out.path = rest
        out.path_n = i
        out.params = rest + i + 1
        out.params_n = max(n - i - 1, 0)
        return 0
    i = 1
    while i < n:
        c = rest[i]
        if quoted:
            if c == BACKSLASH:
                i += 1
            elif c == DQUOTE:
                quoted = False
        elif c == DQUOTE:
            quoted = True
        elif c == GT:
            break
        i += 1
    if i >= n:
        raise ParseError("address", "missing closing angle bracket")
    if i + 1 < n and rest[i + 1] != SP:
        raise ParseError("syntax", "a space must separate the path from parameters")
    out.path = rest + 1
    out.path_n = i - 1
    out.params = rest + i + 1
    out.params_n = n - i - 1
    return 0


cdef str parse_mailbox(const uchar* path, Py_ssize_t n, bint utf8):
    """Validate a path without brackets; return the mailbox as ``str``."""
    cdef Py_ssize_t colon, hop, i, close, at
    cdef const uchar* domain
    cdef Py_ssize_t domain_n
    if not utf8 and not is_ascii(path, n):
        raise ParseError("utf8", "non-ASCII address requires SMTPUTF8")
    if n and path[0] == AT:
        # A source route (RFC 5321 §4.1.2 A-d-l): accepted and dropped (§C).
        colon = find(path, n, COLON)
        if colon < 0:
            raise ParseError("address", "source route without a colon")
        hop = 0
        for i in range(colon + 1):
            if i == colon or path[i] == COMMA:
                if (
                    i == hop
                    or path[hop] != AT
                    or not valid_domain(path + hop + 1, i - hop - 1, utf8)
                ):
                    raise ParseError("address", "bad source route")
                hop = i + 1
        path += colon + 1
        n -= colon + 1
    if n and path[0] == DQUOTE:
        close = 1
        while close < n:
            if path[close] == BACKSLASH:
                close += 2
                continue
            if path[close] == DQUOTE:
                break
            close += 1
        if close >= n:
            raise ParseError("address", "unterminated quoted local part")
        if close + 1 >= n or path[close + 1] != AT or not valid_quoted(path + 1, close - 1, utf8):
            raise ParseError("address", "bad quoted local part")
        domain, domain_n = path + close + 2, n - close - 2
    else:
        at = find(path, n, AT)
        if at < 0 or not valid_atoms(path, at, utf8):
            raise ParseError("address", "bad local part")
        domain, domain_n = path + at + 1, n - at - 1
    if not valid_domain(domain, domain_n, utf8):
        raise ParseError("address", "bad domain")
    return check_utf8(path, n, utf8, "address")


cdef dict parse_params(const uchar* data, Py_ssize_t n, bint utf8):
    """ESMTP parameters (RFC 5321 §4.1.2): ``KEY[=VALUE]`` separated by spaces."""
    cdef dict params = {}
    cdef Py_ssize_t start = 0, item_n, key_n, value_n, i
    cdef const uchar* item
    cdef const uchar* value
    cdef uchar c
    cdef str name
    while start < n:
        item = data + start
        item_n = find(item, n - start, SP)
        if item_n < 0:
            item_n = n - start
        start += item_n + 1
        if not item_n:
            continue  # runs of spaces
        key_n = find(item, item_n, EQUALS)
        if key_n < 0:
            key_n = item_n
        if not key_n or item[0] == HYPHEN:
            raise ParseError("param", "bad parameter keyword")
        for i in range(key_n):
            if not CHARS[item[i]] & KEYCHAR:
                raise ParseError("param", "bad parameter keyword")
        name = upper_ascii(item, key_n)
        if name in params:
            raise ParseError("param", f"parameter {name} given twice")
        if key_n == item_n:
            params[name] = None
            continue
        # esmtp-value = 1*(%d33-60 / %d62-126), plus UTF-8 with SMTPUTF8
        value = item + key_n + 1
        value_n = item_n - key_n - 1
        if not value_n:
            raise ParseError("param", f"bad value for parameter {name}")
        for i in range(value_n):
            c = value[i]
            if c < 33 or c == EQUALS or c == 127:
                raise ParseError("param", f"bad value for parameter {name}")
        params[name] = check_utf8(value, value_n, utf8, "parameter")
    return params


def parse_mail(args, *, bint lenient=False):
    """Parse the arguments of MAIL: ``FROM:<reverse-path> [params]``."""
    cdef bytes data = as_bytes(args)
    cdef Path path
    cdef bint utf8
    split_command(data, b"FROM:", lenient, &path)
    # The SMTPUTF8 parameter on this very command allows UTF-8 (RFC 6531 §3.4).
    params = parse_params(path.params, path.params_n, True)
    utf8 = "SMTPUTF8" in params
    if not utf8 and not is_ascii(path.params, path.params_n):
        raise ParseError("utf8", "non-ASCII parameter requires SMTPUTF8")
    if not path.path_n:
        return "", params
    return parse_mailbox(path.path, path.path_n, utf8), params


def parse_rcpt(args, *, bint utf8=False, bint lenient=False):
    """Parse the arguments of RCPT: ``TO:<forward-path> [params]``."""
    cdef bytes data = as_bytes(args)
    cdef Path path
    split_command(data, b"TO:", lenient, &path)
    params = parse_params(path.params, path.params_n, utf8)
    if not path.path_n:
        raise ParseError("address", "empty forward-path")
    if path.path_n == 10 and starts_upper(path.path, 10, b"POSTMASTER", 10):
        # RFC 5321 §4.5.1: <Postmaster> needs no domain.
        return PyUnicode_DecodeASCII(<char*>path.path, 10, NULL), params
    return parse_mailbox(path.path, path.path_n, utf8), params


# --- xtext (RFC 3461 §4) -------------------------------------------------------


cdef int hex_value(uchar c) noexcept nogil:
    """The value of an xtext hex digit (uppercase only), or -1."""
    if 48 <= c <= 57:
        return c - 48
    if 65 <= c <= 70:
        return c - 55
    return -1


def xtext_decode(text):
    """Decode xtext: ``+XX`` is the octet with hex value XX."""
    cdef bytes data = text.encode("utf-8")
    cdef const uchar* s = <const uchar*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data), i = 0, out_n = 0
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)  # decoding never grows
    cdef uchar* w = <uchar*>PyBytes_AS_STRING(out)
    cdef int high, low
    cdef uchar c
    while i < n:
        c = s[i]
        if c == PLUS:
            high = hex_value(s[i + 1]) if i + 1 < n else -1
            low = hex_value(s[i + 2]) if i + 2 < n else -1
            if high < 0 or low < 0:
                raise ParseError("param", "bad xtext escape")
            w[out_n] = high * 16 + low
            out_n += 1
            i += 3
            continue
        if c < 33 or c == EQUALS or c > 126:
            raise ParseError("param", "bad character in xtext")
        w[out_n] = c
        out_n += 1
        i += 1
    try:
        return PyUnicode_DecodeUTF8(<char*>w, out_n, NULL)
    except UnicodeDecodeError:
        raise ParseError("param", "xtext is not UTF-8") from None


def xtext_encode(text):
    """Encode ``text`` as xtext; "+", "=" and octets outside 33-126 become ``+XX``."""
    cdef bytes data = text.encode("utf-8")
    cdef const uchar* s = <const uchar*>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data), i, out_n = n
    cdef const char* digits = b"0123456789ABCDEF"
    cdef str out
    cdef uchar* w
    cdef uchar c
    for i in range(n):
        c = s[i]
        if c < 33 or c > 126 or c == PLUS or c == EQUALS:
            out_n += 2
    out = PyUnicode_New(out_n, 127)
    w = <uchar*>PyUnicode_DATA(out)
    for i in range(n):
        c = s[i]
        if c < 33 or c > 126 or c == PLUS or c == EQUALS:
            w[0] = PLUS
            w[1] = digits[c >> 4]
            w[2] = digits[c & 15]
            w += 3
        else:
            w[0] = c
            w += 1
    return out
