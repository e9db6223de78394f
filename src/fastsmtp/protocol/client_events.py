"""What ``ClientConnection`` returns: replies as received, EHLO extensions, events.

Plain frozen data (the server side's ``events`` are plain data too, but not
frozen: the server makes far more of them); ``protocol/client.py`` holds the
state machine that makes them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .replies import Reply

__all__ = [
    "ClientEvent",
    "ConnectionClosed",
    "Extensions",
    "Replied",
    "SendBody",
    "ServerReply",
    "TransactionDone",
]


@dataclass(frozen=True, slots=True)
class ServerReply:
    """A reply as the client received it (or made it up: ``local``).

    ``enhanced`` is split off each line when the server advertised
    ENHANCEDSTATUSCODES (RFC 2034); ``lines`` are the texts without it.
    """

    code: int
    enhanced: str | None
    lines: tuple[str, ...]
    #: made by the client (a refusal before sending, a lost connection)
    local: bool = False

    @classmethod
    def from_reply(cls, reply: Reply) -> ServerReply:
        """One of the client's own verdicts from the reply table."""
        return cls(reply.code, reply.enhanced, tuple(reply.text.split("\n")), local=True)

    @property
    def text(self) -> str:
        """The lines joined with ``"\\n"``."""
        return "\n".join(self.lines)

    @property
    def ok(self) -> bool:
        """A 2xx reply."""
        return 200 <= self.code < 300

    def __str__(self) -> str:
        prefix = f"{self.enhanced} " if self.enhanced else ""
        return f"{self.code} {prefix}{self.text}"


@dataclass(frozen=True, slots=True)
class Extensions:
    """What an EHLO/LHLO reply advertised: keyword -> its parameters."""

    keywords: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def parse(cls, lines: Sequence[str]) -> Extensions:
        """Read the lines after the greeting line of an EHLO reply (RFC 5321 §4.1.1.1)."""
        keywords: dict[str, tuple[str, ...]] = {}
        for line in lines:
            words = line.upper().split()
            if not words:
                continue
            key, params = words[0], tuple(words[1:])
            if key.startswith("AUTH="):  # the pre-RFC 4954 form some servers still send
                key, params = "AUTH", (key[5:], *params)
            keywords[key] = keywords.get(key, ()) + params
        return cls(keywords)

    def __contains__(self, keyword: str) -> bool:
        return keyword in self.keywords

    @property
    def size_limit(self) -> int | None:
        """The SIZE limit in octets, or None when none was declared (RFC 1870 §4)."""
        params = self.keywords.get("SIZE", ())
        if params and params[0].isdigit() and int(params[0]) > 0:
            return int(params[0])
        return None

    @property
    def auth(self) -> frozenset[str]:
        """The SASL mechanisms AUTH offers (RFC 4954)."""
        return frozenset(self.keywords.get("AUTH", ()))

    @property
    def pipelining(self) -> bool:
        """PIPELINING: command pipelining (RFC 2920)."""
        return "PIPELINING" in self.keywords

    @property
    def eightbitmime(self) -> bool:
        """8BITMIME: 8-bit MIME bodies (RFC 6152)."""
        return "8BITMIME" in self.keywords

    @property
    def smtputf8(self) -> bool:
        """SMTPUTF8: internationalised addresses (RFC 6531)."""
        return "SMTPUTF8" in self.keywords

    @property
    def chunking(self) -> bool:
        """CHUNKING: BDAT (RFC 3030)."""
        return "CHUNKING" in self.keywords

    @property
    def binarymime(self) -> bool:
        """BINARYMIME: binary bodies with BDAT (RFC 3030 §3)."""
        return "BINARYMIME" in self.keywords

    @property
    def starttls(self) -> bool:
        """STARTTLS: TLS (RFC 3207)."""
        return "STARTTLS" in self.keywords

    @property
    def dsn(self) -> bool:
        """DSN: delivery status notifications (RFC 3461)."""
        return "DSN" in self.keywords

    @property
    def enhanced_status_codes(self) -> bool:
        """ENHANCEDSTATUSCODES: enhanced status codes in replies (RFC 2034)."""
        return "ENHANCEDSTATUSCODES" in self.keywords


# --- events -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Replied:
    """The final reply to a direct command (``"GREETING"`` for the banner)."""

    command: str
    reply: ServerReply


@dataclass(frozen=True, slots=True)
class SendBody:
    """The server is ready for the message: call ``send_body`` while ``body_ready``."""


@dataclass(frozen=True, slots=True)
class TransactionDone:
    """The transaction is over: one reply per recipient, in RCPT order."""

    results: tuple[ServerReply, ...]


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The connection is over; close the transport. ``reason`` is for the log."""

    reason: str


ClientEvent = Replied | SendBody | TransactionDone | ConnectionClosed
