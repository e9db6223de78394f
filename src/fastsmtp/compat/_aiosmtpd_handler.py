"""The aiosmtpd calling convention on fastsmtp hooks: ``HandlerAdapter`` and its objects.

See ``fastsmtp.compat.aiosmtpd`` for how the hooks map.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ..config import Settings
from ..handler import Handler
from ..protocol import replies as R
from ..protocol.replies import Reply
from ..session import Address
from ..session import Envelope as NativeEnvelope
from ..session import Session as NativeSession
from ._status import StatusError, parse_status

__all__ = [
    "Envelope",
    "HandlerAdapter",
    "ServerView",
    "Session",
    "UnsupportedError",
    "UnsupportedHookWarning",
]

log = logging.getLogger("fastsmtp.compat")

# decode_data without SMTPUTF8 takes only ASCII content, as in aiosmtpd.
_STRICT_ASCII = Reply(500, "5.6.0", "Error: strict ASCII mode")

# Hooks fastsmtp cannot call, and why: the handler gets a warning (the command
# still works, answered by fastsmtp) ...
_SKIPPED_HOOKS = {
    "handle_NOOP": "fastsmtp answers NOOP itself (250) and has no hook for it",
    "handle_QUIT": "fastsmtp answers QUIT itself (221) and has no hook for it",
    "handle_VRFY": "fastsmtp answers VRFY itself (252) and has no hook for it yet",
}
# ... or an error, because ignoring them would change what the handler decides.
_UNSUPPORTED_HOOKS = {
    "handle_AUTH": "fastsmtp runs the AUTH exchange itself; give the Controller an "
    "authenticator= (or auth_callback=) to decide logins",
    "handle_STARTTLS": "fastsmtp has no hook into the TLS handshake",
    "handle_PROXY": "fastsmtp has no PROXY protocol support yet",
}


class UnsupportedError(TypeError):
    """The handler or the controller asks for an aiosmtpd feature fastsmtp lacks."""


class UnsupportedHookWarning(UserWarning):
    """The handler defines a hook fastsmtp never calls (the command is still answered)."""


class Session:
    """One client connection, with aiosmtpd's attribute names.

    ``peer`` is the client's ``(host, port)``; ``host_name`` what it said in
    HELO/EHLO; ``extended_smtp`` is true after EHLO; ``loop`` is the server's
    event loop. ``ssl`` is a dict once the connection is encrypted (empty:
    fastsmtp does not hand the TLS details to hooks), ``None`` before.
    After a successful AUTH, ``authenticated`` is true and ``auth_data`` and
    ``login_data`` are set as aiosmtpd sets them (see ``CompatAuthenticator``).
    ``proxy_data`` is always ``None``. Hooks may add attributes of their own.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.peer: tuple[str, int] | str | None = None
        self.ssl: dict[str, Any] | None = None
        self.host_name: str | None = None
        self.extended_smtp = False
        self.loop = loop
        self.proxy_data: object = None
        self.auth_data: object = None
        self.authenticated: bool | None = None
        self.login_data: object = None


class Envelope:
    """One mail transaction, with aiosmtpd's attribute names.

    ``mail_options`` and ``rcpt_options`` are lists of parameter strings
    (``["SIZE=1024", "BODY=8BITMIME"]``). After DATA, ``original_content``
    holds the message bytes as the client sent them (dot-unstuffed) and
    ``content`` the same, or a ``str`` with ``decode_data=True``. Hooks may
    add attributes of their own.
    """

    def __init__(self) -> None:
        self.mail_from: str | None = None
        self.mail_options: list[str] = []
        self.smtp_utf8 = False
        self.content: bytes | str | None = None
        self.original_content: bytes | None = None
        self.rcpt_tos: list[str] = []
        self.rcpt_options: list[str] = []


class ServerView:
    """What hooks get as ``server``: the parts of aiosmtpd's ``SMTP`` that map.

    ``hostname``, ``data_size_limit``, ``enable_SMTPUTF8``, ``event_handler``,
    ``loop`` and the connection's current ``session`` and ``envelope``.
    """

    def __init__(self, adapter: HandlerAdapter, connection: _Connection) -> None:
        settings = adapter.settings
        self.hostname = settings.hostname
        self.data_size_limit: int | None = settings.max_message_size
        self.enable_SMTPUTF8 = settings.smtputf8
        self.event_handler = adapter.handler
        self.loop = connection.session.loop
        self._connection = connection

    @property
    def session(self) -> Session:
        """The connection's session."""
        return self._connection.session

    @property
    def envelope(self) -> Envelope:
        """The current transaction's envelope."""
        return self._connection.envelope

    async def push(self, status: str | bytes) -> None:
        """Not available: fastsmtp writes replies itself, never a hook."""
        raise NotImplementedError(
            "server.push() is not available on fastsmtp: return the status string instead"
        )


@dataclass(eq=False)
class _Connection:
    """The aiosmtpd-side state of one connection."""

    session: Session
    envelope: Envelope = field(default_factory=Envelope)
    view: ServerView | None = None
    # The fastsmtp envelope that ``envelope`` mirrors. fastsmtp replaces its
    # envelope when a transaction ends (also when it refuses a message by
    # itself, without a hook); a different object means a new transaction.
    native: NativeEnvelope | None = None
    # An accepted HELO/EHLO during a transaction makes fastsmtp call on_reset;
    # aiosmtpd calls handle_RSET only for RSET.
    reset_by_helo: bool = False

    def new_envelope(self, native: NativeEnvelope | None = None) -> None:
        self.envelope = Envelope()
        self.native = native


HookFn = Callable[..., Any]


class HandlerAdapter(Handler):
    """A fastsmtp ``Handler`` that runs an aiosmtpd-style handler.

    ``settings`` must be those of the ``Server`` it runs in (``server.hostname``
    and friends come from them). ``decode_data`` gives ``envelope.content``
    as ``str``, as aiosmtpd's option of that name does. ``ident`` replaces
    the greeting's text after the host name. ``received_header`` keeps
    fastsmtp's ``Received:`` header at the top of ``envelope.content``
    (aiosmtpd adds none, so by default it is left out there; fastsmtp's own
    envelope always has it).

    Raises ``UnsupportedError`` for hooks fastsmtp cannot honour and warns
    (``UnsupportedHookWarning``) for hooks it cannot call; see the module doc.
    """

    def __init__(
        self,
        handler: object,
        *,
        settings: Settings | None = None,
        decode_data: bool = False,
        ident: str | None = None,
        received_header: bool = False,
        starttls: bool = False,
    ) -> None:
        self.handler = handler
        self.settings = settings or Settings()
        self.decode_data = decode_data
        self.ident = ident
        self.received_header = received_header
        #: the server offers STARTTLS (for the lines handle_EHLO is shown)
        self.starttls_offered = starttls
        self._connections: dict[str, _Connection] = {}
        _check_hooks(handler)
        self._helo = _hook(handler, "handle_HELO")
        self._ehlo = _hook(handler, "handle_EHLO")
        # aiosmtpd's old handle_EHLO(server, session, envelope, hostname) returns
        # a status; the new one also takes the reply lines and returns them.
        self._ehlo_takes_lines = self._ehlo is not None and _arity(self._ehlo) >= 5
        self._mail = _hook(handler, "handle_MAIL")
        self._rcpt = _hook(handler, "handle_RCPT")
        self._data = _hook(handler, "handle_DATA")
        self._rset = _hook(handler, "handle_RSET")
        self._exception = _hook(handler, "handle_exception")
        self._process_message = None if self._data else _hook(handler, "process_message")
        if self._process_message is not None:
            warnings.warn(
                "process_message() is deprecated in aiosmtpd; use handle_DATA()",
                DeprecationWarning,
                stacklevel=2,
            )
        if ident is not None:
            self.on_connect = self._greet

    # --- fastsmtp hooks ---------------------------------------------------
    on_connect: Callable[[NativeSession], Awaitable[Reply | None]] | None = None

    async def _greet(self, session: NativeSession) -> Reply | None:
        return Reply(220, None, f"{self.settings.hostname} {self.ident}")

    async def on_helo(self, session: NativeSession, host_name: str) -> Reply | None:
        """``handle_HELO``/``handle_EHLO``; aiosmtpd starts a new envelope on either.

        As in aiosmtpd, a hook that accepts must set ``session.host_name``
        itself. ``handle_EHLO`` gets aiosmtpd-style reply lines for the
        extensions fastsmtp offers; if its last line is a 2xx, fastsmtp
        answers with its own extension list, else that line refuses EHLO.
        """
        conn = self._connection(session)
        conn.reset_by_helo = conn.native is not None and conn.native.mail_from is not None
        conn.new_envelope()
        hook = self._ehlo if session.extended else self._helo
        if hook is None:
            conn.session.host_name = host_name
            return None
        if not session.extended or not self._ehlo_takes_lines:
            # RFC 2034 §3: no enhanced code on the reply to HELO/EHLO.
            return await self._call(conn, hook, host_name, success=None)
        lines = self._ehlo_lines(session)
        try:
            answer = await invoke(hook, conn.view, conn.session, conn.envelope, host_name, lines)
        except Exception as error:
            return await self._handle_exception(conn, hook, error)
        if not isinstance(answer, list) or not answer or not isinstance(answer[-1], str):
            wrong = StatusError(f"{_name(hook)}: returned {answer!r}, not a list of reply lines")
            return await self._handle_exception(conn, hook, wrong)
        last = answer[-1]
        if last[:1] == "2":
            return None
        try:
            return parse_status(last)
        except StatusError as bad:
            return await self._handle_exception(conn, hook, StatusError(f"{_name(hook)}: {bad}"))

    def _ehlo_lines(self, session: NativeSession) -> list[str]:
        """What aiosmtpd would hand ``handle_EHLO``: ``250-`` lines, then ``250 HELP``."""
        settings = self.settings
        lines = [f"250-{settings.hostname}", f"250-SIZE {settings.max_message_size}"]
        if settings.eightbitmime:
            lines.append("250-8BITMIME")
        if settings.smtputf8:
            lines.append("250-SMTPUTF8")
        if self.starttls_offered and not session.tls:
            lines.append("250-STARTTLS")
        return [*lines, "250 HELP"]

    async def on_mail(
        self, session: NativeSession, envelope: NativeEnvelope, sender: Address
    ) -> Reply | None:
        """``handle_MAIL(server, session, envelope, address, mail_options)``."""
        conn = self._connection(session, envelope)
        if not conn.session.host_name:
            return R.NEED_HELO
        if conn.envelope.mail_from:
            return R.NESTED_MAIL
        options = _option_strings(sender.options)
        conn.envelope.smtp_utf8 = "SMTPUTF8" in sender.options
        if self._mail is None:
            conn.envelope.mail_from = sender.address
            conn.envelope.mail_options.extend(options)
            return None
        return await self._call(conn, self._mail, sender.address, options, success="2.1.0")

    async def on_rcpt(
        self, session: NativeSession, envelope: NativeEnvelope, rcpt: Address
    ) -> Reply | None:
        """``handle_RCPT(server, session, envelope, address, rcpt_options)``."""
        conn = self._connection(session, envelope)
        if not conn.session.host_name:
            return R.NEED_HELO
        if conn.envelope.mail_from is None:
            return R.NEED_MAIL
        options = _option_strings(rcpt.options)
        if self._rcpt is None:
            conn.envelope.rcpt_tos.append(rcpt.address)
            conn.envelope.rcpt_options.extend(options)
            return None
        return await self._call(conn, self._rcpt, rcpt.address, options, success="2.1.5")

    async def on_message(self, session: NativeSession, envelope: NativeEnvelope) -> Reply | None:
        """``handle_DATA(server, session, envelope)`` with the content filled in."""
        conn = self._connection(session, envelope)
        try:
            if not conn.session.host_name:
                return R.NEED_HELO
            if not conn.envelope.rcpt_tos:
                return R.NEED_RCPT
            body = envelope.body
            if body is not None and body.spooled:
                # aiosmtpd hands over bytes: read a spooled body off the loop.
                envelope.content = await asyncio.get_running_loop().run_in_executor(None, body.read)
            raw = envelope.content or b""
            if not self.received_header:
                raw = _without_trace(raw)
            conn.envelope.original_content = raw
            if self.decode_data:
                try:
                    conn.envelope.content = _decode(raw, self.settings.smtputf8)
                except UnicodeDecodeError:
                    return _STRICT_ASCII
            else:
                conn.envelope.content = raw
            if self._data is not None:
                return await self._call(conn, self._data)
            if self._process_message is not None:
                return await self._legacy_process_message(conn)
            return None
        finally:
            # fastsmtp ends the transaction after DATA, whatever the reply.
            conn.new_envelope()

    async def on_reset(self, session: NativeSession, envelope: NativeEnvelope) -> None:
        """``handle_RSET(server, session, envelope)``, after fastsmtp's 250."""
        conn = self._connection(session, envelope, helo_notice=True)
        by_helo, conn.reset_by_helo = conn.reset_by_helo, False
        conn.new_envelope(envelope)
        if by_helo or self._rset is None:
            return
        reply = await self._call(conn, self._rset)
        if not reply.is_success:
            log.warning(
                "%s: handle_RSET returned %r; fastsmtp has already answered RSET with 250",
                session.id,
                str(reply),
            )

    async def on_disconnect(self, session: NativeSession) -> None:
        """Forget the connection."""
        self._connections.pop(session.id, None)

    # --- internals ----------------------------------------------------------
    def _connection(
        self,
        session: NativeSession,
        envelope: NativeEnvelope | None = None,
        *,
        helo_notice: bool = False,
    ) -> _Connection:
        conn = self._connections.get(session.id)
        if conn is None:
            loop = asyncio.get_running_loop()
            conn = _Connection(Session(loop))
            conn.session.peer = session.peer
            conn.view = ServerView(self, conn)
            self._connections[session.id] = conn
        if not helo_notice:
            # The reset that follows HELO comes next or not at all.
            conn.reset_by_helo = False
        if session.tls and conn.session.ssl is None:
            # Encrypted now: after STARTTLS the session starts afresh (RFC 3207
            # §4.2), and aiosmtpd gives the hooks a new Session.
            fresh = Session(conn.session.loop)
            fresh.peer, fresh.ssl = conn.session.peer, {}
            conn.session = fresh
            conn.new_envelope()
        conn.session.extended_smtp = session.extended
        if envelope is not None and envelope is not conn.native:
            if conn.native is not None:
                conn.new_envelope()
            conn.native = envelope
        return conn

    async def _call(
        self, conn: _Connection, hook: HookFn, *args: Any, success: str | None = "2.0.0"
    ) -> Reply:
        """Call a hook as aiosmtpd does; an error goes to handle_exception or is 451."""
        try:
            status = await invoke(hook, conn.view, conn.session, conn.envelope, *args)
        except Exception as error:
            return await self._handle_exception(conn, hook, error)
        try:
            return parse_status(status, success=success)
        except StatusError as error:
            # aiosmtpd fails when it writes such a value; it is the hook's error here too.
            return await self._handle_exception(conn, hook, StatusError(f"{_name(hook)}: {error}"))

    async def _handle_exception(self, conn: _Connection, hook: HookFn, error: Exception) -> Reply:
        if self._exception is None:
            log.error("%s failed", _name(hook), exc_info=error)
            return R.HANDLER_ERROR
        log.debug("%s failed; calling handle_exception", _name(hook), exc_info=error)
        try:
            return parse_status(await invoke(self._exception, error))
        except Exception:
            # aiosmtpd documents 451 when handle_exception fails or returns nothing.
            log.exception("handle_exception failed for %r", error)
            return R.HANDLER_ERROR

    async def _legacy_process_message(self, conn: _Connection) -> Reply | None:
        """aiosmtpd's pre-1.0 API: ``process_message(peer, mail_from, rcpt_tos, data)``."""
        assert self._process_message is not None
        env = conn.envelope
        args = (conn.session.peer, env.mail_from, env.rcpt_tos, env.content)
        try:
            status = await invoke(self._process_message, *args)
            return None if status is None else parse_status(status)
        except Exception as error:
            return await self._handle_exception(conn, self._process_message, error)


def _check_hooks(handler: object) -> None:
    """Refuse what fastsmtp cannot honour; warn about what it cannot call."""
    names = set(dir(handler))
    for name in sorted(names & _UNSUPPORTED_HOOKS.keys()):
        raise UnsupportedError(
            f"{type(handler).__name__}.{name}: {_UNSUPPORTED_HOOKS[name]} "
            "(fastsmtp.compat.aiosmtpd)"
        )
    mechanisms = sorted(n for n in names if n.startswith("auth_"))
    if mechanisms:
        raise UnsupportedError(
            f"{type(handler).__name__} defines AUTH mechanisms ({', '.join(mechanisms)}); "
            "fastsmtp offers PLAIN and LOGIN itself and takes no custom SASL mechanisms "
            "(fastsmtp.compat.aiosmtpd)"
        )
    for name in sorted(names & _SKIPPED_HOOKS.keys()):
        warnings.warn(
            f"{type(handler).__name__}.{name} is never called: {_SKIPPED_HOOKS[name]}",
            UnsupportedHookWarning,
            stacklevel=3,
        )


def _hook(handler: object, name: str) -> HookFn | None:
    fn = getattr(handler, name, None)
    if fn is not None and not callable(fn):
        raise TypeError(f"{type(handler).__name__}.{name} must be callable")
    return fn


def _arity(fn: HookFn) -> int:
    """How many positional parameters ``fn`` takes (bound ``self`` excluded)."""
    try:
        return len(inspect.signature(fn).parameters)
    except (TypeError, ValueError):  # a builtin or C callable: assume the new form
        return 5


def _name(hook: HookFn) -> str:
    return getattr(hook, "__qualname__", None) or repr(hook)


async def invoke(fn: HookFn, *args: Any) -> Any:
    """Await a coroutine function; run a plain one in the thread pool."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    result = await asyncio.get_running_loop().run_in_executor(None, partial(fn, *args))
    if inspect.isawaitable(result):
        result = await result
    return result


def _option_strings(options: dict[str, str | None]) -> list[str]:
    """fastsmtp's parameter dict as aiosmtpd's list of uppercased ``KEY[=VALUE]``."""
    return [(key if value is None else f"{key}={value}").upper() for key, value in options.items()]


def _without_trace(content: bytes) -> bytes:
    """``content`` without the ``Received:`` field fastsmtp puts first."""
    if not content.startswith(b"Received:"):
        return content
    end = content.find(b"\r\n")
    while end >= 0 and content[end + 2 : end + 3] in (b" ", b"\t"):
        end = content.find(b"\r\n", end + 2)  # a folded continuation line
    return content[end + 2 :] if end >= 0 else content


def _decode(content: bytes, smtputf8: bool) -> str:
    # As aiosmtpd's decode_data: UTF-8 (keeping undecodable bytes) or strict ASCII.
    if smtputf8:
        return content.decode("utf-8", "surrogateescape")
    return content.decode("ascii")
