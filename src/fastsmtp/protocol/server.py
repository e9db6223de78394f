"""The server side of SMTP as a sans-IO state machine.

Theory of operation
===================

``ServerConnection`` never touches a socket. The I/O layer hands it bytes
with ``receive_data`` (``b""`` for EOF), pulls events with ``next_event``
until it returns ``NEED_DATA``, and writes what ``data_to_send`` returns.
Replies that the protocol can give by itself (syntax errors, bad sequence,
NOOP, RSET, HELP, QUIT, the 354 to DATA) are queued at once; commands that
need the application's word are returned as *decision* events (``Hello``,
``MailFrom``, ``RcptTo``, ``MessageEnd``, ``Verify``, ``Expand``) and the
connection waits for ``respond(reply)`` (``None`` accepts with the default
reply) before it reads further. A decision nobody takes (``auto_accept``:
an I/O layer whose handler has no hook for it) is answered at once with
its default instead, and not returned; MAIL and RCPT then make no event.
Replies accumulate until the I/O layer takes them, so a pipelined group
(RFC 2920) is answered with one write once the input is drained.

The connection is always in one ``State``. Which commands each state admits
is the table ``SEQUENCE`` (``protocol.state``); a command outside its states
gets the 503 named there. After DATA the body is decoded chunk by chunk by
the wire layer's ``DataDecoder`` and surfaces as ``BodyChunk`` events,
never as one buffer. Body bytes that arrive while nothing else is buffered
are decoded in ``receive_data`` itself, so a big message is not copied into
the command buffer and out again; ``keep_body=False`` (nobody reads the
body) decodes without making the body at all: no ``BodyChunk``, the same
checks and replies.

With ``settings.lmtp`` the connection speaks LMTP (RFC 2033): LHLO takes
the place of HELO/EHLO, and the ``MessageEnd`` decision is answered with
one reply per accepted recipient (``respond_recipients``).

Every 5xx for a malformed or out-of-sequence command counts as an error;
after ``max_errors`` the connection answers 421 and closes (RFC 5321
§4.3.2 lets a server close on abuse).

Here are the mail path and the dialogue's core (HELO/EHLO/LHLO among it);
the other commands are functions of the connection in modules beside this
one: ``starttls``, ``auth_exchange``, ``chunking`` (BDAT), ``etrn``,
``queries`` and ``lmtp``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import MISSING, fields
from typing import Any, TypeVar

from .._twin import compiled_names
from ..auth import SASLServer
from ..config import Settings
from ..relay import RelayPolicy
from ..session import Envelope, RecipientDSN, Session
from ..wire import (
    BareLineEnding,
    DataDecoder,
    DataError,
    LineReader,
    LineTooLong,
    ParseError,
    parse_command,
    parse_mail,
    parse_rcpt,
)
from . import auth_exchange, chunking, etrn, lmtp, queries, starttls
from . import replies as R
from .dsn import NO_DSN, parse_envid, parse_ret, recipient_dsn
from .events import (
    DATA_STARTED,
    NEED_DATA,
    Atrn,
    Authenticate,
    BodyChunk,
    Closed,
    Etrn,
    Event,
    Expand,
    Hello,
    MailFrom,
    MessageAborted,
    MessageEnd,
    NeedData,
    RcptTo,
    Reset,
    Verify,
)
from .replies import Reply, ehlo_reply
from .state import IN_TRANSACTION, SEQUENCE, State

__all__ = ["AUTO_ACCEPTABLE", "ServerConnection", "State", "ehlo_reply"]


# The states the per-command path tests, as module constants: on Python 3.11
# each ``State.X`` is a metaclass attribute lookup (~130 ns), ~50 per message.
_CONNECTED, _READY, _MAIL, _RCPT = State.CONNECTED, State.READY, State.MAIL, State.RCPT
_DATA, _TLS, _CLOSED, _BDAT, _AUTH = State.DATA, State.TLS, State.CLOSED, State.BDAT, State.AUTH

_E = TypeVar("_E", bound=Event)

_MAIL_ERRORS = {
    "syntax": R.SYNTAX_MAIL,
    "address": R.BAD_SENDER,
    "utf8": R.NEEDS_SMTPUTF8,
    "param": R.BAD_PARAMETER,
}
_RCPT_ERRORS = {
    "syntax": R.SYNTAX_RCPT,
    "address": R.BAD_RECIPIENT,
    "utf8": R.NEEDS_SMTPUTF8,
    "param": R.BAD_PARAMETER,
}

_MAIL_DSN = {"RET": parse_ret, "ENVID": parse_envid}
_RCPT_DSN = frozenset({"NOTIFY", "ORCPT"})

# The default answer to MessageEnd (see _answer_end), before the queue id.
_QUEUED_WIRE = R.queued("")._wire[:-2]

_DATA_ERRORS = {
    DataError.TOO_BIG: R.MESSAGE_TOO_BIG,
    DataError.LINE_TOO_LONG: R.DATA_LINE_TOO_LONG,
    DataError.BARE_LINE_ENDING: R.DATA_BARE_LINE_ENDING,
}


# An Envelope() instance's attributes. blank_envelope gives the fields that
# need new containers their own, made in place: checked here against Envelope.
_BLANK: dict[str, Any] = Envelope().__dict__
_CONTAINERS: dict[str, object] = {
    "mail_options": dict,
    "rcpt_tos": list,
    "rcpt_options": list,
    "rcpt_dsn": list,
}
if {f.name: f.default_factory for f in fields(Envelope) if f.default_factory is not MISSING} != (
    _CONTAINERS
):
    raise RuntimeError("blank_envelope makes other containers than Envelope's fields: update it")


def blank_envelope() -> Envelope:
    """``Envelope()`` at a fifth of its cost: the connection makes one per message.

    The dataclass's ``__init__`` assigns its 13 fields one by one and calls
    the ``content`` descriptor; this copies the attributes of a blank one
    and makes its four containers (in C when compiled, where calling the
    fields' factories instead cost a third of the whole).
    """
    envelope: Envelope = object.__new__(Envelope)
    attributes = _BLANK.copy()
    attributes["mail_options"] = {}
    attributes["rcpt_tos"] = []
    attributes["rcpt_options"] = []
    attributes["rcpt_dsn"] = []
    envelope.__dict__ = attributes
    return envelope


class _Profile:
    """What the connection reads of its settings on the mail path, read once per ``Settings``.

    A ``Settings`` attribute costs a dict lookup, and a one-message session
    read some 30; compiled, these are C fields (``_server_c.pxd``).
    ``_profile_of`` keeps one per settings object.
    """

    def __init__(self, settings: Settings) -> None:
        self.lmtp = settings.lmtp
        self.strict_crlf = settings.strict_crlf
        self.lenient_addresses = settings.lenient_addresses
        self.dsn = settings.dsn
        self.require_tls = settings.require_tls
        self.require_auth = settings.require_auth
        self.max_transactions = settings.max_transactions
        self.max_recipients = settings.max_recipients
        self.max_message_size = settings.max_message_size
        self.max_line_length = settings.max_line_length
        self.max_command_line = settings.max_command_line
        extensions = ["ETRN"] if settings.etrn else []
        if settings.atrn_domains:
            extensions.append("ATRN")
        self.extensions = tuple(extensions)
        self._settings = settings
        self._ehlo: dict[tuple[str, ...], Reply] = {}  # extension list -> EHLO reply
        binary = settings.chunking and settings.binarymime
        self.body_types = ("7BIT", "8BITMIME", "BINARYMIME") if binary else ("7BIT", "8BITMIME")
        self.greeting = R.greeting(settings.hostname, "LMTP" if settings.lmtp else "ESMTP")
        self.helo = R.helo_ok(settings.hostname)
        self.bye = R.bye(settings.hostname)

    def ehlo_for(self, extensions: tuple[str, ...]) -> Reply:
        """The EHLO reply offering ``extensions``, made once per list."""
        reply = self._ehlo.get(extensions)
        if reply is None:
            if len(self._ehlo) >= 64:
                self._ehlo.clear()
            reply = self._ehlo[extensions] = ehlo_reply(self._settings, extensions)
        return reply


# id(settings) -> profile. The profile holds its settings, so that their id
# is not reused for others while it is kept.
_PROFILES: dict[int, _Profile] = {}


def _profile_of(settings: Settings) -> _Profile:
    profile = _PROFILES.get(id(settings))
    if profile is None:
        if len(_PROFILES) >= 64:
            _PROFILES.clear()
        profile = _PROFILES[id(settings)] = _Profile(settings)
    return profile


class ServerConnection:
    """One server-side SMTP connection, without I/O (see the module doc)."""

    def __init__(
        self,
        settings: Settings,
        session: Session,
        extensions: Sequence[str] = (),
        *,
        starttls: bool = False,
        relay: RelayPolicy | None = None,
        auth_mechanisms: Sequence[str] = (),
        keep_body: bool = True,
        auto_accept: Collection[type[Event]] = (),
    ) -> None:
        if not AUTO_ACCEPTABLE.issuperset(auto_accept):
            names = sorted(t.__name__ for t in AUTO_ACCEPTABLE)
            raise ValueError(f"auto_accept takes only {names}")
        self.settings = settings
        profile = self._profile = _profile_of(settings)
        self.session = session
        self.envelope = blank_envelope()
        self.state = _CONNECTED
        self._reader = LineReader(profile.max_command_line, profile.strict_crlf)
        self._decoder: DataDecoder | None = None
        self._keep_body = keep_body
        # Decisions nobody takes: answered at once with their default (see _decide).
        self._auto_accept = frozenset(auto_accept)
        # What receive_data decoded straight from the peer's bytes, waiting for
        # next_event: (body, done); None when nothing is waiting.
        self._decoded: tuple[bytes, bool] | None = None
        self._data_done = False
        # BDAT: octets left in this chunk, its size, LAST, the refusal to send
        # once it is consumed, where a refused chunk leaves the state, and
        # whether this transaction's chunks have begun (DataStarted sent).
        self._chunk_left = 0
        self._chunk_size = 0
        self._chunk_last = False
        self._chunk_refusal: Reply | None = None
        self._chunk_return = _READY
        self._chunks_started = False
        self._chunks_total = 0
        self._decision: Event | None = None
        # A notice to return before reading on (Reset after a HELO/EHLO during a transaction).
        self._notice: Event | None = None
        self._eof = False
        self._errors = 0
        self._junk = 0  # NOOP-like commands since the last message (see _count_junk)
        self._transactions = 0  # MAIL commands accepted (max_transactions)
        self._out: list[bytes] = []
        self._extensions = (*extensions, *profile.extensions) if extensions else profile.extensions
        self._body_types = profile.body_types
        # STARTTLS is offered when the I/O layer can do it and TLS is not on yet.
        self._starttls = starttls and not session.tls
        self._relay = relay if relay is not None and relay.enabled else None
        # SASL mechanisms the I/O layer can check (none: AUTH is not offered).
        self._auth_mechanisms = tuple(auth_mechanisms)
        self._sasl: SASLServer | None = None
        self._extended_before = False  # session.extended before a HELO/EHLO being decided

    # --- what the I/O layer calls ---------------------------------------
    @property
    def closed(self) -> bool:
        """True once the connection is over; flush ``data_to_send`` and close."""
        return self.state is _CLOSED

    @property
    def in_data(self) -> bool:
        """True while a message body is being received (DATA timeout applies)."""
        return self.state is _DATA or self.state is _BDAT

    @property
    def pending_decision(self) -> Event | None:
        """The decision event that waits for ``respond``, if any."""
        return self._decision

    def greet(self, reply: Reply | None = None) -> None:
        """Send the greeting, or ``reply`` (4xx/5xx) to refuse the client and close."""
        if reply is None or reply.code < 400:
            self._send(reply or self._profile.greeting)
        else:
            self._send(reply)
            self.state = State.CLOSED

    def receive_data(self, data: bytes | memoryview) -> None:
        """Take bytes from the peer; ``b""`` means the peer closed its side."""
        if self.state is _CLOSED or self.state is _TLS:
            # RFC 3207 §4.2 / CVE-2011-0411: nothing sent before the handshake
            # may be acted on after it.
            return
        if not data:
            self._eof = True
        elif (
            self._decoded is None
            and (decoder := self._decoder) is not None
            and not decoder.done
            and not self._reader
        ):
            # In DATA with nothing buffered before these bytes: decode them now.
            body, done, leftover = decoder.feed(data)
            self._decoded = (body, done)
            if done:
                self._reader.feed(leftover)  # pipelined commands after the body
        else:
            self._reader.feed(data)

    def data_to_send(self) -> bytes:
        """Everything queued for the peer since the last call."""
        if not self._out:
            return b""
        out = b"".join(self._out)
        del self._out[:]  # not .clear(): compiled, a C call instead of a method lookup
        return out

    def timed_out(self) -> None:
        """The peer was silent too long: say 421 and close (RFC 5321 §4.5.3.2)."""
        self._close_with(R.timeout(self.settings.hostname))

    def shutdown(self) -> None:
        """The server is stopping: say 421 and close (RFC 5321 §3.8)."""
        self._close_with(R.shutting_down(self.settings.hostname))

    # Bound from the modules of their commands (see the module doc).
    tls_started = starttls.tls_started
    respond_auth = auth_exchange.respond_auth
    respond_recipients = lmtp.respond_recipients
    _auth_step = auth_exchange.step
    _chunk_event = chunking.chunk_event

    def next_event(self) -> Event | NeedData:
        """The next event, or ``NEED_DATA`` when more input is needed."""
        if self._decision is not None:
            raise RuntimeError(f"respond() to {self._decision!r} before reading on")
        if self._notice is not None:
            notice, self._notice = self._notice, None
            return notice
        if self.state is _CLOSED or self.state is _TLS:
            return NEED_DATA
        reader = self._reader
        event: Event | NeedData | None
        while True:
            if self.state is _DATA:
                return self._body_event()
            if self.state is _BDAT:
                event = self._chunk_event()
                if event is not None:
                    return event
                continue
            try:
                line = reader.next_line()
            except LineTooLong:
                event = self._bad(R.LINE_TOO_LONG)
            except BareLineEnding:
                event = self._bad(R.BARE_LINE_ENDING)
            else:
                if line is None:
                    if self._eof:
                        return self._close("connection closed by client")
                    return NEED_DATA
                if self.state is _AUTH:
                    assert self._sasl is not None
                    event = self._auth_step(self._sasl.line(line))
                    if event is not None:
                        return event
                    continue
                verb, args = parse_command(line)
                entry = _COMMANDS.get(verb)
                if entry is None:
                    event = self._bad(R.UNKNOWN_COMMAND)
                else:
                    refusal = entry[1].get(self.state)
                    event = self._bad(refusal) if refusal else entry[0](self, args)
            if event is not None:
                return event

    def respond(self, reply: Reply | None = None) -> None:
        """Answer the pending decision; ``None`` accepts with the default reply.

        A reply below 400 accepts, anything else refuses. The default answer
        to ``MessageEnd`` names ``envelope.queue_id`` when the I/O layer gave
        the message one (``250 2.0.0 OK: queued as ...``).
        """
        event = self._decision
        if event is None:
            raise RuntimeError("no decision is pending")
        if type(event) is MessageEnd:
            if self._profile.lmtp:
                # RFC 2033 §4.2: one reply per recipient, here all the same.
                self.respond_recipients([reply] * len(self.envelope.rcpt_tos))
                return
            self._decision = None
            self._answer_end(reply)
            self._end_message(reply is None or reply.code < 400)
            return
        self._decision = None
        accept = reply is None or reply.code < 400
        self._send(_RESPONDERS[type(event)](self, event, reply, accept))

    def _respond_mail(self, event: MailFrom, reply: Reply | None, accept: bool) -> Reply:
        if accept:
            self._take_mail(event.address, event.options, event.dsn_ret, event.dsn_envid)
        return reply or R.SENDER_OK

    def _take_mail(
        self, address: str, options: dict[str, str | None], ret: str | None, envid: str | None
    ) -> None:
        env = self.envelope
        env.mail_from = address
        env.mail_options = options
        env.smtputf8 = "SMTPUTF8" in options
        body = options.get("BODY")
        env.body_type = body.upper() if body else None
        env.dsn_ret = ret
        env.dsn_envid = envid
        self.state = _MAIL
        self._transactions += 1

    def _respond_rcpt(self, event: RcptTo, reply: Reply | None, accept: bool) -> Reply:
        if accept:
            self._take_rcpt(event.address, event.options, event.dsn)
        return reply or R.RECIPIENT_OK

    def _take_rcpt(self, address: str, options: dict[str, str | None], dsn: RecipientDSN) -> None:
        envelope = self.envelope
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.append(options)
        envelope.rcpt_dsn.append(dsn)
        self.state = _RCPT

    def _answer_end(self, reply: Reply | None) -> None:
        """Send ``reply`` to the end of a message, or the default acceptance.

        That is 250 naming the message's ``queue_id`` when the I/O layer gave
        it one, as Postfix does, else 250 OK. Its bytes are made here, without
        a ``Reply``: the default is the usual answer, once per message.
        """
        queue_id = self.envelope.queue_id
        if reply is not None:
            self._send(reply)
        elif queue_id:
            self._out.append(_QUEUED_WIRE + queue_id.encode() + b"\r\n")
        else:
            self._send(R.OK)

    def _end_message(self, accepted: bool) -> None:
        """The message is answered: count it if accepted, and begin anew."""
        if accepted:
            self.session.transactions += 1
            self._junk = 0
        self._reset_transaction()
        self.state = _READY

    # --- internals ------------------------------------------------------
    def _send(self, reply: Reply) -> None:
        self._out.append(reply._wire)  # encode() without a call: this is per reply

    def _decide(self, event: Event) -> Event | None:
        """Wait for ``respond`` to ``event``; unless nobody decides it (``auto_accept``).

        Then it is answered at once with its default, and reading goes on; a
        notice it made (``Reset``, after a HELO in a transaction) comes first.
        """
        if type(event) in self._auto_accept:
            return self._accepted(_RESPONDERS[type(event)](self, event, None, True))
        return self._wait(event)

    def _accepted(self, reply: Reply) -> Event | None:
        """Send the reply to a decision taken by itself; a notice it made comes first."""
        self._send(reply)
        notice, self._notice = self._notice, None
        return notice

    def _wait(self, event: _E) -> _E:
        """Hold ``event`` until ``respond`` answers it (``MessageEnd`` always)."""
        self._decision = event
        return event

    def _close(self, reason: str) -> Closed:
        self.state = State.CLOSED
        self._decoder = None
        return Closed(reason)

    def _close_with(self, reply: Reply) -> None:
        if self.state is not State.CLOSED:
            self._send(reply)
            self._close(reply.text)
            self._decision = None

    def _bad(self, reply: Reply) -> Closed | None:
        """A client error: reply, count it, and close after too many."""
        if self.state is State.AUTH:  # an error ends the AUTH exchange
            self._sasl = None
            self.state = State.READY
        if reply is R.NEED_HELO and self._profile.lmtp:
            reply = R.NEED_LHLO
        self._send(reply)
        return self._count_error()

    def _count_error(self) -> Closed | None:
        """One more client error; after ``max_errors``, 421 and close."""
        self._errors += 1
        if self._errors >= self.settings.max_errors:
            self._send(R.too_many_errors(self.settings.hostname))
            return self._close("too many errors")
        return None

    def _count_junk(self) -> Closed | None:
        """A command that moves no mail (NOOP, RSET, HELP, VRFY, EXPN, ETRN).

        Past ``max_junk_commands`` since the last accepted message each one
        counts as an error too, as Postfix's ``smtpd_junk_command_limit``
        does: a client that only keeps a connection busy is let go.
        """
        self._junk += 1
        limit = self.settings.max_junk_commands
        if limit and self._junk > limit:
            return self._count_error()
        return None

    def _reset_transaction(self) -> None:
        if self.envelope.mail_from is not None or self.envelope.rcpt_tos:
            self.envelope = blank_envelope()
        self._chunks_started = False
        self._chunks_total = 0

    def _body_event(self) -> Event | NeedData:
        decoder = self._decoder
        assert decoder is not None
        if not self._data_done:
            if self._decoded is not None:
                body, done = self._decoded
                self._decoded = None
            elif self._reader:
                body, done, leftover = decoder.feed(self._reader.drain())
                if done:
                    # The reader was drained, so pipelined commands keep their order.
                    self._reader.feed(leftover)
            elif self._eof:
                return self._close("connection lost during DATA")
            else:
                return NEED_DATA
            self._data_done = done
            if body and not decoder.error:
                return BodyChunk(body)
            if not done:
                return NEED_DATA
        self._data_done = False
        self._decoder = None
        if decoder.error:
            reply = _DATA_ERRORS[decoder.error]
            self._send(reply)
            self._reset_transaction()
            self.state = State.READY
            return MessageAborted(reply)
        return self._wait(MessageEnd(decoder.size))

    # --- commands (RFC 5321 §4.1.1) -------------------------------------

    # HELO, EHLO and LHLO (RFC 5321 §4.1.1.1, RFC 2033 §4.1) are here, not in
    # a module beside: compiled, an auto-accepted EHLO costs a third less
    # than as interpreted functions of the connection.
    def _helo(self, args: bytes) -> Event | None:
        if self._profile.lmtp:
            return self._bad(R.LMTP_NEEDS_LHLO)
        return self._hello("HELO", args)

    def _ehlo(self, args: bytes) -> Event | None:
        if self._profile.lmtp:
            return self._bad(R.LMTP_NEEDS_LHLO)
        return self._hello("EHLO", args)

    def _lhlo(self, args: bytes) -> Event | None:
        # LMTP's EHLO by another name, in LMTP only.
        if not self._profile.lmtp:
            return self._bad(R.UNKNOWN_COMMAND)
        return self._hello("LHLO", args)

    def _hello(self, verb: str, args: bytes) -> Event | None:
        if not args:
            return self._bad(R.SYNTAX_HELO)
        try:  # decode()'s codec lookup for "replace" costs more than the rest of the command
            host_name = args.decode()
        except UnicodeDecodeError:
            host_name = args.decode("utf-8", "replace")
        if Hello in self._auto_accept:  # nobody decides: accepted without making the event
            return self._accepted(self._greeted(verb, host_name, None))
        # While the hook decides, ``extended`` tells EHLO/LHLO from HELO (as
        # aiosmtpd's extended_smtp does); a refusal puts it back.
        self._extended_before = self.session.extended
        self.session.extended = verb != "HELO"
        return self._decide(Hello(verb, host_name))

    def _respond_hello(self, event: Hello, reply: Reply | None, accept: bool) -> Reply:
        if not accept:
            assert reply is not None
            self.session.extended = self._extended_before
            return reply
        return self._greeted(event.verb, event.host_name, reply)

    def _greeted(self, verb: str, host_name: str, reply: Reply | None) -> Reply:
        """The session starts afresh, named ``host_name``; the reply to send."""
        if self.state in IN_TRANSACTION:
            # RFC 5321 §4.1.4: an accepted HELO/EHLO resets like RSET.
            self._notice = Reset(self.envelope)
        self._reset_transaction()
        session = self.session
        session.host_name = host_name
        session.extended = extended = verb != "HELO"
        self.state = _READY
        if extended:
            extensions = ("STARTTLS", *self._extensions) if self._starttls else self._extensions
            if self._auth_mechanisms and self._auth_offered:
                extensions = (*extensions, "AUTH " + " ".join(self._auth_mechanisms))
            return self._profile.ehlo_for(extensions)
        return reply or self._profile.helo

    def _mail(self, args: bytes) -> Event | None:
        profile = self._profile
        limit = profile.max_transactions
        if limit and self._transactions >= limit:
            # RFC 5321 §4.3.2 allows 421 to MAIL; the client reconnects for the rest.
            self._send(R.too_many_transactions(self.settings.hostname))
            return self._close("too many transactions")
        if profile.require_tls and not self.session.tls:
            return self._bad(R.TLS_REQUIRED)
        if profile.require_auth and not self.session.auth:
            return self._bad(R.AUTH_REQUIRED)
        try:
            address, params = parse_mail(args, lenient=profile.lenient_addresses)
        except ParseError as exc:
            return self._bad(_MAIL_ERRORS[exc.kind])
        dsn: dict[str, str] = {}
        problem = self._check_mail_params(params, dsn)
        if problem is R.MESSAGE_TOO_BIG:
            # RFC 1870 §6.1: 552 for a declared size over the limit; not a client error.
            self._send(problem)
            return None
        if problem is not None:
            return self._bad(problem)
        if MailFrom in self._auto_accept:  # per message: accepted without making the event
            self._take_mail(address, params, dsn.get("RET"), dsn.get("ENVID"))
            self._send(R.SENDER_OK)
            return None
        return self._decide(MailFrom(address, params, dsn.get("RET"), dsn.get("ENVID")))

    def _check_mail_params(
        self, params: dict[str, str | None], dsn: dict[str, str]
    ) -> Reply | None:
        """The reply refusing MAIL's parameters, or None when they are acceptable.

        RET and ENVID, once checked, are left typed in ``dsn``.
        """
        settings = self.settings
        if params and not self.session.extended:
            # Parameters are ESMTP: not after plain HELO (RFC 5321 §4.1.2).
            return R.UNKNOWN_PARAMETER
        for key, value in params.items():
            if key == "SIZE":  # RFC 1870 §6
                if value is None or not value.isdigit():
                    return R.BAD_SIZE
                if int(value) > self._profile.max_message_size:
                    return R.MESSAGE_TOO_BIG
            elif key == "BODY" and settings.eightbitmime:  # RFC 6152, RFC 3030 §3
                if value is None or value.upper() not in self._body_types:
                    return R.BAD_BODY
            elif key == "SMTPUTF8" and settings.smtputf8:  # RFC 6531 §3.4
                if value is not None:
                    return R.BAD_PARAMETER
            elif key == "AUTH" and self._auth_offered:  # RFC 4954 §5: taken, not trusted
                if value is None:
                    return R.BAD_PARAMETER
            elif key in _MAIL_DSN and self._profile.dsn:  # RFC 3461 §4.3, §4.4
                try:
                    dsn[key] = _MAIL_DSN[key](value)
                except ValueError:
                    return R.BAD_DSN_PARAMETER
            else:
                return R.UNKNOWN_PARAMETER
        return None

    def _rcpt(self, args: bytes) -> Event | None:
        profile = self._profile
        try:
            address, params = parse_rcpt(
                args, utf8=self.envelope.smtputf8, lenient=profile.lenient_addresses
            )
        except ParseError as exc:
            return self._bad(_RCPT_ERRORS[exc.kind])
        if params and (not profile.dsn or not params.keys() <= _RCPT_DSN):
            return self._bad(R.UNKNOWN_PARAMETER)
        try:
            dsn = recipient_dsn(params) if params else NO_DSN
        except ValueError:
            return self._bad(R.BAD_DSN_PARAMETER)
        if len(self.envelope.rcpt_tos) >= profile.max_recipients:
            # RFC 5321 §4.5.3.1.8: 452 and the client may retry the rest later.
            self._send(R.TOO_MANY_RECIPIENTS)
            return None
        if self._relay is not None:
            refusal = self._relay.check(address, self.session)
            if refusal is not None:
                # Counted like a bad command: it caps address harvesting too.
                return self._bad(refusal)
        if RcptTo in self._auto_accept:  # per recipient: accepted without making the event
            self._take_rcpt(address, params, dsn)
            self._send(R.RECIPIENT_OK)
            return None
        return self._decide(RcptTo(address, params, dsn))

    def _data(self, args: bytes) -> Event | None:
        if args:
            return self._bad(R.NO_ARGUMENTS)
        if self.envelope.body_type == "BINARYMIME":
            return self._bad(R.BINARYMIME_NEEDS_BDAT)  # RFC 3030 §3
        profile = self._profile
        self._decoder = DataDecoder(
            profile.max_message_size,
            profile.max_line_length,
            profile.strict_crlf,
            self._keep_body,
        )
        self.state = _DATA
        self._send(R.START_DATA)
        return DATA_STARTED

    def _rset(self, args: bytes) -> Event | None:
        if args:
            return self._bad(R.NO_ARGUMENTS)
        abandoned = self.envelope
        self._reset_transaction()
        if self.state is not State.CONNECTED:
            self.state = State.READY
        self._send(R.OK)
        return self._count_junk() or Reset(abandoned)

    def _noop(self, args: bytes) -> Event | None:
        # RFC 5321 §4.1.1.9: a NOOP argument is allowed and ignored.
        self._send(R.OK)
        return self._count_junk()

    def _quit(self, args: bytes) -> Event | None:
        if args:
            return self._bad(R.NO_ARGUMENTS)
        self._send(self._profile.bye)
        return self._close("QUIT")

    @property
    def _auth_offered(self) -> bool:
        # RFC 4954 §4 / RFC 8314: passwords only under TLS unless allowed.
        return bool(self._auth_mechanisms) and (self.session.tls or self.settings.auth_without_tls)

    def _not_implemented(self, args: bytes) -> Event | None:
        return self._bad(R.NOT_IMPLEMENTED)


Command = Callable[[ServerConnection, bytes], Event | None]
_NO_RULE: dict[State, Reply] = {}
_COMMANDS: dict[str, tuple[Command, dict[State, Reply]]] = {
    verb: (command, SEQUENCE.get(verb, _NO_RULE))
    for verb, command in {
        "HELO": ServerConnection._helo,
        "EHLO": ServerConnection._ehlo,
        "LHLO": ServerConnection._lhlo,
        "MAIL": ServerConnection._mail,
        "RCPT": ServerConnection._rcpt,
        "DATA": ServerConnection._data,
        "RSET": ServerConnection._rset,
        "NOOP": ServerConnection._noop,
        "QUIT": ServerConnection._quit,
        "HELP": queries.help_,
        "VRFY": queries.vrfy,
        "EXPN": queries.expn,
        "STARTTLS": starttls.starttls,
        "BDAT": chunking.bdat,
        "AUTH": auth_exchange.auth,
        "ETRN": etrn.etrn,
        "ATRN": etrn.atrn,
        # RFC 821 TURN cannot be authenticated (RFC 2645 §1): never offered.
        "TURN": ServerConnection._not_implemented,
    }.items()
}

Responder = Callable[[ServerConnection, Any, Reply | None, bool], Reply]
_RESPONDERS: dict[type, Responder] = {
    Hello: ServerConnection._respond_hello,
    MailFrom: ServerConnection._respond_mail,
    RcptTo: ServerConnection._respond_rcpt,
    Verify: queries.respond_vrfy,
    Expand: queries.respond_expn,
    Etrn: etrn.respond_etrn,
    Atrn: etrn.respond_atrn,
    Authenticate: auth_exchange.respond_authenticate,
}

#: The decisions ``auto_accept`` may name: those whose default answer is safe
#: (never ``Authenticate``: its default would take any password).
AUTO_ACCEPTABLE: frozenset[type[Event]] = frozenset({Hello, MailFrom, RcptTo, Verify, Expand})


# The compiled twin (see fastsmtp._twin); _server_c.pxd declares the compiled
# ServerConnection's attributes.
globals().update(compiled_names(__name__, "fastsmtp.protocol._server_c"))
