"""The wire layer: bytes to tokens and back, in Cython with a pure-Python twin.

``FASTSMTP_NO_EXTENSIONS=1`` forces the pure-Python module; otherwise the
compiled one is used when it is importable. ``IMPLEMENTATION`` says which one
is loaded (``"c"`` or ``"py"``). The contract both honour is the docstring
of ``fastsmtp.wire._py``. ``fastsmtp.protocol.server`` follows the same
choice: with ``"c"`` its compiled build is the one in use.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from . import _py as _impl
from ._defs import (
    BareLineEnding,
    Buffer,
    DataError,
    LineError,
    LineTooLong,
    ParseError,
)

#: ``"c"`` when the compiled module is in use, ``"py"`` for the pure twin
IMPLEMENTATION = "py"
# Type checkers see the pure module; the compiled one has the same API.
if not TYPE_CHECKING and not os.environ.get("FASTSMTP_NO_EXTENSIONS"):
    try:
        from . import _c as _impl

        IMPLEMENTATION = "c"
    except ImportError:  # not built: an sdist without a compiler, a dev tree
        pass

LineReader = _impl.LineReader
DataDecoder = _impl.DataDecoder
DotStuffer = _impl.DotStuffer
dot_stuff = _impl.dot_stuff
parse_command = _impl.parse_command
parse_mail = _impl.parse_mail
parse_rcpt = _impl.parse_rcpt
xtext_decode = _impl.xtext_decode
xtext_encode = _impl.xtext_encode

__all__ = [
    "IMPLEMENTATION",
    "BareLineEnding",
    "Buffer",
    "DataDecoder",
    "DataError",
    "DotStuffer",
    "LineError",
    "LineReader",
    "LineTooLong",
    "ParseError",
    "dot_stuff",
    "parse_command",
    "parse_mail",
    "parse_rcpt",
    "xtext_decode",
    "xtext_encode",
]
