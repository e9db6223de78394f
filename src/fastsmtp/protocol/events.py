"""Events that ``ServerConnection.next_event()`` returns.

Events marked *decision* wait for ``ServerConnection.respond()`` before the
connection reads further: the I/O layer asks the handler, then answers.
The others are notices; the connection has already replied where a reply
was due.

Events are plain slotted dataclasses, to be read, not changed: a decision
event waits for ``respond()``, which takes its values. They are not frozen
because the connection makes several per message, and a frozen dataclass
sets each field through ``object.__setattr__``: measured, that was 5% of the
instructions of a 1 KiB session.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..session import Envelope, RecipientDSN
from .replies import Reply

__all__ = [
    "DATA_STARTED",
    "NEED_DATA",
    "Atrn",
    "AuthResult",
    "Authenticate",
    "BodyChunk",
    "Closed",
    "DataStarted",
    "Etrn",
    "Event",
    "Expand",
    "Hello",
    "MailFrom",
    "MessageAborted",
    "MessageEnd",
    "NeedData",
    "RcptTo",
    "Reset",
    "StartTLS",
    "Verify",
]


class NeedData:
    """No complete event is buffered: feed more bytes."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = NeedData()


@dataclass(slots=True)
class Hello:
    """*Decision*: HELO, EHLO or LHLO (``verb``) with the client's name."""

    verb: str
    host_name: str


@dataclass(slots=True)
class MailFrom:
    """*Decision*: MAIL FROM, parsed and checked against the advertised extensions.

    ``dsn_ret`` and ``dsn_envid`` are RET and ENVID typed (RFC 3461), if given.
    """

    address: str
    options: dict[str, str | None]
    dsn_ret: str | None = None
    dsn_envid: str | None = None


@dataclass(slots=True)
class RcptTo:
    """*Decision*: RCPT TO, parsed; ``dsn`` holds NOTIFY/ORCPT typed."""

    address: str
    options: dict[str, str | None]
    dsn: RecipientDSN = field(default_factory=RecipientDSN)


@dataclass(slots=True)
class Verify:
    """*Decision*: VRFY; the default answer is 252 (RFC 5321 §3.5.3)."""

    argument: str


@dataclass(slots=True)
class Expand:
    """*Decision*: EXPN; the default answer is 502 (RFC 5321 §3.5.2)."""

    argument: str


@dataclass(slots=True)
class Etrn:
    """*Decision*: ETRN (RFC 1985); the default answer is 458 (no queue to start).

    ``node`` is the argument as given; ``name`` the domain (lowercased) or
    queue name; ``kind`` says which: ``domain``, ``subdomains`` (``@domain``)
    or ``queue`` (``#name``).
    """

    node: str
    name: str
    kind: Literal["domain", "subdomains", "queue"]


@dataclass(slots=True)
class Atrn:
    """*Decision*: ATRN (RFC 2645) from an authenticated client; default answer 451.

    ``domains`` are those asked for (lowercased; empty: all of the client's).
    Accepting (a 2xx, by default ``250 OK now reversing the connection``)
    ends the server side: the I/O layer then speaks as the SMTP client on the
    same transport and delivers the mail held for those domains.
    """

    domains: tuple[str, ...]


@dataclass(slots=True)
class DataStarted:
    """DATA was accepted with 354; body chunks follow."""


# It has no fields (nor, being slotted, room for any): one serves every message.
DATA_STARTED = DataStarted()


@dataclass(slots=True)
class BodyChunk:
    """Part of the message body, dot-unstuffed, in arrival order."""

    data: bytes


@dataclass(slots=True)
class MessageEnd:
    """*Decision*: the body is complete and valid; accept or refuse it.

    ``size`` is the message's length in octets as received: after
    dot-unstuffing for DATA, the sum of the chunks for BDAT.
    """

    size: int


@dataclass(slots=True)
class MessageAborted:
    """The body was refused by the protocol (``reply`` was sent); drop it."""

    reply: Reply


@dataclass(slots=True)
class Reset:
    """The transaction was abandoned (RSET, or HELO/EHLO during one).

    ``envelope`` is the abandoned transaction, as far as it had got.
    """

    envelope: Envelope


@dataclass(slots=True)
class StartTLS:
    """STARTTLS was accepted with 220: start the TLS handshake, then call
    ``ServerConnection.tls_started()`` (RFC 3207 §4)."""


@dataclass(slots=True)
class Authenticate:
    """*Decision*: AUTH (RFC 4954) needs the application's word on ``username``.

    With a ``password`` (PLAIN, LOGIN), check it; with ``password=None``
    (SCRAM-SHA-256), give the user's SCRAM secrets. Answer with
    ``ServerConnection.respond_auth(identity or secrets or None)``, or
    refuse with ``respond(reply)`` (e.g. 454 on a temporary failure).
    """

    mechanism: str
    username: str
    password: str | None = field(repr=False)


@dataclass(slots=True)
class AuthResult:
    """An AUTH exchange ended: ``identity`` is who the client proved to be,
    ``None`` when the credentials were wrong (235 or 535 was sent)."""

    mechanism: str
    username: str
    identity: str | None


@dataclass(slots=True)
class Closed:
    """The connection is over (QUIT, peer EOF, timeout, errors); close the transport."""

    reason: str


Event = (
    Hello
    | MailFrom
    | RcptTo
    | Verify
    | Expand
    | Etrn
    | Atrn
    | DataStarted
    | BodyChunk
    | MessageEnd
    | MessageAborted
    | Reset
    | StartTLS
    | Authenticate
    | AuthResult
    | Closed
)
