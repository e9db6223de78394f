"""The asyncio server: listeners, timeouts, dispatch to the handler.

Each connection is an ``asyncio.Protocol`` (so uvloop works unchanged)
wrapping a sans-IO ``ServerConnection``. ``data_received`` feeds the
connection and runs its events synchronously; only a handler hook that has
to be awaited makes a task, and reading pauses until it is answered. The
replies produced while the input lasts are written with one ``write``
(RFC 2920 batching).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from email.utils import format_datetime
from itertools import count
from typing import Any, cast

from .config import ConfigError, Settings, parse_hostport
from .handler import HookCall, bind_hooks
from .protocol import replies as R
from .protocol.events import (
    NEED_DATA,
    BodyChunk,
    Closed,
    DataStarted,
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
from .protocol.replies import Reply
from .protocol.server import ServerConnection
from .relay import RelayPolicy
from .session import Address, Session

__all__ = ["Server", "new_event_loop", "run", "run_until_signal"]

log = logging.getLogger("fastsmtp")

# Ids: a per-process random prefix and a counter, unique across --workers.
_ID_PREFIX = ""
_ids = count(1)


def _new_id_space() -> None:
    global _ID_PREFIX, _ids
    _ID_PREFIX = os.urandom(4).hex().upper()
    _ids = count(1)


_new_id_space()
# A forked worker (--workers) must not hand out its parent's ids.
if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_new_id_space)


def new_id() -> str:
    """A unique id for a session or a message (as in Postfix's queue ids)."""
    return f"{_ID_PREFIX}{next(_ids):08X}"


class Server:
    """An SMTP server running a handler.

    ``Server(handler, hostname="mx.example.com", max_message_size=...)``
    takes every ``Settings`` field as a keyword (or ``settings=`` as a
    whole). Without a handler the settings choose one (``maildir=``,
    ``mbox=``, ``sink=True``, ``print=True``).
    """

    def __init__(
        self,
        handler: object | None = None,
        *,
        settings: Settings | None = None,
        tls_context: ssl.SSLContext | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs or settings is None:
            settings = Settings.from_mapping(kwargs, base=settings)
        self.settings = settings
        if tls_context is None and settings.tls_cert and settings.tls_key:
            tls_context = server_tls_context(settings.tls_cert, settings.tls_key)
        if tls_context is None and (settings.require_tls or settings.implicit_tls_listen):
            raise ConfigError(
                "require_tls and implicit_tls_listen need a certificate: "
                "set tls_cert and tls_key (or pass tls_context)"
            )
        #: the context for STARTTLS and implicit-TLS listeners, if any
        self.tls_context = tls_context
        self.relay = RelayPolicy(settings.local_domains, settings.relay_networks)
        if handler is None:
            from .handlers import from_settings

            handler = from_settings(settings)
        self.handler = handler
        self.hooks = bind_hooks(handler)
        self._listeners: list[asyncio.Server] = []
        self._tls_listeners: list[asyncio.Server] = []
        self._connections: set[SMTPProtocol] = set()
        self._all_closed: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._date_cache = (0, "")
        # Every connection of this server reads into this one buffer (see
        # SMTPProtocol): reads are handled one at a time on the loop.
        self._read_buffer = memoryview(bytearray(256 * 1024))

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every plain listening socket (STARTTLS is offered there)."""
        return _bound(self._listeners)

    @property
    def implicit_tls_addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every implicit-TLS listening socket (RFC 8314)."""
        return _bound(self._tls_listeners)

    async def start(self, host: str | None = None, port: int | None = None) -> None:
        """Listen on ``host:port`` (or every ``listen`` setting), and on ``implicit_tls_listen``."""
        loop = asyncio.get_running_loop()
        self._all_closed = asyncio.Event()
        self._all_closed.set()
        if host is not None or port is not None:
            plain = [(host or "127.0.0.1", port or 0)]
        else:
            plain = [parse_hostport(spec, setting="listen") for spec in self.settings.listen]
        implicit = [
            parse_hostport(spec, setting="implicit_tls_listen")
            for spec in self.settings.implicit_tls_listen
        ]
        for targets, tls, listeners in (
            (plain, None, self._listeners),
            (implicit, self.tls_context, self._tls_listeners),
        ):
            for target_host, target_port in targets:
                listener = await loop.create_server(
                    lambda: SMTPProtocol(self),
                    target_host,
                    target_port,
                    reuse_address=True,
                    # --workers: every worker process binds the same port.
                    reuse_port=self.settings.workers > 1 or None,
                    backlog=1024,
                    ssl=tls,
                    ssl_handshake_timeout=self.settings.tls_handshake_timeout if tls else None,
                )
                listeners.append(listener)
        for address in self.addresses:
            log.info("listening on %s:%d as %s", address[0], address[1], self.settings.hostname)
        for address in self.implicit_tls_addresses:
            log.info("listening with implicit TLS on %s:%d", address[0], address[1])
        started = getattr(self.handler, "server_started", None)  # e.g. the Relay's scheduler
        if started is not None:
            await started(self)

    async def serve(self, host: str | None = None, port: int | None = None) -> None:
        """Start listening and serve until cancelled; then close gracefully."""
        await self.start(host, port)
        try:
            await asyncio.Future()
        finally:
            await self.close()

    async def close(self, grace: float = 30.0) -> None:
        """Stop listening, answer 421 on idle connections, let busy ones finish.

        A connection whose handler is storing a message finishes that first
        (never a half-written file), then gets its 421. After ``grace``
        seconds whatever is left is aborted.
        """
        listeners = self._listeners + self._tls_listeners
        for listener in listeners:
            listener.close()
        for protocol in list(self._connections):
            protocol.shutdown()
        if self._all_closed is not None:
            try:
                await asyncio.wait_for(self._all_closed.wait(), grace)
            except TimeoutError:
                for protocol in list(self._connections):
                    protocol.abort()
        for listener in listeners:
            await listener.wait_closed()
        self._listeners.clear()
        self._tls_listeners.clear()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        stopping = getattr(self.handler, "server_stopping", None)
        if stopping is not None:
            await stopping()

    # --- used by the connections ------------------------------------------
    def _register(self, protocol: SMTPProtocol) -> None:
        self._connections.add(protocol)
        if self._all_closed is not None:
            self._all_closed.clear()

    def _unregister(self, protocol: SMTPProtocol) -> None:
        self._connections.discard(protocol)
        if not self._connections and self._all_closed is not None:
            self._all_closed.set()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def received_header(self, session: Session, queue_id: str, rcpt_tos: list[str]) -> bytes:
        """Our ``Received:`` trace header (RFC 5321 §4.4), first in every message."""
        now = int(time.time())
        if self._date_cache[0] != now:
            self._date_cache = (now, format_datetime(_localtime(now)))
        peer = session.peer
        ip = peer[0] if isinstance(peer, tuple) else "unix"
        helo = (session.host_name or "unknown").replace("(", "").replace(")", "")
        proto = "ESMTP" if session.extended else "SMTP"
        if session.tls:
            proto += "S"
        if session.auth:
            proto += "A"  # RFC 3848
        recipient = f"\r\n\tfor <{rcpt_tos[0]}>" if len(rcpt_tos) == 1 else ""
        return (
            f"Received: from {helo} ([{ip}])\r\n\tby {self.settings.hostname} (fastsmtp) "
            f"with {proto} id {queue_id}{recipient};\r\n\t{self._date_cache[1]}\r\n"
        ).encode("utf-8", "replace")


def _bound(listeners: list[asyncio.Server]) -> list[tuple[str, int]]:
    out = []
    for listener in listeners:
        for sock in listener.sockets:
            host, port = sock.getsockname()[:2]
            out.append((host, port))
    return out


def server_tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server-side TLS context from PEM files; ConfigError names what failed."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load tls_cert {cert!r} / tls_key {key!r}: {exc}") from None
    return context


def _localtime(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds).astimezone()


class SMTPProtocol(asyncio.BufferedProtocol):
    """One client connection: a transport around a ``ServerConnection``.

    A ``BufferedProtocol``: the transport reads into the server's one shared
    buffer (``get_buffer``) and ``buffer_updated`` copies what arrived into
    the connection before returning, so no read allocates. asyncio's plain
    ``Protocol`` path allocates 256 KiB per read, which glibc serves with an
    mmap and munmap each time: measured, that halved the 1 KiB message rate.
    """

    def __init__(self, server: Server) -> None:
        self.server = server
        self.hooks = server.hooks
        self.conn: ServerConnection
        self.transport: asyncio.Transport | None = None
        self._busy = False
        self._stopping = False
        self._lost = False
        self._body: list[bytes] = []
        self._last_activity = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timeout_step = 0.0
        self._loop = asyncio.get_running_loop()
        # Decrypted bytes that arrive while start_tls() is finishing (see _start_tls).
        self._tls_early: list[bytes] | None = None

    # --- asyncio.Protocol ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        session = Session(id=new_id(), peer=tuple(peer[:2]) if isinstance(peer, tuple) else peer)
        # An implicit-TLS listener hands over an SSL transport (RFC 8314).
        session.tls = transport.get_extra_info("ssl_object") is not None
        self.conn = ServerConnection(
            self.server.settings,
            session,
            starttls=self.server.tls_context is not None,
            relay=self.server.relay,
        )
        self.server._register(self)
        self._last_activity = self._loop.time()
        settings = self.server.settings
        self._timeout_step = min(settings.command_timeout, settings.data_timeout)
        self._arm_timer(self._last_activity + self._timeout_step)
        log.debug("%s: connect from %s", session.id, session.peer)
        hook = self.hooks.get("on_connect")
        if hook is None:
            self.conn.greet()
            self._flush()
        else:
            self._await(self._connect())

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.server._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        # The buffer is shared: receive_data copies before the next read.
        self.data_received(self.server._read_buffer[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        self._last_activity = self._loop.time()
        if self._tls_early is not None:
            self._tls_early.append(bytes(data))
            return
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
        if self._timer is not None:
            self._timer.cancel()
        session = self.conn.session
        if not self.conn.closed:
            log.info("%s: connection lost from %s", session.id, session.peer)
        self._stopping = True
        self.server._unregister(self)
        hook = self.hooks.get("on_disconnect")
        if hook is not None:
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
        if self.conn.closed:
            transport.close()

    async def _call(self, name: str, *args: Any) -> Reply | None:
        """Call a hook; an exception becomes 451 4.3.0 and a logged traceback."""
        try:
            result = await self.hooks[name](*args)
        except Exception:
            log.exception("%s: %s hook failed", self.conn.session.id, name)
            return R.HANDLER_ERROR
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
        if "on_helo" not in self.hooks:
            self.conn.respond()
            return None
        return self._decide("on_helo", self.conn.session, event.host_name)

    def _on_mail(self, event: MailFrom) -> Awaitable[None] | None:
        if "on_mail" not in self.hooks:
            self.conn.respond()
            return None
        sender = Address(event.address, event.options)
        return self._decide("on_mail", self.conn.session, self.conn.envelope, sender)

    def _on_rcpt(self, event: RcptTo) -> Awaitable[None] | None:
        if "on_rcpt" not in self.hooks:
            self.conn.respond()
            return None
        rcpt = Address(event.address, event.options, event.dsn)
        return self._decide("on_rcpt", self.conn.session, self.conn.envelope, rcpt)

    def _on_query(self, event: Verify | Expand) -> Awaitable[None] | None:
        """VRFY/EXPN: the handler's on_vrfy/on_expn, else the defaults (252/502)."""
        name = "on_vrfy" if isinstance(event, Verify) else "on_expn"
        if name not in self.hooks:
            self.conn.respond()
            return None
        return self._decide(name, self.conn.session, event.argument)

    def _on_data(self, event: DataStarted) -> None:
        self._body = []

    def _on_body(self, event: BodyChunk) -> None:
        self._body.append(event.data)

    def _on_message(self, event: MessageEnd) -> Awaitable[None] | None:
        conn = self.conn
        envelope = conn.envelope
        queue_id = new_id()
        envelope.queue_id = queue_id
        trace = self.server.received_header(conn.session, queue_id, envelope.rcpt_tos)
        self._body.insert(0, trace)
        envelope.content = b"".join(self._body)
        self._body = []
        if "on_message" not in self.hooks:
            reply = R.queued(queue_id)
            self._log_message(reply)
            conn.respond(reply)
            return None
        return self._store(queue_id)

    async def _store(self, queue_id: str) -> None:
        conn = self.conn
        reply = await self._call("on_message", conn.session, conn.envelope)
        reply = reply or R.queued(queue_id)
        self._log_message(reply)
        if not conn.closed:
            conn.respond(reply)

    def _log_message(self, reply: Reply) -> None:
        env = self.conn.envelope
        if reply.is_success:
            log.info(
                "%s: from=<%s> to=<%s> size=%d session=%s",
                env.queue_id,
                env.mail_from,
                ">,<".join(env.rcpt_tos),
                len(env.content or b""),
                self.conn.session.id,
            )
        else:
            log.info("%s: refused by handler: %s", env.queue_id, reply)

    def _on_aborted(self, event: MessageAborted) -> None:
        self._body = []
        log.info("%s: message refused: %s", self.conn.session.id, event.reply)

    def _on_reset(self, event: Reset) -> Awaitable[None] | None:
        self._body = []  # RSET between BDAT chunks drops what came so far
        hook = self.hooks.get("on_reset")
        if hook is None:
            return None
        return self._notify(hook, self.conn.session, event.envelope)

    def _on_starttls(self, event: StartTLS) -> Awaitable[None]:
        return self._start_tls()

    async def _start_tls(self) -> None:
        """Flush the 220, then hand the socket to TLS (public asyncio API only)."""
        self._flush()
        plain = self.transport
        context = self.server.tls_context
        assert plain is not None and context is not None
        # A client may send EHLO with the handshake's last flight; asyncio hands
        # it over before start_tls() returns, i.e. before tls_started(). Those
        # bytes came through TLS: keep them (plaintext ones were read before).
        self._tls_early = []
        try:
            secure = await self._loop.start_tls(
                plain,
                self,
                context,
                server_side=True,
                ssl_handshake_timeout=self.server.settings.tls_handshake_timeout,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            log.info("%s: TLS handshake failed: %s", self.conn.session.id, exc)
            self._tls_early = None
            plain.abort()
            self.connection_lost(exc)
            return
        assert secure is not None
        self.transport = secure
        self.conn.tls_started()
        early, self._tls_early = self._tls_early, None
        for chunk in early or ():
            self.conn.receive_data(chunk)
        ssl_object = secure.get_extra_info("ssl_object")
        log.debug(
            "%s: TLS started: %s %s",
            self.conn.session.id,
            ssl_object.version() if ssl_object else "?",
            ssl_object.cipher()[0] if ssl_object else "?",
        )

    def _on_closed(self, event: Closed) -> None:
        log.debug("%s: closing: %s", self.conn.session.id, event.reason)

    # --- timeouts and shutdown --------------------------------------------
    def _arm_timer(self, when: float) -> None:
        self._timer = self._loop.call_at(when, self._check_timeout)

    def _check_timeout(self) -> None:
        """Say 421 if idle too long in this state (RFC 5321 §4.5.3.2); else look again.

        One timer per connection, never moved on activity: it wakes at most
        every ``min(command_timeout, data_timeout)`` and compares the idle
        time with the timeout of the state the connection is in now, so a
        change of state needs no re-arming.
        """
        settings = self.server.settings
        now = self._loop.time()
        if self._busy:  # the handler is working: not the client's idle time
            self._last_activity = now
        delay = settings.data_timeout if self.conn.in_data else settings.command_timeout
        if now >= self._last_activity + delay:
            log.info("%s: timeout after %.0f s", self.conn.session.id, delay)
            self.conn.timed_out()
            self._flush()
            return
        step = self._timeout_step
        wake = self._last_activity + step
        self._arm_timer(wake if wake > now else min(self._last_activity + delay, now + step))

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


_DISPATCH: dict[type, Callable[[SMTPProtocol, Any], Awaitable[None] | None]] = {
    Hello: SMTPProtocol._on_hello,
    MailFrom: SMTPProtocol._on_mail,
    RcptTo: SMTPProtocol._on_rcpt,
    Verify: SMTPProtocol._on_query,
    Expand: SMTPProtocol._on_query,
    DataStarted: SMTPProtocol._on_data,
    BodyChunk: SMTPProtocol._on_body,
    MessageEnd: SMTPProtocol._on_message,
    MessageAborted: SMTPProtocol._on_aborted,
    Reset: SMTPProtocol._on_reset,
    StartTLS: SMTPProtocol._on_starttls,
    Closed: SMTPProtocol._on_closed,
}


def run(handler: object | None = None, **settings: Any) -> None:
    """Run a server until SIGINT/SIGTERM, then close it gracefully.

    ``settings`` are ``Settings`` fields; ``loop="uvloop"`` uses uvloop.
    """
    server = Server(handler, **settings)
    if server.settings.workers > 1:
        from .workers import run_workers

        run_workers(server.settings, server.handler)
    else:
        run_until_signal(server)


def run_until_signal(server: Server) -> None:
    """Serve until SIGINT/SIGTERM, then close gracefully (``fastsmtp serve``)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            # Not on Windows, nor outside the main thread.
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        await server.start()
        await stop.wait()
        log.info("shutting down")
        await server.close()

    with asyncio.Runner(loop_factory=lambda: new_event_loop(server.settings.loop)) as runner:
        runner.run(main())


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new event loop of the ``loop`` setting's kind: ``asyncio`` or ``uvloop``."""
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise ConfigError(
                "loop = 'uvloop' needs uvloop: pip install 'fastsmtp-engine[uvloop]'"
            ) from None
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()
