"""One client connection of the asyncio server: ``SMTPProtocol``.

Each connection is an ``asyncio.BufferedProtocol`` (so uvloop works
unchanged) wrapping a sans-IO ``ServerConnection``. ``buffer_updated``
feeds the connection and runs its events synchronously; only a handler hook
that has to be awaited makes a task, and reading pauses until it is
answered. The replies produced while the input lasts are written with one
``write`` (RFC 2920 batching). Before the greeting come the PROXY header
(when expected), the connection limits and ``greet_pause``; after it, the
server's ``TimeoutSweep`` (``_timeouts``) enforces the timeouts.

The gates before the greeting are in ``_pregreet``; the asyncio side of
STARTTLS, AUTH, ETRN and ATRN in ``_esmtp``. setup.py also compiles this
file, as ``fastsmtp._connection_c`` (see ``_twin``), so that the per-read
path calls the compiled state machine in C.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from . import _esmtp, _pregreet
from ._outcome import BadOutcome, log_accepted, log_message, message_replies
from ._twin import compiled_names
from .body import BodyReceiver, BodySink, MessageBody, release, stored
from .handler import HookCall
from .protocol import replies as R
from .protocol.events import (
    NEED_DATA,
    Atrn,
    Authenticate,
    AuthResult,
    BodyChunk,
    Closed,
    DataStarted,
    Etrn,
    Event,
    Expand,
    Hello,
    MailFrom,
    MessageAborted,
    MessageEnd,
    RcptTo,
    Reset,
    StartTLS,
    Verify,
)
from .protocol.proxy import ProxyReader
from .protocol.replies import Reply
from .protocol.server import ServerConnection, State
from .session import Address, Session

if TYPE_CHECKING:
    from .server import Server

__all__ = ["BufferedSMTPProtocol", "SMTPProtocol", "new_id", "undecided"]

log = logging.getLogger("fastsmtp")
# Read per message or per write: module constants, not attribute lookups.
_INFO = logging.INFO
_CLOSED = State.CLOSED


# Ids: a per-process random prefix and a counter, unique across --workers.
# Compiled, the counter is a C integer (_connection_c.pxd), which Cython
# formats itself: Python's int.__format__ was ~2.5k instructions an id.
_ID_PREFIX = ""
_last_id = 0


def _new_id_space() -> None:
    global _ID_PREFIX, _last_id
    _ID_PREFIX = os.urandom(4).hex().upper()
    _last_id = 0


_new_id_space()
# A forked worker (--workers) must not hand out its parent's ids.
if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_new_id_space)


def new_id() -> str:
    """A unique id for a session or a message (as in Postfix's queue ids)."""
    global _last_id
    _last_id += 1
    return f"{_ID_PREFIX}{_last_id:08X}"


class SMTPProtocol:
    """One client connection: a transport around a ``ServerConnection``.

    A buffered protocol: the transport reads into the server's one shared
    buffer (``get_buffer``) and ``buffer_updated`` copies what arrived into
    the connection before returning, so no read allocates. asyncio's plain
    ``Protocol`` path allocates 256 KiB per read, which glibc serves with an
    mmap and munmap each time: measured, that halved the 1 KiB message rate.
    The server makes each one as a ``BufferedSMTPProtocol``.
    """

    def __init__(self, server: Server, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """``loop`` is the running one; the server's listeners pass it, which saves
        asking asyncio per connection (on Python 3.11 a ``getpid`` system call)."""
        self.server = server
        self.hooks = server.hooks
        self._buffer = server._read_buffer  # per read, twice: a slot, not the server's dict
        self.conn: ServerConnection
        self.transport: asyncio.Transport | None = None
        self._busy = False
        self._stopping = False
        self._lost = False
        self._body: BodyReceiver
        # The timeouts (see _timeouts): once greeted, the server's sweep watches
        # the connection; reads and writes raise flags, which the sweep stamps.
        self._timed = False
        self._heard = False
        self._answered = False
        self._last_activity = 0.0
        self._timer: asyncio.TimerHandle | None = None  # before the greeting only
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        # Before the greeting, input goes here instead (PROXY header, greet_pause).
        self._gate: Callable[[bytes | memoryview], None] | None = None
        self._proxy: ProxyReader | None = None
        self._admitted = False  # counted by server.limits
        self._limit_key: str | None = None
        self._started = False  # on_connect called (so on_disconnect will be)
        # Slow clients: when the last reply went out, and octets read since.
        self._progress = 0.0
        self._progress_octets = 0
        self._write_paused = False

    # --- asyncio.Protocol ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        if TYPE_CHECKING:  # no call at run time: this is per connection
            transport = cast(asyncio.Transport, transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            peer = tuple(peer[:2])
        elif not peer:  # a Unix socket's client has no name: say which socket
            peer = transport.get_extra_info("sockname")
        session = Session(new_id(), peer)
        # An implicit-TLS listener hands over an SSL transport (RFC 8314).
        session.tls = transport.get_extra_info("ssl_object") is not None
        self.conn = ServerConnection(
            self.server.settings,
            session,
            starttls=self.server.tls_context is not None,
            relay=self.server.relay,
            auth_mechanisms=self.server.auth_mechanisms,
            keep_body=self.server.keeps_bodies,
            auto_accept=self.server.auto_accept,
        )
        self._body = BodyReceiver(session.id)
        self.server._register(self)
        settings = self.server.settings
        if settings.proxy_protocol and not session.tls:
            self._proxy = ProxyReader()
            self._gate = self._read_proxy_header
            self._timer = self._loop.call_later(settings.proxy_timeout, self._no_proxy_header)
        else:
            self._admit()

    def _admit(self) -> None:
        """The client's address is known: apply the connection limits, then greet."""
        session = self.conn.session
        refusal, self._limit_key = self.server.limits.admit(session.peer)
        if refusal is not None:
            log.info("%s: refused %s: %s", session.id, session.peer, refusal)
            self.conn.greet(refusal)
            self._flush()
            return
        self._admitted = True
        pause = self.server.settings.greet_pause
        if pause:
            self._gate = self._early_talker
            self._timer = self._loop.call_later(pause, self._start)
        else:
            self._start()

    def _start(self) -> None:
        """Arm the timeouts and greet (after on_connect, if the handler has it)."""
        self._gate = None
        if self.conn.closed:  # the server stopped during greet_pause
            return
        self._started = True
        session = self.conn.session
        self._last_activity = self._progress = self._loop.time()
        self._heard = self._answered = False
        self._timed = True
        self.server.timeouts.watch(self._loop)
        log.debug("%s: connect from %s", session.id, session.peer)
        hook = self.hooks.get("on_connect")
        if hook is None:
            self.conn.greet()
            self._flush()
        else:
            self._await(self._connect())

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        # The buffer is shared: receive_data copies before the next read.
        self.data_received(self._buffer[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        self._heard = True
        if self._gate is not None:
            self._gate(data)
            return
        self._progress_octets += len(data)
        self.conn.receive_data(data)
        if not self._busy:
            self._process()

    def eof_received(self) -> bool:
        self.conn.receive_data(b"")
        if not self._busy:
            self._process()
        # Keep a plain socket half-open to answer what was sent before EOF;
        # TLS cannot half-close, so there the transport closes itself.
        return not self.conn.session.tls

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._timed = False
        if self._timer is not None:
            self._timer.cancel()
        session = self.conn.session
        if not self.conn.closed:
            log.info("%s: connection lost from %s", session.id, session.peer)
        self._stopping = True
        self._body.drop()  # a message cut off mid-DATA: no spool file left behind
        self.server._unregister(self)
        if self._admitted:
            self.server.limits.release(self._limit_key)
        hook = self.hooks.get("on_disconnect")
        if hook is not None and self._started:
            self.server._spawn(self._notify(hook, session))

    # --- event processing -------------------------------------------------
    def _process(self) -> None:
        conn = self.conn
        while not self._busy:
            event = conn.next_event()
            if event is NEED_DATA:
                break
            pending = _DISPATCH[type(event)](self, event)
            if pending is not None:
                self._await(pending)
                return
        self._flush()

    def _await(self, pending: Awaitable[None]) -> None:
        """Run a hook; read nothing more until it has answered."""
        self._busy = True
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.pause_reading()
        self.server._spawn(self._resume_after(pending))

    async def _resume_after(self, pending: Awaitable[None]) -> None:
        try:
            await pending
        finally:
            self._busy = False
        assert self.transport is not None
        if self.transport.is_closing():
            return
        if not self._write_paused:
            self.transport.resume_reading()
        if self._stopping:
            self.shutdown()
        else:
            self._process()

    def _flush(self) -> None:
        transport = self.transport
        assert transport is not None
        out = self.conn.data_to_send()
        if transport.is_closing():
            return
        if out:
            transport.write(out)
            self._answered = True
            self._progress_octets = 0
        if self.conn.state is _CLOSED:  # conn.closed, without a property call per write
            transport.close()

    async def _call_any(self, name: str, *args: Any) -> Any:
        """Call a hook; an exception becomes 451 4.3.0 and a logged traceback."""
        try:
            return await self.hooks[name](*args)
        except Exception:
            log.exception("%s: %s hook failed", self.conn.session.id, name)
            return R.HANDLER_ERROR

    async def _call(self, name: str, *args: Any) -> Reply | None:
        """Call a hook that answers with a ``Reply`` or ``None`` (see ``_call_any``)."""
        result = await self._call_any(name, *args)
        if result is not None and not isinstance(result, Reply):
            log.error(
                "%s: %s returned %r; hooks return None or a Reply",
                self.conn.session.id,
                name,
                result,
            )
            return R.HANDLER_ERROR
        return result

    async def _decide(self, name: str, *args: Any, default: Reply | None = None) -> None:
        reply = await self._call(name, *args)
        if not self.conn.closed:
            self.conn.respond(reply or default)

    async def _notify(self, hook: HookCall, *args: Any) -> None:
        try:
            await hook(*args)
        except Exception:
            log.exception("%s: %s hook failed", self.conn.session.id, hook)

    async def _connect(self) -> None:
        reply = await self._call("on_connect", self.conn.session)
        if reply is R.HANDLER_ERROR:
            reply = R.HANDLER_ERROR_AT_CONNECT
        self.conn.greet(reply)
        self._flush()

    # --- one method per event ---------------------------------------------
    def _on_hello(self, event: Hello) -> Awaitable[None] | None:
        return self._decide("on_helo", self.conn.session, event.host_name)

    def _on_mail(self, event: MailFrom) -> Awaitable[None] | None:
        sender = Address(event.address, event.options)
        return self._decide("on_mail", self.conn.session, self.conn.envelope, sender)

    def _on_rcpt(self, event: RcptTo) -> Awaitable[None] | None:
        rcpt = Address(event.address, event.options, event.dsn)
        return self._decide("on_rcpt", self.conn.session, self.conn.envelope, rcpt)

    def _on_query(self, event: Verify | Expand) -> Awaitable[None] | None:
        """VRFY/EXPN: the handler's on_vrfy/on_expn, else the defaults (252/502)."""
        name = "on_vrfy" if isinstance(event, Verify) else "on_expn"
        return self._decide(name, self.conn.session, event.argument)

    def _on_data(self, event: DataStarted) -> Awaitable[None] | None:
        """A body begins: to the handler's sink (``on_data_start``) or a ``MessageBody``.

        The ``Received:`` header goes first, so the queue id is given here. A
        body nobody reads gets no header: it would cost more than the rest of
        the message's Python.
        """
        conn = self.conn
        envelope = conn.envelope
        envelope.queue_id = new_id()
        if not self.server.keeps_bodies:  # and the decoder keeps none: nothing to start
            return None
        trace = self.server.received_header(conn.session, envelope.queue_id, envelope.rcpt_tos)
        if "on_data_start" in self.hooks:
            return self._open_sink(trace)
        return self._body.start(self._message_body(), trace)

    def _message_body(self) -> MessageBody:
        settings = self.server.settings
        return MessageBody(settings.spool_threshold, settings.spool_dir)

    async def _open_sink(self, trace: bytes) -> None:
        conn = self.conn
        sink = await self._call_any("on_data_start", conn.session, conn.envelope)
        if sink is None:
            sink = self._message_body()
        elif not all(callable(getattr(sink, name, None)) for name in ("write", "close", "abort")):
            if sink is not R.HANDLER_ERROR:  # an exception was logged already
                log.error(
                    "%s: on_data_start returned %r; it returns None or a sink "
                    "with write, close and abort",
                    conn.session.id,
                    sink,
                )
            self._body.fail(R.HANDLER_ERROR)
            return
        else:
            conn.envelope.sink = sink
        if self._lost:
            release(sink, conn.session.id)
            return
        pending = self._body.start(sink, trace)
        if pending is not None:
            await pending

    def _on_body(self, event: BodyChunk) -> Awaitable[None] | None:
        # An awaitable: the sink's backlog is full, read on once it has drained.
        return self._body.write(event.data)

    def _on_message(self, event: MessageEnd) -> Awaitable[None] | None:
        if not self.server.keeps_bodies:  # no body, so nothing to close or to store
            self._answer_message(None, event.size)
            return None
        closing = self._body.close()
        if closing is not None:
            return self._close_then_deliver(closing, event.size)
        return self._deliver(event.size)

    async def _close_then_deliver(self, closing: Awaitable[None], size: int) -> None:
        await closing  # e.g. the spool file's last writes
        if self._lost or self.conn.closed:  # no reply is owed; the drop cleans up
            return
        pending = self._deliver(size)
        if pending is not None:
            await pending

    def _deliver(self, size: int) -> Awaitable[None] | None:
        envelope = self.conn.envelope
        sink, error = self._body.result()
        if sink is None:
            self._answer_message(error, size)
            return None
        if isinstance(sink, MessageBody):
            envelope.body = sink
        if "on_message" not in self.hooks:
            self._answer_message(None, size)
            stored(sink, self.conn.session.id)
            return None
        return self._store(sink, size)

    async def _store(self, sink: BodySink, size: int) -> None:
        conn = self.conn
        try:
            result = await self._call_any("on_message", conn.session, conn.envelope)
        finally:
            stored(sink, conn.session.id)
        if not conn.closed:
            self._answer_message(result, size)

    def _answer_message(self, result: object, size: int) -> None:
        """Send on_message's answer: one reply, or one per recipient (LMTP).

        ``size`` is the message's as received (``MessageEnd.size``), for the log.
        """
        conn = self.conn
        lmtp = self.server.settings.lmtp
        logged = log.isEnabledFor(_INFO)
        if result is None and not lmtp:
            # The usual answer, per message: the protocol's default, 250
            # naming the queue id, made without a Reply; every recipient took it.
            if logged:
                env = conn.envelope
                log_accepted(env, env.rcpt_tos, size, conn.session.id)
            conn.respond()
            return
        env = conn.envelope
        assert env.queue_id is not None
        count = len(env.rcpt_tos)
        default = R.queued(env.queue_id)
        try:
            replies = message_replies(result, count, lmtp=lmtp, default=default)
        except BadOutcome as exc:
            log.error("%s: on_message %s; answering 451", conn.session.id, exc)
            replies = message_replies(R.HANDLER_ERROR, count, lmtp=lmtp, default=default)
        if logged:
            log_message(env, replies if lmtp else replies * count, size, conn.session.id)
        if lmtp:
            conn.respond_recipients(replies)
        else:
            conn.respond(replies[0])

    def _on_aborted(self, event: MessageAborted) -> None:
        self._body.drop()
        log.info("%s: message refused: %s", self.conn.session.id, event.reply)

    def _on_reset(self, event: Reset) -> Awaitable[None] | None:
        self._body.drop()  # RSET between BDAT chunks drops what came so far
        hook = self.hooks.get("on_reset")
        if hook is None:
            return None
        return self._notify(hook, self.conn.session, event.envelope)

    def _on_closed(self, event: Closed) -> None:
        log.debug("%s: closing: %s", self.conn.session.id, event.reason)

    # --- before the greeting: PROXY header, greet_pause ---------------------
    # The gates and the timer's callback, from _pregreet.py.
    _read_proxy_header = _pregreet.read_proxy_header
    _no_proxy_header = _pregreet.no_proxy_header
    _early_talker = _pregreet.early_talker

    # --- flow control and shutdown ----------------------------------------
    def pause_writing(self) -> None:
        """The client reads its replies slower than it sends: stop reading its input.

        Without this a client that pipelines commands and never reads would
        make the transport buffer replies without bound.
        """
        self._write_paused = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if not self._busy and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def shutdown(self) -> None:
        """The server is stopping: 421 now, or after the hook in progress."""
        self._stopping = True
        if self._busy or self.transport is None or self.transport.is_closing():
            return
        self.conn.shutdown()
        self._flush()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class BufferedSMTPProtocol(SMTPProtocol, asyncio.BufferedProtocol):
    """``SMTPProtocol`` as asyncio and uvloop recognise a buffered protocol.

    Compiled (``_connection_c.pxd``), ``SMTPProtocol`` is an extension type,
    which cannot derive from a Python class such as this base.
    """


_DISPATCH: dict[type, Callable[[SMTPProtocol, Any], Awaitable[None] | None]] = {
    Hello: SMTPProtocol._on_hello,
    MailFrom: SMTPProtocol._on_mail,
    RcptTo: SMTPProtocol._on_rcpt,
    Verify: SMTPProtocol._on_query,
    Expand: SMTPProtocol._on_query,
    Etrn: _esmtp.on_etrn,
    Atrn: _esmtp.on_atrn,
    DataStarted: SMTPProtocol._on_data,
    BodyChunk: SMTPProtocol._on_body,
    MessageEnd: SMTPProtocol._on_message,
    MessageAborted: SMTPProtocol._on_aborted,
    Reset: SMTPProtocol._on_reset,
    StartTLS: _esmtp.on_starttls,
    Authenticate: _esmtp.on_authenticate,
    AuthResult: _esmtp.on_auth_result,
    Closed: SMTPProtocol._on_closed,
}


# The hook that decides each decision the protocol can answer by itself.
_HOOK_DECIDES: dict[type[Event], str] = {
    Hello: "on_helo",
    MailFrom: "on_mail",
    RcptTo: "on_rcpt",
    Verify: "on_vrfy",
    Expand: "on_expn",
}


def undecided(hooks: dict[str, HookCall]) -> frozenset[type[Event]]:
    """The decisions no hook takes: the connection answers them itself (``auto_accept``).

    Found once per server, so that the common case (no on_mail, no on_rcpt)
    costs no event, no call and no hook lookup per command.
    """
    return frozenset(event for event, hook in _HOOK_DECIDES.items() if hook not in hooks)


# The compiled twin (see fastsmtp._twin); _connection_c.pxd declares the
# compiled class's attributes.
globals().update(compiled_names(__name__, "fastsmtp._connection_c"))
