"""Pure-Python reference implementation of the wire layer.

Theory of operation
===================

The wire layer turns inbound bytes into tokens and outbound bodies into
bytes. It knows nothing of SMTP state; ``protocol/`` drives it. It exists
twice: this module is the readable reference, ``_c.pyx`` the compiled one.
Both honour the contract below exactly, and the test suite runs every wire
test against both and feeds both the same random streams split at the same
random points (``tests/wire``).

``LineReader(max_line_length=512, strict=True)``
    Frames command lines across arbitrary chunk boundaries.
    ``feed(data)`` buffers bytes. ``next_line()`` returns the next complete
    line without its line ending, or ``None`` when no complete line is
    buffered. Limits count the line ending: the default admits 510 octets of
    command plus CRLF (RFC 5321 §4.5.3.1.4).

    - A line longer than the limit is discarded, including whatever of it
      arrives later, up to and including its LF; then ``next_line()``
      raises ``LineTooLong`` once, in order with the lines around it. After
      each ``next_line()`` that returns ``None``, at most
      ``max_line_length`` bytes of an unfinished line stay buffered; while
      a line is being discarded, a ``feed`` without its LF buffers nothing.
    - ``strict=True`` (the default): a line ends only at CRLF. A bare LF
      ends the offending line, which is consumed and reported as
      ``BareLineEnding``; a CR anywhere else in a line is reported the same
      way when the line ends.
    - ``strict=False``: a bare LF also ends a line; a CR just before the LF
      is stripped; other CRs stay in the line.
    - ``take(n)`` removes and returns up to ``n`` buffered bytes (BDAT
      payloads), ``drain()`` removes and returns everything buffered (the
      start of DATA, the discard after STARTTLS) and ends any discard in
      progress, ``len(reader)`` is the
      number of buffered bytes.

``DataDecoder(max_size=None, max_line_length=1000, strict=True, keep_body=True)``
    Decodes one DATA body, starting just after ``DATA<CRLF>``, so at the
    start of a line. ``feed(data)`` returns ``(body, done, leftover)``:
    ``body`` is the unstuffed body decoded from the bytes fed so far that
    was not returned before; ``done`` is true once the terminator has been
    seen; ``leftover`` is whatever followed the terminator (pipelined
    commands), only when ``done``. Feeding after ``done`` raises
    ``ValueError``. ``keep_body=False`` is for a body nobody reads: ``body``
    is always ``b""`` and no copy of it is made, while ``done``,
    ``leftover``, ``error`` and ``size`` are what they would have been.

    - The terminator is exactly CRLF "." CRLF, where the first CRLF ends the
      last body line (or the DATA command, for an empty body). The body
      keeps that last CRLF. ``\\n.\\n``, ``\\r.\\r``, ``\\n.\\r\\n`` and
      ``\\r\\n.\\n`` never end the body (SMTP smuggling, CVE-2023-51764).
    - Dot-unstuffing (RFC 5321 §4.5.2): a line that starts with "." loses
      that first ".".
    - ``error`` is the first ``DataError`` met, or ``DataError.NONE``. Once
      it is set the decoder only looks for the terminator: what ``feed``
      returns as ``body`` must then be discarded by the caller, and memory
      stays bounded by a few bytes, whatever arrives. ``size`` is the
      length of the unstuffed body, exact only while ``error`` is NONE.
    - ``strict=True``: a bare CR or bare LF anywhere is ``BARE_LINE_ENDING``.
      ``strict=False``: each bare LF is treated as CRLF (a CR is inserted
      before it) for unstuffing, line length and output, and bare CRs pass
      through as data; the terminator must still be exact.
    - A line (counted with its line ending, after normalising) longer than
      ``max_line_length`` is ``LINE_TOO_LONG``; ``None`` or 0 disables the
      check. A body longer than ``max_size`` is ``TOO_BIG``.
    - Work is done per *region*: the bytes up to the last LF in the buffered
      input are checked (bare line endings, then line length, then size)
      and decoded together; the rest waits for more input. Both
      implementations follow this order, so they report the same first
      error for the same feeds.

``DotStuffer()`` / ``dot_stuff(body)``
    The encoder: ``encode(chunk)`` returns the chunk with a "." added before
    every line that starts with "." (a line starts after any LF),
    ``finish()`` the terminator: ".<CRLF>" when the body was empty or ended
    with CRLF, else CRLF "." CRLF, so that a strict receiver always sees
    the exact terminator (a body ending in a bare LF would otherwise end in
    ``\n.\r\n``, which never ends DATA). ``dot_stuff(body)`` is both for a
    whole body.

``parse_command(line) -> (verb, args)``
    ``verb``: the bytes before the first space, ASCII-uppercased, as
    ``str`` (undecodable bytes become U+FFFD, an unknown verb). ``args``:
    the bytes after it with surrounding spaces removed.

``parse_mail(args, *, lenient=False)`` / ``parse_rcpt(args, *, utf8=False, lenient=False)``
    Parse ``FROM:<reverse-path> [params]`` / ``TO:<forward-path> [params]``
    (RFC 5321 §4.1.2, §3.3). Return ``(address, params)``: the mailbox as
    ``str`` (the source route dropped, a quoted local part kept as written,
    ``""`` for ``<>``), and a dict of the ESMTP parameters, keywords
    uppercased, values ``str`` or ``None``. The keyword is matched without
    case and spaces after the colon are tolerated. ``<>`` is accepted only
    by ``parse_mail``, ``<Postmaster>`` (no domain) only by ``parse_rcpt``.
    Non-ASCII is accepted in addresses and parameter values only with
    SMTPUTF8 (RFC 6531): for MAIL when the same command carries the
    ``SMTPUTF8`` parameter, for RCPT when ``utf8`` is true. ``lenient``
    accepts a path without angle brackets. Errors raise ``ParseError``
    with a ``kind`` for the reply.

``xtext_decode(text)`` / ``xtext_encode(text)``
    RFC 3461 §4 xtext, for ENVID, ORCPT and AUTH parameter values.
    ``xtext_decode`` raises ``ParseError("param", ...)`` on bad input.
"""

from __future__ import annotations

import ipaddress

from ._defs import BareLineEnding, Buffer, DataError, LineTooLong, ParseError

__all__ = [
    "DataDecoder",
    "DotStuffer",
    "LineReader",
    "dot_stuff",
    "parse_command",
    "parse_mail",
    "parse_rcpt",
    "xtext_decode",
    "xtext_encode",
]

_CR = 13
_LF = 10


class LineReader:
    """Split an inbound byte stream into command lines (see module doc)."""

    __slots__ = ("_buf", "_discarding", "max_line_length", "strict")

    def __init__(self, max_line_length: int = 512, strict: bool = True) -> None:
        if max_line_length < 3:
            raise ValueError("max_line_length must be at least 3")
        self.max_line_length = max_line_length
        self.strict = strict
        self._buf = bytearray()
        self._discarding = False

    def __len__(self) -> int:
        return len(self._buf)

    def feed(self, data: Buffer) -> None:
        """Buffer ``data``; a line being discarded does not grow the buffer."""
        self._buf += data
        if self._discarding and self._buf.find(b"\n") < 0:
            self._buf.clear()

    def next_line(self) -> bytes | None:
        """Return the next line without its ending, or None if none is complete."""
        buf = self._buf
        end = buf.find(b"\n")
        if end < 0:
            if len(buf) >= self.max_line_length and not self._discarding:
                # No LF within the limit: this line is too long whatever follows.
                self._discarding = True
                buf.clear()
            return None
        if self._discarding:
            del buf[: end + 1]
            self._discarding = False
            raise LineTooLong("line too long")
        has_cr = end > 0 and buf[end - 1] == _CR
        line = bytes(buf[: end - 1 if has_cr else end])
        del buf[: end + 1]
        if end + 1 > self.max_line_length:
            raise LineTooLong("line too long")
        if self.strict and (not has_cr or _CR in line):
            raise BareLineEnding("bare CR or LF in command line")
        return line

    def take(self, n: int) -> bytes:
        """Remove and return up to ``n`` buffered bytes."""
        chunk = bytes(self._buf[:n])
        del self._buf[:n]
        return chunk

    def drain(self) -> bytes:
        """Remove and return every buffered byte."""
        chunk = bytes(self._buf)
        self._buf.clear()
        self._discarding = False
        return chunk


class DataDecoder:
    """Streaming DATA decoder: dot-unstuffing and end detection (see module doc)."""

    __slots__ = (
        "_after_crlf",
        "_midline",
        "_pending",
        "done",
        "error",
        "keep_body",
        "max_line_length",
        "max_size",
        "size",
        "strict",
    )

    def __init__(
        self,
        max_size: int | None = None,
        max_line_length: int | None = 1000,
        strict: bool = True,
        keep_body: bool = True,
    ) -> None:
        self.max_size = max_size
        self.max_line_length = max_line_length or 0
        self.strict = strict
        self.keep_body = keep_body
        self.size = 0
        self.error = DataError.NONE
        self.done = False
        self._pending = b""
        # True when _pending does not start at a line start: the start of the
        # line was dropped after an error.
        self._midline = False
        # True when the byte before _pending ended a CRLF (or DATA<CRLF>): only
        # then can a "." line there be the terminator; after a bare LF it is
        # "\n.\r\n", which must never end the body (SMTP smuggling).
        self._after_crlf = True

    def feed(self, data: Buffer) -> tuple[bytes, bool, bytes]:
        """Decode ``data``; return ``(body, done, leftover)``."""
        if self.done:
            raise ValueError("feed() after the end of data")
        buf = self._pending + bytes(data)
        if not self._midline and self._after_crlf and buf[:3] == b".\r\n":
            self.done = True
            self._pending = b""
            return b"", True, buf[3:]
        end = buf.find(b"\r\n.\r\n")
        if end >= 0:
            self.done = True
            self._pending = b""
            return self._region(buf[: end + 2]), True, buf[end + 5 :]
        cut = buf.rfind(b"\n") + 1
        body = b""
        if cut:
            self._after_crlf = buf.endswith(b"\r\n", 0, cut)
            body = self._region(buf[:cut])
        self._keep(buf[cut:])
        return body, False, b""

    def _fail(self, error: DataError) -> bytes:
        if not self.error:
            self.error = error
        return b""

    def _region(self, region: bytes) -> bytes:
        """Check and decode whole lines (``region`` ends with LF)."""
        midline = self._midline
        self._midline = False
        if self.error:
            return b""
        if self.strict:
            lines = region.count(b"\n")
            if region.count(b"\r") != lines or region.count(b"\r\n") != lines:
                return self._fail(DataError.BARE_LINE_ENDING)
        else:
            region = region.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        limit = self.max_line_length
        # Each line keeps its LF in this count, hence the +1.
        if limit and len(region) >= limit and max(map(len, region.split(b"\n"))) + 1 > limit:
            return self._fail(DataError.LINE_TOO_LONG)
        if not midline and region[:1] == b".":
            region = region[1:]
        body = region.replace(b"\r\n.", b"\r\n")
        self.size += len(body)
        if self.max_size is not None and self.size > self.max_size:
            return self._fail(DataError.TOO_BIG)
        return body if self.keep_body else b""

    def _keep(self, rest: bytes) -> None:
        """Hold the unfinished last line until its LF arrives."""
        # "." and ".\r" may begin the terminator rather than a line: they are
        # checked, if need be, once their line is complete.
        if not self.error and rest not in (b".", b".\r"):
            limit = self.max_line_length
            if limit and len(rest) >= limit:
                self._fail(DataError.LINE_TOO_LONG)
            elif self.max_size is not None and len(rest) > self.max_size:
                self._fail(DataError.TOO_BIG)
        if self.error and len(rest) > 2:
            # Only the terminator matters now. This line is not ".", so a
            # terminator can only start at its last byte, if that is a CR.
            rest = rest[-1:] if rest[-1] == _CR else b""
            self._midline = True
        self._pending = rest


class DotStuffer:
    """Streaming dot-stuffing encoder (RFC 5321 §4.5.2)."""

    __slots__ = ("_at_line_start", "_tail")

    def __init__(self) -> None:
        self._at_line_start = True
        self._tail = b""  # the last two bytes encoded, for finish()

    def encode(self, data: Buffer) -> bytes:
        """Return ``data`` with a "." added before each line that starts with "."."""
        chunk = bytes(data)
        if not chunk:
            return b""
        out = chunk.replace(b"\n.", b"\n..")
        if self._at_line_start and chunk[0] == 46:
            out = b"." + out
        self._at_line_start = chunk[-1] == _LF
        self._tail = (self._tail + chunk[-2:])[-2:]
        return out

    def finish(self) -> bytes:
        """Return the end-of-data terminator for what was encoded."""
        return b".\r\n" if self._tail in (b"", b"\r\n") else b"\r\n.\r\n"


def dot_stuff(body: Buffer) -> bytes:
    """Dot-stuff a whole body and append the terminator."""
    stuffer = DotStuffer()
    return stuffer.encode(body) + stuffer.finish()


def parse_command(line: Buffer) -> tuple[str, bytes]:
    """Split a command line into its uppercased verb and its arguments."""
    data = bytes(line)
    space = data.find(b" ")
    if space < 0:
        verb, args = data, b""
    else:
        verb, args = data[:space], data[space + 1 :].strip(b" ")
    return verb.decode("ascii", "replace").upper(), args


# --- addresses -----------------------------------------------------------

# RFC 5322 atext: ALPHA / DIGIT / "!#$%&'*+-/=?^_`{|}~"
_ATEXT = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
)
_LETDIG = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_KEYCHARS = _LETDIG | {ord("-")}


def _bad(kind: str, message: str) -> ParseError:
    return ParseError(kind, message)


def _check_utf8(data: bytes, utf8: bool, what: str) -> str:
    """Decode ``data``; non-ASCII needs SMTPUTF8 and must be valid UTF-8."""
    if data.isascii():
        return data.decode("ascii")
    if not utf8:
        raise _bad("utf8", f"non-ASCII {what} requires SMTPUTF8")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(
            "address" if what == "address" else "param", f"invalid UTF-8 in {what}"
        ) from None


def _valid_atoms(text: bytes, utf8: bool) -> bool:
    """Dot-string (RFC 5321 §4.1.2): atoms of atext joined by single dots."""
    for atom in text.split(b"."):
        if not atom:
            return False
        for c in atom:
            if c not in _ATEXT and not (utf8 and c >= 0x80):
                return False
    return True


def _valid_quoted(text: bytes, utf8: bool) -> bool:
    """Quoted-string without its quotes: qtextSMTP or backslash pairs."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == 92:  # backslash: quoted-pairSMTP = "\" %d32-126
            if i + 1 >= n or not 32 <= text[i + 1] <= 126:
                return False
            i += 2
            continue
        if c == 34 or not (32 <= c <= 126 or (utf8 and c >= 0x80)):
            return False
        i += 1
    return True


def _valid_domain(domain: bytes, utf8: bool) -> bool:
    """Domain (sub-domains of let-dig and hyphens) or an address literal."""
    if domain[:1] == b"[":
        return _valid_literal(domain)
    if not domain or len(domain) > 255:
        return False
    for label in domain.split(b"."):
        if not label or label[0] == 45 or label[-1] == 45:
            return False
        for c in label:
            if c not in _KEYCHARS and not (utf8 and c >= 0x80):
                return False
    return True


def _valid_literal(literal: bytes) -> bool:
    """address-literal (RFC 5321 §4.1.3): IPv4, IPv6: or a general literal."""
    if len(literal) < 3 or literal[-1] != 93:
        return False
    inner = literal[1:-1]
    if not inner.isascii():
        return False
    text = inner.decode("ascii")
    if text[:5].lower() == "ipv6:":
        try:
            ipaddress.IPv6Address(text[5:])
        except ValueError:
            return False
        return True
    if text[:1].isdigit():
        try:
            ipaddress.IPv4Address(text)
        except ValueError:
            return False
        return True
    tag, colon, content = text.partition(":")
    if not colon or not content or not _valid_atoms(tag.encode(), False):
        return False
    return all(33 <= ord(c) <= 90 or 94 <= ord(c) <= 126 for c in content)


def _split_path(rest: bytes, lenient: bool) -> tuple[bytes, bytes]:
    """Split ``<path> params`` into the path (no brackets) and the params."""
    if not rest:
        raise _bad("syntax", "no address given")
    if rest[:1] != b"<":
        if not lenient:
            raise _bad("address", "address must be in angle brackets")
        space = rest.find(b" ")
        if space < 0:
            return rest, b""
        return rest[:space], rest[space + 1 :]
    i, n, quoted = 1, len(rest), False
    while i < n:
        c = rest[i]
        if quoted:
            if c == 92:
                i += 1
            elif c == 34:
                quoted = False
        elif c == 34:
            quoted = True
        elif c == 62:
            break
        i += 1
    else:
        raise _bad("address", "missing closing angle bracket")
    params = rest[i + 1 :]
    if params and params[:1] != b" ":
        raise _bad("syntax", "a space must separate the path from parameters")
    return rest[1:i], params


def _parse_mailbox(path: bytes, utf8: bool) -> str:
    """Validate a path without brackets; return the mailbox as ``str``."""
    if not utf8 and not path.isascii():
        raise _bad("utf8", "non-ASCII address requires SMTPUTF8")
    if path[:1] == b"@":
        # A source route (RFC 5321 §4.1.2 A-d-l): accepted and dropped (§C).
        colon = path.find(b":")
        if colon < 0:
            raise _bad("address", "source route without a colon")
        for hop in path[:colon].split(b","):
            if hop[:1] != b"@" or not _valid_domain(hop[1:], utf8):
                raise _bad("address", "bad source route")
        path = path[colon + 1 :]
    if path[:1] == b'"':
        close = 1
        while close < len(path):
            if path[close] == 92:
                close += 2
                continue
            if path[close] == 34:
                break
            close += 1
        else:
            raise _bad("address", "unterminated quoted local part")
        local, rest = path[: close + 1], path[close + 1 :]
        if rest[:1] != b"@" or not _valid_quoted(local[1:-1], utf8):
            raise _bad("address", "bad quoted local part")
        domain = rest[1:]
    else:
        local, at, domain = path.partition(b"@")
        if not at or not _valid_atoms(local, utf8):
            raise _bad("address", "bad local part")
    if not _valid_domain(domain, utf8):
        raise _bad("address", "bad domain")
    return _check_utf8(path, utf8, "address")


def _parse_params(data: bytes, utf8: bool) -> dict[str, str | None]:
    """ESMTP parameters (RFC 5321 §4.1.2): ``KEY[=VALUE]`` separated by spaces."""
    params: dict[str, str | None] = {}
    for item in data.split(b" "):
        if not item:
            continue
        key, eq, value = item.partition(b"=")
        if not key or key[0] == 45 or any(c not in _KEYCHARS for c in key):
            raise _bad("param", "bad parameter keyword")
        name = key.decode("ascii").upper()
        if name in params:
            raise _bad("param", f"parameter {name} given twice")
        if not eq:
            params[name] = None
            continue
        # esmtp-value = 1*(%d33-60 / %d62-126), plus UTF-8 with SMTPUTF8
        if not value or any((c < 33 or c == 61 or c == 127) for c in value):
            raise _bad("param", f"bad value for parameter {name}")
        params[name] = _check_utf8(value, utf8, "parameter")
    return params


def _parse_path_command(
    args: Buffer, keyword: bytes, utf8: bool | None, lenient: bool
) -> tuple[bytes, dict[str, str | None], bool]:
    data = bytes(args)
    if data[: len(keyword)].upper() != keyword:
        raise _bad("syntax", f"expected {keyword.decode()}")
    rest = data[len(keyword) :].lstrip(b" ")
    path, param_bytes = _split_path(rest, lenient)
    if utf8 is None:
        # MAIL: the SMTPUTF8 parameter on this very command allows UTF-8.
        params = _parse_params(param_bytes, True)
        utf8 = "SMTPUTF8" in params
        if not utf8 and not param_bytes.isascii():
            raise _bad("utf8", "non-ASCII parameter requires SMTPUTF8")
    else:
        params = _parse_params(param_bytes, utf8)
    return path, params, utf8


def parse_mail(args: Buffer, *, lenient: bool = False) -> tuple[str, dict[str, str | None]]:
    """Parse the arguments of MAIL: ``FROM:<reverse-path> [params]``."""
    path, params, utf8 = _parse_path_command(args, b"FROM:", None, lenient)
    if not path:
        return "", params
    return _parse_mailbox(path, utf8), params


def parse_rcpt(
    args: Buffer, *, utf8: bool = False, lenient: bool = False
) -> tuple[str, dict[str, str | None]]:
    """Parse the arguments of RCPT: ``TO:<forward-path> [params]``."""
    path, params, _ = _parse_path_command(args, b"TO:", utf8, lenient)
    if not path:
        raise _bad("address", "empty forward-path")
    if path.lower() == b"postmaster":
        return path.decode("ascii"), params
    return _parse_mailbox(path, utf8), params


# --- xtext (RFC 3461 §4) -------------------------------------------------

_HEX = b"0123456789ABCDEF"


def xtext_decode(text: str) -> str:
    """Decode xtext: ``+XX`` is the octet with hex value XX."""
    data = text.encode("utf-8")
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        c = data[i]
        if c == 43:  # "+"
            pair = data[i + 1 : i + 3]
            if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
                raise _bad("param", "bad xtext escape")
            out.append(int(pair, 16))
            i += 3
            continue
        if c < 33 or c == 61 or c > 126:
            raise _bad("param", "bad character in xtext")
        out.append(c)
        i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("param", "xtext is not UTF-8") from None


def xtext_encode(text: str) -> str:
    """Encode ``text`` as xtext; "+", "=" and octets outside 33-126 become ``+XX``."""
    out = []
    for c in text.encode("utf-8"):
        if c < 33 or c > 126 or c == 43 or c == 61:
            out.append(f"+{c:02X}")
        else:
            out.append(chr(c))
    return "".join(out)
