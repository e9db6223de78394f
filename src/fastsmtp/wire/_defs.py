"""Names shared by both wire implementations: error kinds and exceptions.

Both ``_py`` and ``_c`` import these, so that a caller catches the same
exception class and compares the same error constants whichever
implementation is loaded.
"""

from __future__ import annotations

from enum import IntEnum

#: what the wire functions accept as input (``collections.abc.Buffer`` is 3.12+)
Buffer = bytes | bytearray | memoryview

__all__ = [
    "BareLineEnding",
    "Buffer",
    "DataError",
    "LineError",
    "LineTooLong",
    "ParseError",
]


class DataError(IntEnum):
    """Why a DATA body was refused; the decoder keeps scanning for the end."""

    NONE = 0
    #: the unstuffed body grew past ``max_size`` (RFC 1870: 552 5.3.4)
    TOO_BIG = 1
    #: a text line was longer than ``max_line_length`` (RFC 5321 §4.5.3.1.6)
    LINE_TOO_LONG = 2
    #: a CR not followed by LF, or an LF not preceded by CR (SMTP smuggling)
    BARE_LINE_ENDING = 3


class LineError(Exception):
    """A command line could not be framed; the offending bytes are consumed."""


class LineTooLong(LineError):
    """A command line was longer than the limit (RFC 5321 §4.5.3.1.4)."""


class BareLineEnding(LineError):
    """A command line held a bare CR or was ended by a bare LF."""


class ParseError(ValueError):
    """A command's arguments do not follow the grammar.

    ``kind`` tells the protocol layer which reply to send:

    - ``"syntax"``: the command's shape is wrong (``MAIL`` without ``FROM:``)
    - ``"address"``: the path or mailbox is malformed
    - ``"utf8"``: the address holds non-ASCII but SMTPUTF8 was not requested
    - ``"param"``: an ESMTP parameter is malformed or repeated
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
