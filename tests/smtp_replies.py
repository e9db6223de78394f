"""SMTP replies as a client sees them, for the protocol and the server tests."""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE = re.compile(rb"^(\d{3})([ -])(.*)$", re.S)
_ENHANCED = re.compile(r"^([245])\.\d{1,3}\.\d{1,3}$")
_QUEUED = re.compile(r"queued as (\S+)")


@dataclass
class WireReply:
    """One (possibly multi-line) reply: the code, and each line's text."""

    code: int
    lines: list[str]

    @property
    def enhanced(self) -> str | None:
        """The enhanced status code starting the last line, if it carries one."""
        first = self.lines[-1].split(" ", 1)[0]
        return first if _ENHANCED.match(first) else None

    @property
    def text(self) -> str:
        """The human-readable text, without the enhanced code on each line."""
        code = self.enhanced
        if code is None:
            return "\n".join(self.lines)
        return "\n".join(line.removeprefix(code + " ") for line in self.lines)

    @property
    def queue_id(self) -> str | None:
        """The id in a ``250 ... queued as ID`` reply."""
        match = _QUEUED.search(self.text)
        return match.group(1) if match else None

    def __str__(self) -> str:
        return f"{self.code} {self.lines}"


def reply_line(raw: bytes) -> tuple[int, bool, str]:
    """``(code, is_last_line, text)`` of one reply line without its CRLF."""
    match = _LINE.match(raw)
    assert match, f"not an SMTP reply line: {raw!r}"
    code, sep, text = match.groups()
    return int(code), sep == b" ", text.decode("utf-8")


def parse_replies(data: bytes) -> list[WireReply]:
    """Split reply bytes into replies; fail on anything that is not a reply line."""
    replies: list[WireReply] = []
    lines: list[str] = []
    assert data == b"" or data.endswith(b"\r\n"), data
    for raw in data.split(b"\r\n")[:-1]:
        code, last, text = reply_line(raw)
        lines.append(text)
        if last:
            replies.append(WireReply(code, lines))
            lines = []
    assert not lines, f"unfinished multi-line reply: {lines!r}"
    return replies
