# cython: language_level=3
"""C-level declarations of ``fastsmtp.wire._c``; the behaviour is in ``_c.pyx``."""

from cpython.object cimport PyObject

ctypedef unsigned char uchar

cdef extern from "Python.h":
    # Out-of-range integers clip to PY_SSIZE_T_MIN/MAX, as slice bounds do.
    Py_ssize_t PyNumber_AsSsize_t(object o, PyObject* exc) except? -1
    # Unchecked: the callers decide what a failure means.
    int try_get_buffer "PyObject_GetBuffer"(object obj, Py_buffer* view, int flags) noexcept
    # A raw reference, as _PyBytes_Resize needs.
    PyObject* new_bytes "PyBytes_FromStringAndSize"(const char* data, Py_ssize_t size) except NULL
    char* bytes_data "PyBytes_AS_STRING"(PyObject* obj) noexcept

cdef enum:
    LF = 10
    CR = 13
    SP = 32
    DQUOTE = 34
    PLUS = 43
    COMMA = 44
    HYPHEN = 45
    DOT = 46
    COLON = 58
    LT = 60
    EQUALS = 61
    GT = 62
    AT = 64
    LBRACKET = 91
    BACKSLASH = 92
    RBRACKET = 93

cdef enum:
    # Scans and copies longer than this release the GIL; shorter ones would
    # pay more for the switch than they give other threads.
    NOGIL_MIN = 64 * 1024
    # A buffer that empties gives its memory back when it grew past this.
    KEEP_CAPACITY = 64 * 1024

# DataDecoder._error: an index into ERRORS, the DataError members it reports.
cdef enum:
    ERR_NONE
    ERR_TOO_BIG
    ERR_LINE_TOO_LONG
    ERR_BARE_LINE_ENDING

# Character classes of CHARS.
cdef enum:
    ATEXT = 1  # RFC 5322 atext: ALPHA / DIGIT / "!#$%&'*+-/=?^_`{|}~"
    KEYCHAR = 2  # let-dig / "-": ESMTP keywords and domain labels (RFC 5321 §4.1.2)


cdef struct Buf:
    uchar* data  # PyMem_Raw memory, so that it can be used without the GIL
    Py_ssize_t start  # first live byte
    Py_ssize_t end  # one past the last live byte
    Py_ssize_t cap


cdef struct Region:
    Py_ssize_t cut  # end of the region in the new data: just past its last LF
    Py_ssize_t after  # start of what follows the terminator, or -1
    Py_ssize_t dots  # stuffing dots removed
    Py_ssize_t crs  # CRs inserted before bare LFs (strict=False)
    bint bare  # a bare CR or LF (strict=True)
    bint too_long  # a line longer than the limit
    bint crlf  # the region's last LF ends a CRLF


cdef struct Path:
    const uchar* path  # without its angle brackets
    Py_ssize_t path_n
    const uchar* params
    Py_ssize_t params_n


cdef class LineReader:
    cdef readonly object max_line_length
    cdef readonly bint strict
    cdef Py_ssize_t _limit
    cdef Buf _buf
    cdef bint _discarding
    # Set while a method may let go of the GIL: the buffer must not move.
    cdef bint _busy

    # What the compiled state machine calls per line: C calls from there.
    cpdef feed(self, data)
    cpdef next_line(self)
    cpdef bytes drain(self)


cdef class DataDecoder:
    cdef readonly object max_size
    cdef readonly object max_line_length
    cdef readonly bint strict
    cdef readonly bint keep_body
    cdef readonly Py_ssize_t size
    cdef readonly bint done
    cdef int _error
    cdef bint _has_max_size
    cdef Py_ssize_t _max_size
    cdef Py_ssize_t _limit
    # The unfinished last line, _py's _pending (its start is always 0).
    cdef Buf _pending
    # True when _pending does not start at a line start: the start of the
    # line was dropped after an error.
    cdef bint _midline
    # True when the byte before _pending ended a CRLF (or DATA<CRLF>): only
    # then can a "." line there be the terminator.
    cdef bint _after_crlf
    # Set during feed(), which may let go of the GIL: _pending must not move.
    cdef bint _busy

    cpdef tuple feed(self, data)
    cdef tuple _feed(self, const uchar* data, Py_ssize_t n)
    cdef void _walk_released(
        self, const uchar* data, Py_ssize_t n, bint clean, PyObject* out, Region* region
    ) noexcept
    cdef void _walk(
        self, const uchar* data, Py_ssize_t n, bint clean, uchar* out, Region* region
    ) noexcept nogil
    cdef void _fail(self, int error) noexcept
    cdef int _keep(self, const uchar* data, Py_ssize_t n) except -1


cdef class DotStuffer:
    cdef bint _at_line_start
    cdef bint _empty
    cdef bint _ends_cr
    cdef bint _ends_crlf
