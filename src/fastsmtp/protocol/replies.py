"""Every reply fastsmtp sends, in one table.

A ``Reply`` is a code, an enhanced status code (RFC 3463) and text. RFC 2034
§3 puts an enhanced code on every 2xx, 4xx and 5xx reply except the greeting
and the answers to HELO/EHLO/LHLO; those, and the 354 and 334 intermediate
replies, have ``enhanced=None``.

Code elsewhere refers to these constants, never to literal codes, so that
what the server says can be read (and changed) here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["Reply"]


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP reply: ``Reply(550, "5.1.1", "No such user here")``.

    ``text`` may hold several lines separated by ``"\\n"``; each is sent as
    one line of a multi-line reply (RFC 5321 §4.2.1).
    """

    code: int
    enhanced: str | None
    text: str
    # The wire form, computed once: most replies are the constants below.
    _wire: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise ValueError(f"SMTP reply code must be 200-599, not {self.code}")
        if self.enhanced is not None and self.enhanced[:1] != str(self.code)[0]:
            raise ValueError(
                f"enhanced status {self.enhanced!r} must start with the class "
                f"of reply code {self.code}"
            )
        prefix = f"{self.enhanced} " if self.enhanced else ""
        if "\n" not in self.text:  # most replies, and the per-message "queued as"
            wire = f"{self.code} {prefix}{self.text}\r\n"
        else:
            lines = self.text.split("\n")
            last = len(lines) - 1
            wire = "".join(
                f"{self.code}{' ' if i == last else '-'}{prefix}{line}\r\n"
                for i, line in enumerate(lines)
            )
        object.__setattr__(self, "_wire", wire.encode("utf-8"))

    @property
    def is_success(self) -> bool:
        """A 2xx reply (or 3xx, an intermediate success)."""
        return self.code < 400

    @property
    def is_permanent(self) -> bool:
        """A 5xx reply."""
        return self.code >= 500

    def encode(self) -> bytes:
        """The reply as it goes on the wire, CRLF-terminated."""
        return self._wire

    def __str__(self) -> str:
        return self._wire.decode("utf-8").rstrip("\r\n")


# --- connection ------------------------------------------------------------
@lru_cache(maxsize=64)
def greeting(hostname: str, protocol: str = "ESMTP") -> Reply:
    """220, sent on connect (RFC 5321 §4.3.1); no enhanced code (RFC 2034 §3).

    ``protocol`` is ``"LMTP"`` in LMTP mode (as in RFC 2033 §4.1's example).
    """
    return Reply(220, None, f"{hostname} {protocol} fastsmtp")


@lru_cache(maxsize=64)
def helo_ok(hostname: str) -> Reply:
    """250 to HELO: our name; no enhanced code (RFC 2034 §3)."""
    return Reply(250, None, hostname)


def ehlo_reply(settings: Settings, extensions: Sequence[str] = ()) -> Reply:
    """250 to EHLO/LHLO: our name, then the extensions actually enabled.

    ``ServerConnection`` makes each one once per settings object and
    extension list (its settings profile's ``ehlo_for``).
    """
    lines = [settings.hostname]
    if settings.pipelining:
        lines.append("PIPELINING")
    lines.append(f"SIZE {settings.max_message_size}")
    if settings.eightbitmime:
        lines.append("8BITMIME")
    if settings.smtputf8:
        lines.append("SMTPUTF8")
    if settings.dsn:
        lines.append("DSN")
    if settings.chunking:
        lines.append("CHUNKING")
        if settings.binarymime:
            lines.append("BINARYMIME")
    lines.append("ENHANCEDSTATUSCODES")
    lines.extend(extensions)
    # RFC 2034 §3: no enhanced code on the EHLO reply.
    return Reply(250, None, "\n".join(lines))


@lru_cache(maxsize=64)
def bye(hostname: str) -> Reply:
    """221 after QUIT."""
    return Reply(221, "2.0.0", f"{hostname} closing connection")


@lru_cache(maxsize=64)
def timeout(hostname: str) -> Reply:
    """421 when the client was silent too long (RFC 5321 §4.5.3.2)."""
    return Reply(421, "4.4.2", f"{hostname} Error: timeout exceeded")


@lru_cache(maxsize=64)
def shutting_down(hostname: str) -> Reply:
    """421 when the server stops (RFC 5321 §3.8)."""
    return Reply(421, "4.3.2", f"{hostname} Service shutting down, closing connection")


@lru_cache(maxsize=64)
def too_many_errors(hostname: str) -> Reply:
    """421 after too many bad commands (RFC 5321 §4.3.2 allows closing)."""
    return Reply(421, "4.7.0", f"{hostname} Error: too many errors")


# --- connection and abuse limits (RFC 5321 §4.3.2: 421 to any command, then close)
@lru_cache(maxsize=64)
def too_many_connections(hostname: str) -> Reply:
    """421 instead of the greeting when the server has max_connections clients."""
    return Reply(421, "4.7.0", f"{hostname} Error: too many connections, try again later")


@lru_cache(maxsize=64)
def too_many_connections_from_ip(hostname: str) -> Reply:
    """421 instead of the greeting when this client has max_connections_per_ip."""
    return Reply(421, "4.7.0", f"{hostname} Error: too many connections from your address")


@lru_cache(maxsize=64)
def connection_rate_exceeded(hostname: str) -> Reply:
    """421 instead of the greeting when this client connects too often."""
    return Reply(
        421, "4.7.0", f"{hostname} Error: too many connections from your address, slow down"
    )


@lru_cache(maxsize=64)
def too_many_transactions(hostname: str) -> Reply:
    """421 to MAIL after max_transactions: the client may reconnect and go on."""
    return Reply(421, "4.7.0", f"{hostname} Error: too many transactions in one connection")


# A greeting may be 554 (RFC 5321 §3.1): no service for a client that talks first.
EARLY_TALKER = Reply(554, "5.5.1", "Error: client sent data before the greeting")


# --- success ---------------------------------------------------------------
OK = Reply(250, "2.0.0", "OK")
SENDER_OK = Reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
START_DATA = Reply(354, None, "End data with <CR><LF>.<CR><LF>")
READY_FOR_TLS = Reply(220, "2.0.0", "Ready to start TLS")
VRFY_CANNOT = Reply(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery")
HELP = Reply(
    214,
    "2.0.0",
    "Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT HELP VRFY EXPN\nSee RFC 5321 for details",
)


def chunk_received(size: int) -> Reply:
    """250 to a BDAT chunk that is not the last (RFC 3030 §2)."""
    return Reply(250, "2.0.0", f"{size} octets received")


def queued(queue_id: str) -> Reply:
    """250 after DATA, naming the message's id (as Postfix does).

    One per message, so made from ``_QUEUED`` (checked once, at import)
    without running ``__post_init__`` again: that halves its cost.
    """
    reply: Reply = object.__new__(Reply)
    _set = object.__setattr__
    _set(reply, "code", 250)
    _set(reply, "enhanced", _QUEUED.enhanced)
    _set(reply, "text", _QUEUED.text + queue_id)
    _set(reply, "_wire", _QUEUED._wire[:-2] + queue_id.encode("utf-8") + b"\r\n")
    return reply


_QUEUED = Reply(250, "2.0.0", "OK: queued as ")


# --- syntax and sequence (RFC 5321 §4.2.2, §4.3.2) -------------------------
UNKNOWN_COMMAND = Reply(500, "5.5.2", "Error: command not recognized")
LINE_TOO_LONG = Reply(500, "5.5.6", "Error: line too long")
BARE_LINE_ENDING = Reply(500, "5.5.2", "Error: bare CR or LF received; lines must end with CRLF")
NO_ARGUMENTS = Reply(501, "5.5.4", "Syntax error: this command takes no arguments")
SYNTAX_HELO = Reply(501, "5.5.4", "Syntax: HELO/EHLO hostname")
SYNTAX_MAIL = Reply(501, "5.5.4", "Syntax: MAIL FROM:<address> [parameters]")
SYNTAX_RCPT = Reply(501, "5.5.4", "Syntax: RCPT TO:<address> [parameters]")
SYNTAX_VRFY = Reply(501, "5.5.4", "Syntax: VRFY address")
BAD_SENDER = Reply(501, "5.1.7", "Bad sender address syntax")
BAD_RECIPIENT = Reply(501, "5.1.3", "Bad recipient address syntax")
BAD_PARAMETER = Reply(501, "5.5.4", "Malformed parameter")
BAD_BODY = Reply(501, "5.5.4", "BODY must be 7BIT or 8BITMIME")
BAD_SIZE = Reply(501, "5.5.4", "SIZE must be a number of octets")
UNKNOWN_PARAMETER = Reply(555, "5.5.4", "Unsupported parameter")
BAD_DSN_PARAMETER = Reply(501, "5.5.4", "Malformed DSN parameter (RFC 3461)")
NEEDS_SMTPUTF8 = Reply(553, "5.6.7", "Non-ASCII address or parameter requires SMTPUTF8")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Error: command not implemented")
SYNTAX_STARTTLS = Reply(501, "5.5.4", "Syntax: STARTTLS")
TLS_ALREADY_ACTIVE = Reply(503, "5.5.1", "Error: TLS already active")
# RFC 3207 §4: a server that requires TLS answers 530 until STARTTLS.
TLS_REQUIRED = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
EXPN_DISABLED = Reply(502, "5.5.1", "Error: EXPN is not available")
NEED_HELO = Reply(503, "5.5.1", "Error: send HELO/EHLO first")
# RFC 2033 §4.1: an LMTP server takes LHLO where SMTP has HELO/EHLO.
LMTP_NEEDS_LHLO = Reply(500, "5.5.1", "Error: this is an LMTP server, say LHLO")
NEED_LHLO = Reply(503, "5.5.1", "Error: send LHLO first")
NESTED_MAIL = Reply(503, "5.5.1", "Error: nested MAIL command")
NEED_MAIL = Reply(503, "5.5.1", "Error: need MAIL command")
NEED_RCPT = Reply(503, "5.5.1", "Error: need RCPT command")
AFTER_BDAT = Reply(503, "5.5.1", "Error: only BDAT may follow BDAT in a transaction")
BINARYMIME_NEEDS_BDAT = Reply(503, "5.5.1", "Error: BODY=BINARYMIME needs BDAT, not DATA")
SYNTAX_BDAT = Reply(501, "5.5.4", "Syntax: BDAT size [LAST]")
# RFC 2920 §3.1: DATA after no successful RCPT MUST fail with 503.
NO_VALID_RECIPIENTS = Reply(503, "5.5.1", "Error: no valid recipients")

# --- policy ----------------------------------------------------------------
RELAY_DENIED = Reply(554, "5.7.1", "Relay access denied")

# --- ETRN (RFC 1985 §5) and ATRN (RFC 2645 §4) --------------------------------
SYNTAX_ETRN = Reply(501, "5.5.4", "Syntax: ETRN domain | @domain | #queue")
ETRN_IN_TRANSACTION = Reply(503, "5.5.1", "Error: ETRN not permitted during a mail transaction")


def etrn_started(node: str) -> Reply:
    """252: deferred mail for ``node`` is being retried now."""
    return Reply(252, "2.0.0", f"OK, pending messages for node {node} started")


def etrn_nothing(node: str) -> Reply:
    """251: no deferred mail is waiting for ``node``."""
    return Reply(251, "2.0.0", f"OK, no messages waiting for node {node}")


def etrn_unable(node: str) -> Reply:
    """458: this server keeps no queue for ``node`` (no queue, or a named queue)."""
    return Reply(458, "4.3.0", f"Unable to queue messages for node {node}")


def etrn_not_allowed(node: str) -> Reply:
    """459: this client may not start the queue (only clients that may relay may)."""
    return Reply(459, "4.7.1", f"Node {node} not allowed: ETRN not permitted for this client")


SYNTAX_ATRN = Reply(501, "5.5.4", "Syntax: ATRN [domain[,domain]...]")
ATRN_IN_TRANSACTION = Reply(503, "5.5.1", "Error: ATRN not permitted during a mail transaction")
ATRN_REVERSING = Reply(250, "2.0.0", "OK now reversing the connection")
ATRN_REFUSED = Reply(450, "4.7.1", "ATRN request refused: not your domain")
ATRN_UNAVAILABLE = Reply(451, "4.3.0", "Unable to process ATRN request now")
ATRN_NO_MAIL = Reply(453, "4.4.0", "You have no mail")
# What the queue records for mail held for its domain's ATRN (deferred until fetched).
HELD_FOR_ATRN = Reply(450, "4.4.0", "held until the domain's owner fetches it with ATRN")

# --- AUTH (RFC 4954 §4, §6) -------------------------------------------------
AUTH_SUCCESS = Reply(235, "2.7.0", "Authentication successful")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_CANCELLED = Reply(501, "5.0.0", "Authentication cancelled")
AUTH_MALFORMED = Reply(501, "5.5.2", "Cannot decode response: invalid base64 or SASL syntax")
AUTH_NEEDS_TLS = Reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
AUTH_TEMPORARY_FAILURE = Reply(454, "4.7.0", "Temporary authentication failure")
ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "Error: already authenticated")
AUTH_IN_TRANSACTION = Reply(503, "5.5.1", "Error: AUTH not permitted during a mail transaction")
NEED_EHLO = Reply(503, "5.5.1", "Error: send EHLO first")
UNKNOWN_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication type")
SYNTAX_AUTH = Reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]")


def auth_challenge(data: str) -> Reply:
    """334 with a base64 challenge (RFC 4954 §4); no enhanced code."""
    return Reply(334, None, data)


@lru_cache(maxsize=64)
def too_many_auth_failures(hostname: str) -> Reply:
    """421 to a client with too many failed AUTH attempts lately; then close."""
    return Reply(421, "4.7.0", f"{hostname} Error: too many failed authentication attempts")


# --- limits ----------------------------------------------------------------
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Error: too many recipients")
# RFC 3463 §3.4: X.3.1, mail system full (the spool directory cannot take the message).
SPOOL_FAILED = Reply(452, "4.3.1", "Error: insufficient system storage")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Error: message size exceeds fixed maximum message size")
DATA_LINE_TOO_LONG = Reply(
    554, "5.6.0", "Error: message refused, a line is longer than the limit (RFC 5321 §4.5.3.1.6)"
)
# Only CRLF ends a line; anything else is how SMTP smuggling works.
DATA_BARE_LINE_ENDING = Reply(
    554, "5.6.0", "Error: message refused, bare CR or LF in message; lines must end with CRLF"
)

# --- handler failures --------------------------------------------------------
HANDLER_ERROR = Reply(451, "4.3.0", "Error: local error in processing, try again later")
# A greeting may only be 220, 421 or 554 (RFC 5321 §4.3.2).
HANDLER_ERROR_AT_CONNECT = Reply(421, "4.3.0", "Error: local error, try again later")


# --- delivery: routing, forwarding, loops (what the queue records and bounces report) --
# RFC 5321 §3.4: a server may say it forwards, or refuse to.
def will_forward(targets: str) -> Reply:
    """251 to RCPT of an alias that forwards off this host (when told to say so)."""
    return Reply(251, "2.1.5", f"User not local; will forward to <{targets}>")


FORWARDING_REFUSED = Reply(551, "5.1.6", "User not local; forwarding refused")
# RFC 5321 §6.3: a message with too many trace headers is looping.
TOO_MANY_HOPS = Reply(554, "5.4.6", "Error: too many hops (Received: headers), mail loop?")
# RFC 5321 §5.1: the best MX is this host itself.
MX_LOOP = Reply(554, "5.4.6", "Error: mail for this domain loops back to myself")
NULL_MX = Reply(556, "5.1.10", "Recipient domain does not accept mail (Null MX, RFC 7505)")
NO_SUCH_DOMAIN = Reply(550, "5.1.2", "Recipient domain does not exist")
NO_MAIL_HOST = Reply(550, "5.4.4", "Recipient domain has no mail server address")
DNS_TEMPORARY = Reply(451, "4.4.3", "Temporary DNS failure looking up the recipient domain")

# --- the outbound client's own verdicts (protocol/client.py) ----------------
# A recipient gets one of these when the client decides without the server's
# word: the message cannot go to this server as it is, or the connection ended.


def remote_size_exceeded(size: int, limit: int) -> Reply:
    """552 before MAIL: the server declared a smaller SIZE limit (RFC 1870 §6)."""
    return Reply(
        552, "5.3.4", f"message size {size} exceeds the limit {limit} the server declared (SIZE)"
    )


# RFC 6531 §3.5: no downgrade of an internationalised message.
REMOTE_NEEDS_SMTPUTF8 = Reply(
    553, "5.6.7", "message needs SMTPUTF8 (RFC 6531) and the server does not offer it"
)
# RFC 6152 §3: 8-bit content is never sent to a server without 8BITMIME.
REMOTE_NEEDS_8BITMIME = Reply(
    554, "5.6.3", "message has 8-bit content and the server does not offer 8BITMIME"
)
REMOTE_NEEDS_BINARYMIME = Reply(
    554, "5.6.3", "message is BINARYMIME and the server does not offer BINARYMIME with CHUNKING"
)
REMOTE_CONNECTION_LOST = Reply(421, "4.4.2", "connection lost before the server answered")
REMOTE_TIMEOUT = Reply(421, "4.4.2", "timeout waiting for the server")
REMOTE_MALFORMED_REPLY = Reply(421, "4.5.0", "the server sent a malformed or oversized reply")
# RFC 5321 §4.1.1.4, RFC 1047: the message was sent in full but its reply never came.
DELIVERY_UNCERTAIN = Reply(
    421,
    "4.4.2",
    "connection lost after the message was sent, before the server confirmed it; "
    "a retry may deliver it twice (RFC 1047)",
)
# What the scheduler records when no server answered for a recipient.
CONNECT_FAILED = Reply(451, "4.4.1", "No answer from the destination host")
DELIVERY_EXPIRED = Reply(554, "5.4.7", "Delivery time expired")
NOT_A_LIST = Reply(550, "5.1.1", "Not a mailing list or alias")


def expansion(addresses: Sequence[str]) -> Reply:
    """250 to VRFY/EXPN of an alias: one address per line (RFC 5321 §3.5.1, §3.5.2)."""
    return Reply(250, "2.1.5", "\n".join(f"<{a}>" for a in addresses))


# --- gateways (handlers/lmtp.py, webhook.py, pipe.py) -------------------------
# What a gateway answers when the system it hands mail to did not take it.
# Temporary unless that system said the failure was permanent.
WEBHOOK_FAILED = Reply(451, "4.3.0", "Error: the web hook did not accept the message, try later")
PIPE_TIMEOUT = Reply(451, "4.3.0", "Error: the delivery command timed out, try again later")
PIPE_NOT_RUN = Reply(451, "4.3.0", "Error: the delivery command could not be run, try later")

# sysexits.h statuses of a delivery command, as sendmail and Postfix's pipe(8)
# read them: 75 (EX_TEMPFAIL) and the system's own trouble are temporary; the
# command saying the address, data or setup is wrong is permanent.
_COMMAND_EXITS: dict[int, tuple[int, str, str]] = {
    64: (554, "5.3.0", "command line usage error"),  # EX_USAGE
    65: (554, "5.6.0", "data format error"),  # EX_DATAERR
    66: (554, "5.3.0", "cannot open input"),  # EX_NOINPUT
    67: (550, "5.1.1", "user unknown"),  # EX_NOUSER
    68: (550, "5.1.2", "host name unknown"),  # EX_NOHOST
    69: (554, "5.3.0", "service unavailable"),  # EX_UNAVAILABLE
    70: (554, "5.3.0", "internal software error"),  # EX_SOFTWARE
    71: (451, "4.3.0", "system error"),  # EX_OSERR
    72: (554, "5.3.0", "critical system file missing"),  # EX_OSFILE
    73: (550, "5.2.0", "cannot create output file"),  # EX_CANTCREAT
    74: (451, "4.3.0", "input/output error"),  # EX_IOERR
    75: (451, "4.3.0", "temporary failure"),  # EX_TEMPFAIL
    76: (554, "5.5.0", "remote protocol error"),  # EX_PROTOCOL
    77: (550, "5.7.0", "permission denied"),  # EX_NOPERM
    78: (554, "5.3.5", "configuration error"),  # EX_CONFIG
}


def command_failed(status: int, output: str) -> Reply:
    """A delivery command's non-zero exit ``status`` (negative: killed by that signal).

    sysexits.h statuses as ``_COMMAND_EXITS`` says; any other status or a
    signal is temporary (451 4.3.0): an unknown failure must not bounce
    mail. ``output`` (one line, already cleaned) is appended for the logs
    and bounces.
    """
    if status < 0:
        code, enhanced, what = 451, "4.3.0", f"killed by signal {-status}"
    else:
        code, enhanced, what = _COMMAND_EXITS.get(status, (451, "4.3.0", "failed"))
        what = f"{what} (exit status {status})"
    return Reply(code, enhanced, f"delivery command: {what}{': ' if output else ''}{output}")
