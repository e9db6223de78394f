"""Status strings (``"550 5.1.1 Unknown user"``) to ``Reply`` objects.

aiosmtpd hooks answer with the reply line itself, as text. fastsmtp speaks
ENHANCEDSTATUSCODES, so every reply after the greeting must carry an
enhanced status code (RFC 2034 §3): a status string without one gets the
default for its command (success) or its reply code (failure) from the
table below.
"""

from __future__ import annotations

import re

from ..protocol.replies import Reply

__all__ = ["StatusError", "parse_status"]

_LINE = re.compile(r"(?P<code>\d{3})(?:[ -](?P<text>.*))?\Z", re.S)
_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}\Z")

#: Enhanced codes for status strings that carry none, by reply code (RFC 3463 §3.6:
#: the 50x replies are syntax and sequence errors). Any other code gets ``X.0.0``.
DEFAULT_ENHANCED = {
    500: "5.5.2",
    501: "5.5.4",
    502: "5.5.1",
    503: "5.5.1",
    504: "5.5.4",
}


class StatusError(TypeError):
    """A hook returned something that is not an SMTP status string."""


def parse_status(status: object, *, success: str | None = "2.0.0") -> Reply:
    """The ``Reply`` a status string stands for.

    ``status`` is what an aiosmtpd hook returned: ``"250 OK"``, ``"550 5.1.1
    Unknown user"``, several lines joined with CRLF (``"250-a\\r\\n250 b"``),
    or the same as bytes. Only 2xx, 4xx and 5xx are accepted. A 2xx without
    an enhanced code gets ``success``; a 4xx/5xx gets ``DEFAULT_ENHANCED``'s
    entry or ``4.0.0``/``5.0.0``. Raises ``StatusError`` for anything else.
    """
    if isinstance(status, (bytes, bytearray)):
        status = bytes(status).decode("utf-8", "replace")
    if not isinstance(status, str):
        raise StatusError(f"expected a status string such as '250 OK', got {status!r}")
    lines = status.replace("\r\n", "\n").rstrip("\n").split("\n")
    codes: list[int] = []
    texts: list[str] = []
    for line in lines:
        match = _LINE.match(line)
        if match is None:
            raise StatusError(f"not an SMTP status string: {status!r}")
        codes.append(int(match["code"]))
        texts.append(match["text"] or "")
    code = codes[-1]
    if code // 100 not in (2, 4, 5) or any(c != code for c in codes):
        raise StatusError(f"a hook's reply must be one 2xx, 4xx or 5xx code, not {status!r}")
    first = texts[-1].split(" ", 1)[0]
    enhanced: str | None
    if _ENHANCED.match(first) and first[0] == str(code)[0]:
        enhanced = first
        texts = [t[len(first) :].lstrip(" ") if t.split(" ", 1)[0] == first else t for t in texts]
    elif code < 300:
        enhanced = success
    else:
        enhanced = DEFAULT_ENHANCED.get(code, f"{code // 100}.0.0")
    return Reply(code, enhanced, "\n".join(texts))
