"""The client side of SMTP and LMTP as a sans-IO state machine.

Theory of operation
===================

``ClientConnection`` never touches a socket. The I/O layer feeds it what the
server sent with ``receive_data`` (``b""`` for EOF), writes whatever
``data_to_send`` returns after *every* call, and pulls events with
``next_event`` until it returns ``NEED_DATA``.

Every command the connection sends leaves an *expectation* in a FIFO, and
each reply the server sends is matched to the oldest one (RFC 5321 §4.2:
replies come in command order). Received bytes are parsed at once, in
``receive_data``, so the state moves on (and answers such as the next AUTH
step or the next held command are queued) whether or not the I/O layer is
looking; that also bounds memory, since a reply nobody expected closes the
connection instead of piling up. Reply lines longer than
``max_reply_line`` and replies of more than ``max_reply_lines`` lines are
refused the same way: a hostile server cannot make the client buffer
without bound.

Without PIPELINING a command waits in a *held* queue until every earlier
reply is in. With it (RFC 2920 §3.1), RSET, MAIL, RCPT and BDAT chunks are
sent without waiting, and DATA ends the group.

The application drives two kinds of work:

- *Direct commands* (``hello``, ``helo``, ``starttls``, ``authenticate``,
  ``quit``): each ends with a ``Replied`` event naming it; the greeting
  arrives as ``Replied("GREETING", ...)``.
- *Transactions* (``start_transaction``): MAIL, every RCPT and, with
  PIPELINING and without CHUNKING, DATA go out in one batch. When the
  server is ready for the body the connection says ``SendBody``; the
  application then calls ``send_body(chunk, last=...)`` while
  ``body_ready`` is true. The body is dot-stuffed with the wire layer's
  ``DotStuffer``, or framed as BDAT chunks (no stuffing) when the server
  offers CHUNKING (RFC 3030). ``TransactionDone`` carries one
  ``ServerReply`` per recipient, in RCPT order: the RCPT refusal, or the
  reply after the data (LMTP: the one reply for that recipient, RFC 2033
  §4.2). A failed transaction is followed by RSET.

A message that cannot go to this server as it is (SIZE too small,
SMTPUTF8 or 8BITMIME/BINARYMIME missing) is refused before anything is
sent, with a ``local`` reply from ``protocol/replies.py``. When the
connection ends (EOF, a 421, a malformed reply, ``abort``), unanswered
recipients get a local 4xx; once the whole message was sent they get
``DELIVERY_UNCERTAIN`` instead, for the server may have taken it.
"""

from __future__ import annotations

import base64
import enum
import re
from collections import deque
from collections.abc import Mapping, Sequence

from ..wire import DotStuffer, LineReader, LineTooLong
from . import replies as R
from .client_events import (
    ClientEvent,
    ConnectionClosed,
    Extensions,
    Replied,
    SendBody,
    ServerReply,
    TransactionDone,
)
from .events import NEED_DATA, NeedData
from .replies import Reply

__all__ = [
    "ClientConnection",
    "ClientEvent",
    "ClientState",
    "ConnectionClosed",
    "Extensions",
    "Replied",
    "SendBody",
    "ServerReply",
    "TransactionDone",
]


class ClientState(enum.Enum):
    """Where the client is in the dialogue."""

    GREETING = "greeting"  # connected, waiting for the banner
    CONNECTED = "connected"  # greeted: EHLO/LHLO (or HELO) next
    READY = "ready"  # greeted both ways, no transaction
    TRANSACTION = "transaction"  # a mail transaction is under way
    TLS = "tls"  # STARTTLS accepted: the handshake is the I/O layer's
    CLOSED = "closed"


class _Phase(enum.Enum):
    ENVELOPE = 1  # MAIL and RCPT replies outstanding
    BODY = 2  # the server takes the body
    END = 3  # the body is sent; its replies are outstanding


# Replies that wait for nothing before them under PIPELINING (RFC 2920 §3.1).
_GROUPABLE = frozenset({"RSET", "MAIL", "RCPT", "BDAT"})
# Direct commands: they end in a Replied event.
_DIRECT = frozenset({"GREETING", "EHLO", "LHLO", "HELO", "STARTTLS", "AUTH", "QUIT"})
_HELLO = frozenset({"GREETING", "EHLO", "LHLO", "HELO"})  # no enhanced codes (RFC 2034 §3)
_ENHANCED = re.compile(r"([245])\.\d{1,3}\.\d{1,3}")
_DSN_MAIL = frozenset({"RET", "ENVID"})
_DSN_RCPT = frozenset({"NOTIFY", "ORCPT"})
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")  # no control characters or spaces in a path or value
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


class _Transaction:
    __slots__ = ("accepted", "chunking", "data_sent", "failed", "phase", "results", "waiting")

    def __init__(self, count: int, chunking: bool) -> None:
        self.results: list[ServerReply | None] = [None] * count
        self.accepted: list[int] = []
        self.chunking = chunking
        self.data_sent = False  # DATA went out in the pipelined batch
        self.failed = False  # MAIL, DATA or a BDAT chunk was refused
        self.phase = _Phase.ENVELOPE
        self.waiting = 0  # this transaction's replies not in yet (sent or held)

    def resolve(self, reply: ServerReply) -> None:
        """Give ``reply`` to every recipient that has none yet."""
        self.results = [reply if r is None else r for r in self.results]


class ClientConnection:
    """One client-side SMTP or LMTP connection, without I/O (see the module doc)."""

    def __init__(
        self, *, lmtp: bool = False, max_reply_line: int = 4096, max_reply_lines: int = 200
    ) -> None:
        self.lmtp = lmtp
        self.state = ClientState.GREETING
        #: what the last EHLO/LHLO advertised (empty after HELO and after STARTTLS)
        self.extensions = Extensions()
        self.tls_active = False
        self.max_reply_lines = max_reply_lines
        # A server may end lines with a bare LF; only the length is policed.
        self._reader = LineReader(max_reply_line, strict=False)
        self._partial = 0
        self._lines: list[str] = []
        self._line_code = 0
        self._pending: deque[tuple[str, int]] = deque([("GREETING", -1)])
        self._ungroupable = 1
        self._held: deque[tuple[bytes, tuple[tuple[str, int], ...]]] = deque()
        self._out: list[bytes] = []
        self._events: deque[ClientEvent] = deque()
        self._txn: _Transaction | None = None
        self._stuffer: DotStuffer | None = None
        self._auth_steps: deque[bytes] = deque()

    # --- what the I/O layer calls -----------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the server; ``b""`` means it closed the connection."""
        if self.state is ClientState.CLOSED:
            return
        if not data:
            self._close("connection closed by the server", R.REMOTE_CONNECTION_LOST)
        elif self.state is not ClientState.TLS:  # plaintext after STARTTLS's 220 is dropped
            # Octets since the last LF: a line past the limit is refused now, not
            # when (if ever) its LF comes; the reader keeps none of it meanwhile.
            lf = data.rfind(b"\n")
            self._partial = len(data) - lf - 1 if lf >= 0 else self._partial + len(data)
            self._reader.feed(data)
            self._parse()
            if self._partial >= self._reader.max_line_length:
                self._close("reply line too long", R.REMOTE_MALFORMED_REPLY)

    def next_event(self) -> ClientEvent | NeedData:
        """The next event, or ``NEED_DATA`` when none is ready."""
        return self._events.popleft() if self._events else NEED_DATA

    def data_to_send(self) -> bytes:
        """Bytes to write to the server now (possibly empty)."""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def abort(self, reply: Reply = R.REMOTE_CONNECTION_LOST) -> None:
        """The I/O layer ends the connection (lost, timed out, given up).

        Unanswered recipients get ``reply`` (``DELIVERY_UNCERTAIN`` once the
        whole message was sent), a waiting direct command gets it too.
        """
        self._close(f"connection ended: {reply.text}", reply)

    @property
    def body_ready(self) -> bool:
        """True when ``send_body`` may be called now."""
        txn = self._txn
        return (
            txn is not None
            and txn.phase is _Phase.BODY
            and not txn.failed
            and (self.extensions.pipelining or not self._pending)
        )

    @property
    def sending_body(self) -> bool:
        """True from ``SendBody`` until the last chunk is given or the body is refused."""
        txn = self._txn
        return txn is not None and txn.phase is _Phase.BODY and not txn.failed

    # --- direct commands ----------------------------------------------------
    def hello(self, name: str) -> None:
        """EHLO (LHLO in LMTP mode); ``Replied`` carries the reply."""
        self._require_idle()
        verb = "LHLO" if self.lmtp else "EHLO"
        self._command(f"{verb} {_token(name)}", verb)

    def helo(self, name: str) -> None:
        """HELO, the fallback when EHLO is refused (RFC 5321 §4.1.4); not for LMTP."""
        if self.lmtp:
            raise RuntimeError("LMTP has no HELO (RFC 2033 §4.1)")
        self._require_idle()
        self._command(f"HELO {_token(name)}", "HELO")

    def starttls(self) -> None:
        """STARTTLS (RFC 3207); after its 220, do the handshake and call ``tls_started``."""
        self._require(ClientState.READY)
        self._command("STARTTLS", "STARTTLS")

    def tls_started(self) -> None:
        """The handshake is done: forget the plaintext session (RFC 3207 §4.2), say EHLO again."""
        self._require(ClientState.TLS)
        self._reader.drain()  # anything after the 220 came unprotected: never a reply
        self._partial = 0
        self.extensions = Extensions()
        self.tls_active = True
        self.state = ClientState.CONNECTED

    def authenticate(self, mechanism: str, username: str, password: str) -> None:
        """AUTH PLAIN or LOGIN (RFC 4954); the 334 steps are answered here."""
        self._require(ClientState.READY)
        user, secret = username.encode("utf-8"), password.encode("utf-8")
        mechanism = mechanism.upper()
        if mechanism == "PLAIN":  # RFC 4616: an initial response, no challenge
            self._auth_steps = deque()
            token = _b64(b"\0" + user + b"\0" + secret).decode("ascii")
            line = f"AUTH PLAIN {token}"
        elif mechanism == "LOGIN":  # draft-murchison-sasl-login: user, then password
            self._auth_steps = deque([_b64(user), _b64(secret)])
            line = "AUTH LOGIN"
        else:
            raise ValueError(f"unsupported SASL mechanism {mechanism!r}: PLAIN or LOGIN")
        self._command(line, "AUTH")

    def quit(self) -> None:
        """QUIT; the connection closes after its reply."""
        if self.state is not ClientState.CLOSED:
            self._command("QUIT", "QUIT")

    # --- transactions -------------------------------------------------------
    def start_transaction(
        self,
        mail_from: str,
        recipients: Sequence[str],
        *,
        size: int | None = None,
        body_type: str | None = None,
        smtputf8: bool = False,
        mail_params: Mapping[str, str | None] | None = None,
        rcpt_params: Sequence[Mapping[str, str | None]] | None = None,
    ) -> None:
        """Begin sending one message; ``TransactionDone`` ends it.

        ``size`` is the message's length in octets (for SIZE), ``body_type``
        its BODY (``"7BIT"``, ``"8BITMIME"``, ``"BINARYMIME"`` or None).
        SMTPUTF8 is asked for when ``smtputf8`` is true or an address is not
        ASCII. Parameter values go out as given (xtext-encoded where the RFC
        says); DSN parameters are dropped when the server lacks DSN.
        """
        if not recipients:
            raise ValueError("a transaction needs at least one recipient")
        if rcpt_params is not None and len(rcpt_params) != len(recipients):
            raise ValueError("rcpt_params must have one mapping per recipient")
        if self.state is ClientState.CLOSED:
            self._done([ServerReply.from_reply(R.REMOTE_CONNECTION_LOST)] * len(recipients))
            return
        self._require(ClientState.READY)
        body = (body_type or "").upper()
        utf8 = smtputf8 or not (mail_from.isascii() and all(r.isascii() for r in recipients))
        refusal = self._refusal(size, body, utf8)
        if refusal is not None:
            self._done([ServerReply.from_reply(refusal)] * len(recipients))
            return
        ext = self.extensions
        params: dict[str, str | None] = _params(mail_params, ext.dsn, _DSN_MAIL)
        if "SIZE" in ext and size is not None:
            params["SIZE"] = str(size)
        if body and ext.eightbitmime:
            params["BODY"] = body
        if utf8:
            params["SMTPUTF8"] = None
        # Every line is built (and checked) before the first goes out.
        lines = [f"MAIL FROM:<{_path(mail_from)}>{_format(params)}"]
        for index, rcpt in enumerate(recipients):
            extra = _params(rcpt_params[index] if rcpt_params else None, ext.dsn, _DSN_RCPT)
            lines.append(f"RCPT TO:<{_path(rcpt)}>{_format(extra)}")
        txn = self._txn = _Transaction(len(recipients), ext.chunking)
        self.state = ClientState.TRANSACTION
        self._command(lines[0], "MAIL")
        for index, line in enumerate(lines[1:]):
            self._command(line, "RCPT", index)
        if ext.pipelining and not txn.chunking:
            txn.data_sent = True
            self._command("DATA", "DATA")

    def send_body(self, chunk: bytes | memoryview, *, last: bool = False) -> None:
        """Send the next part of the message (only while ``body_ready``)."""
        txn = self._txn
        if txn is None or not self.body_ready:
            raise RuntimeError("the server is not ready for the body")
        ends = (
            tuple(("END", i) for i in txn.accepted) if self.lmtp else (("END", -1),)
        )  # RFC 2033 §4.2: LMTP answers once per accepted recipient
        if last:
            txn.phase = _Phase.END
        if not txn.chunking:
            assert self._stuffer is not None
            self._out.append(self._stuffer.encode(chunk))
            if last:
                self._out.append(self._stuffer.finish())
                txn.waiting += len(ends)
                self._expect(ends)
            return
        line = f"BDAT {len(chunk)}{' LAST' if last else ''}\r\n".encode("ascii")
        self._send(line + bytes(chunk), ends if last else (("BDAT", -1),))

    # --- internals: sending -------------------------------------------------
    def _command(self, line: str, kind: str, index: int = -1) -> None:
        self._send(line.encode("utf-8") + b"\r\n", ((kind, index),))

    def _send(self, data: bytes, expects: tuple[tuple[str, int], ...]) -> None:
        if self._txn is not None and expects[0][0] not in _DIRECT:
            self._txn.waiting += len(expects)
        if self._held or not self._may_send():
            self._held.append((data, expects))
        else:
            self._out.append(data)
            self._expect(expects)

    def _expect(self, expects: tuple[tuple[str, int], ...]) -> None:
        self._pending.extend(expects)
        self._ungroupable += sum(kind not in _GROUPABLE for kind, _ in expects)

    def _may_send(self) -> bool:
        # RFC 2920 §3.1: without PIPELINING, wait for every reply.
        return not self._pending or (self.extensions.pipelining and not self._ungroupable)

    def _release_held(self) -> None:
        while self._held and self._may_send():
            data, expects = self._held.popleft()
            self._out.append(data)
            self._expect(expects)

    def _refusal(self, size: int | None, body: str, utf8: bool) -> Reply | None:
        """Why this server cannot take the message as it is, if it cannot."""
        ext = self.extensions
        if utf8 and not ext.smtputf8:
            return R.REMOTE_NEEDS_SMTPUTF8
        if body == "BINARYMIME" and not (ext.binarymime and ext.chunking):
            return R.REMOTE_NEEDS_BINARYMIME
        if body == "8BITMIME" and not ext.eightbitmime:
            return R.REMOTE_NEEDS_8BITMIME
        limit = ext.size_limit
        if size is not None and limit is not None and size > limit:
            return R.remote_size_exceeded(size, limit)
        return None

    # --- internals: receiving -----------------------------------------------
    def _parse(self) -> None:
        reader = self._reader
        while self.state is not ClientState.CLOSED and self.state is not ClientState.TLS:
            try:
                line = reader.next_line()
            except LineTooLong:
                self._close("reply line too long", R.REMOTE_MALFORMED_REPLY)
                return
            if line is None:
                return
            parsed = _reply_line(line)
            if parsed is None or (self._lines and parsed[0] != self._line_code):
                self._close(f"malformed reply line {line[:80]!r}", R.REMOTE_MALFORMED_REPLY)
                return
            code, last, text = parsed
            self._lines.append(text)
            self._line_code = code
            if len(self._lines) > self.max_reply_lines:
                self._close("reply with too many lines", R.REMOTE_MALFORMED_REPLY)
                return
            if last:
                lines, self._lines = self._lines, []
                self._on_reply(self._make_reply(code, lines))

    def _make_reply(self, code: int, lines: list[str]) -> ServerReply:
        enhanced = None
        split = self.extensions.enhanced_status_codes
        if split and self._pending and self._pending[0][0] not in _HELLO:
            first = lines[0].split(" ", 1)[0]
            if _ENHANCED.fullmatch(first) and first[0] == str(code)[0]:
                enhanced = first
                lines = [line.removeprefix(first).removeprefix(" ") for line in lines]
        return ServerReply(code, enhanced, tuple(lines))

    def _on_reply(self, reply: ServerReply) -> None:
        if not self._pending:
            # RFC 5321 §3.8: a 421 may come at any time; anything else is out of step.
            unsolicited = reply if reply.code == 421 else None
            self._close("unexpected reply from the server", R.REMOTE_MALFORMED_REPLY, unsolicited)
            return
        kind, index = self._pending.popleft()
        if kind not in _GROUPABLE:
            self._ungroupable -= 1
        if kind in _DIRECT:
            self._on_direct(kind, reply)
        elif kind != "RSET":  # RSET's reply changes nothing
            self._on_transaction(kind, index, reply)
        if reply.code == 421:
            self._close("the server closes the connection (421)", R.REMOTE_CONNECTION_LOST, reply)
        else:
            self._release_held()

    def _on_direct(self, kind: str, reply: ServerReply) -> None:
        if kind == "AUTH" and reply.code == 334:
            # The next step, or "*" to cancel a challenge we cannot answer (RFC 4954 §4).
            step = self._auth_steps.popleft() if self._auth_steps else b"*"
            self._out.append(step + b"\r\n")
            self._expect((("AUTH", -1),))
            return
        if kind == "GREETING" and reply.code == 220:
            self.state = ClientState.CONNECTED
        elif kind in _HELLO and reply.ok:
            self.extensions = Extensions.parse(reply.lines[1:] if kind != "HELO" else ())
            self.state = ClientState.READY
        elif kind == "STARTTLS" and reply.code == 220:
            self.state = ClientState.TLS
        self._events.append(Replied(kind, reply))
        if kind == "QUIT":
            self._close("QUIT", R.REMOTE_CONNECTION_LOST)

    def _on_transaction(self, kind: str, index: int, reply: ServerReply) -> None:
        txn = self._txn
        assert txn is not None
        txn.waiting -= 1
        if kind == "MAIL" and not reply.ok:
            txn.failed = True
            txn.resolve(reply)
            self._drop_held(txn)
        elif kind == "RCPT" and not txn.failed:
            if reply.ok:
                txn.accepted.append(index)
            else:
                txn.results[index] = reply
        elif kind == "DATA":
            if reply.code != 354:
                txn.failed = True
                txn.resolve(reply)
            elif txn.failed or not txn.accepted:
                # RFC 2920 §3.1: DATA accepted with nobody to send to: end it empty.
                txn.phase = _Phase.END
                self._out.append(b".\r\n")
                txn.waiting += 1
                self._expect((("END", -1),))
            else:
                self._start_body(txn)
        elif kind == "BDAT" and not reply.ok and not txn.failed:
            # RFC 3030 §2: no more chunks after a refused one.
            txn.failed = True
            txn.resolve(reply)
        elif kind == "END" and not txn.failed:
            if index >= 0:
                txn.results[index] = reply
            else:
                for i in txn.accepted:
                    txn.results[i] = reply
        if txn.waiting == 0:
            self._advance(txn)

    def _advance(self, txn: _Transaction) -> None:
        """Every reply of this step is in: decide the next one."""
        if txn.phase is _Phase.ENVELOPE and not (txn.failed or not txn.accepted):
            if txn.chunking:
                self._start_body(txn)
            elif not txn.data_sent:
                txn.data_sent = True
                self._command("DATA", "DATA")
            return
        if txn.phase is _Phase.BODY and not txn.failed:
            return  # between BDAT chunks
        failed = txn.failed or not txn.accepted
        self._done([r for r in txn.results if r is not None])
        if failed:
            self._command("RSET", "RSET")

    def _start_body(self, txn: _Transaction) -> None:
        txn.phase = _Phase.BODY
        self._stuffer = None if txn.chunking else DotStuffer()
        self._events.append(SendBody())

    def _drop_held(self, txn: _Transaction) -> None:
        """MAIL was refused: the held RCPTs of this transaction are not sent."""
        txn.waiting -= sum(len(expects) for _, expects in self._held)
        self._held.clear()

    def _done(self, results: list[ServerReply]) -> None:
        self._txn = None
        self._stuffer = None
        if self.state is ClientState.TRANSACTION:
            self.state = ClientState.READY
        self._events.append(TransactionDone(tuple(results)))

    def _close(self, reason: str, lost: Reply, reply: ServerReply | None = None) -> None:
        """End the connection: every waiting party gets ``reply`` or a local ``lost``."""
        if self.state is ClientState.CLOSED:
            return
        txn = self._txn
        if txn is not None:
            if reply is None:
                # The whole message went out: the server may have it (RFC 1047).
                local = R.DELIVERY_UNCERTAIN if txn.phase is _Phase.END else lost
                reply = ServerReply.from_reply(local)
            txn.resolve(reply)
            self._done([r for r in txn.results if r is not None])
        answer = reply or ServerReply.from_reply(lost)
        for kind, _ in [*self._pending, *(e for _, ex in self._held for e in ex)]:
            if kind in _DIRECT:
                self._events.append(Replied(kind, answer))
        self._pending.clear()
        self._held.clear()
        self.state = ClientState.CLOSED
        self._events.append(ConnectionClosed(reason))

    def _require(self, state: ClientState) -> None:
        if self.state is not state:
            raise RuntimeError(f"not possible in state {self.state.value}")

    def _require_idle(self) -> None:
        if self.state not in (ClientState.CONNECTED, ClientState.READY):
            raise RuntimeError(f"not possible in state {self.state.value}")


# --- helpers ----------------------------------------------------------------
def _reply_line(line: bytes) -> tuple[int, bool, str] | None:
    """``(code, is_last, text)`` of one reply line (RFC 5321 §4.2), or None."""
    if len(line) < 3 or not line[:3].isdigit() or line[:1] not in b"2345":
        return None
    separator = line[3:4]
    if separator not in (b"", b" ", b"-"):
        return None
    return int(line[:3]), separator != b"-", line[4:].decode("utf-8", "replace")


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def _token(name: str) -> str:
    if not name or _UNSAFE.search(name):
        raise ValueError(f"not a host name for HELO/EHLO: {name!r}")
    return name


def _path(address: str) -> str:
    # Spaces may sit in a quoted local part; line breaks never (command injection).
    if any(c in address for c in "\r\n\0<>"):
        raise ValueError(f"not a mailbox: {address!r}")
    return address


def _params(
    given: Mapping[str, str | None] | None, dsn: bool, dsn_keys: frozenset[str]
) -> dict[str, str | None]:
    """The caller's parameters, checked; DSN ones only for a server with DSN (RFC 3461 §4)."""
    out: dict[str, str | None] = {}
    for key, value in (given or {}).items():
        if not _KEYWORD.fullmatch(key) or (
            value is not None and (not value or _UNSAFE.search(value) or "=" in value)
        ):
            raise ValueError(f"not an ESMTP parameter: {key}={value!r}")
        if dsn or key.upper() not in dsn_keys:
            out[key.upper()] = value
    return out


def _format(params: Mapping[str, str | None]) -> str:
    return "".join(f" {k}" if v is None else f" {k}={v}" for k, v in params.items())
