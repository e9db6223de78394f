"""Message bodies for the benchmarks, and the per-line reference decoder.

``text(n)`` is realistic message text of at least ``n`` bytes in whole
lines: 76 characters and CRLF, every 25th line starting with a dot (as
quoted-printable soft breaks and signatures do). ``stuffed(n)`` is the same
as it travels after ``DATA``: dot-stuffed, with the terminator.
"""

from __future__ import annotations

from functools import cache

__all__ = ["CHUNK", "MAX_LINE", "chunks", "readline_decode", "stuffed", "text"]

#: bytes per ``feed`` call, as a server reads them
CHUNK = 64 * 1024
#: RFC 5321 §4.5.3.1.6 text line limit, with CRLF
MAX_LINE = 1000

_WORDS = (
    b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
    b"incididunt ut labore et dolore magna aliqua ut enim ad minim veniam quis nostrud"
).split()


@cache
def text(n: int) -> bytes:
    """At least ``n`` bytes of unstuffed message text, in 78-byte lines."""
    lines = []
    for i in range(1, (n + 77) // 78 + 1):
        line = b" ".join(_WORDS[(i * 7 + k) % len(_WORDS)] for k in range(14))
        line = (b"%06d " % i + line + b" " * 76)[:76]
        if i % 25 == 0:
            line = b"." + line[1:]
        lines.append(line + b"\r\n")
    return b"".join(lines)


@cache
def stuffed(n: int) -> bytes:
    """``text(n)`` dot-stuffed (RFC 5321 §4.5.2) and ended with ``.<CRLF>``."""
    body = text(n)
    out = body.replace(b"\r\n.", b"\r\n..")
    if out[:1] == b".":
        out = b"." + out
    return out + b".\r\n"


@cache
def chunks(n: int) -> tuple[bytes, ...]:
    """``stuffed(n)`` cut into ``CHUNK``-byte reads."""
    data = stuffed(n)
    return tuple(data[i : i + CHUNK] for i in range(0, len(data), CHUNK))


def readline_decode(parts: tuple[bytes, ...], max_line_length: int = MAX_LINE) -> list[bytes]:
    """DATA decoded with a Python loop per line, the way aiosmtpd's DATA handler works.

    Readline-style: buffer the input, cut it at each CRLF, stop at ``.<CRLF>``,
    check the line length, strip a leading dot, append the line.
    """
    buffer = bytearray()
    lines: list[bytes] = []
    for part in parts:
        buffer += part
        while True:
            end = buffer.find(b"\r\n")
            if end < 0:
                break
            line = bytes(buffer[: end + 2])
            del buffer[: end + 2]
            if line == b".\r\n":
                return lines
            if len(line) > max_line_length:
                raise ValueError("line too long")
            if line[:1] == b".":
                line = line[1:]
            lines.append(line)
    raise ValueError("no end of data")
