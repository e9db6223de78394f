"""The asyncio server: listeners, TLS, limits, the handler, and running it.

``Server`` owns what all connections share (settings, handler hooks, TLS
context, authenticator, relay policy, connection limits, one read buffer)
and the listening sockets; each accepted connection is an ``SMTPProtocol``
(``connection.py``). ``run`` and ``run_until_signal`` serve until SIGINT
or SIGTERM, then close gracefully.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import stat
import time
from collections.abc import Awaitable
from datetime import datetime
from email.utils import format_datetime
from typing import Any

from ._timeouts import TimeoutSweep
from .auth import (
    Authenticator,
    FailureLimiter,
    authenticator_from,
    mechanisms_for,
)
from .config import UNIX_PREFIX, ConfigError, Settings, parse_hostport
from .connection import BufferedSMTPProtocol, SMTPProtocol, undecided
from .handler import bind_hooks
from .limits import ConnectionLimits
from .relay import RelayPolicy
from .session import Session

__all__ = ["Server", "new_event_loop", "run", "run_until_signal"]

log = logging.getLogger("fastsmtp")


class Server:
    """An SMTP server running a handler.

    ``Server(handler, hostname="mx.example.com", max_message_size=...)``
    takes every ``Settings`` field as a keyword (or ``settings=`` as a
    whole). Without a handler the settings choose one (``maildir=``,
    ``mbox=``, ``sink=True``, ``print=True``). ``authenticator=`` checks
    AUTH passwords (see ``fastsmtp.auth``); ``auth_file`` is the ready one.
    """

    def __init__(
        self,
        handler: object | None = None,
        *,
        settings: Settings | None = None,
        tls_context: ssl.SSLContext | None = None,
        authenticator: Authenticator | None = None,
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
        if settings.spool_dir is not None and not os.path.isdir(settings.spool_dir):
            raise ConfigError(f"spool_dir {settings.spool_dir!r} is not a directory")
        #: the context for STARTTLS and implicit-TLS listeners, if any
        self.tls_context = tls_context
        #: checks AUTH (a callable, or a FileAuthenticator from auth_file), if any
        self.authenticator = authenticator_from(settings, authenticator, tls_context is not None)
        self.auth_mechanisms = mechanisms_for(self.authenticator)
        self.auth_failures = FailureLimiter(
            settings.auth_max_failures, settings.auth_failure_window
        )
        self.relay = RelayPolicy(settings.local_domains, settings.relay_networks)
        #: admission control: max_connections, per address, connection rate
        self.limits = ConnectionLimits(settings, self.relay)
        if handler is None:
            from .handlers import from_settings

            handler = from_settings(settings)
        self.handler = handler
        self.hooks = bind_hooks(handler)
        #: the decisions no hook takes, which each connection answers by itself
        self.auto_accept = undecided(self.hooks)
        #: whether anyone reads message bodies; if not they are decoded, checked and dropped
        self.keeps_bodies = "on_message" in self.hooks or "on_data_start" in self.hooks
        self._listeners: list[asyncio.Server] = []
        self._tls_listeners: list[asyncio.Server] = []
        self._unix_listeners: list[asyncio.Server] = []
        self._connections: set[SMTPProtocol] = set()
        #: the connections' timeouts: one timer for them all
        self.timeouts = TimeoutSweep(self._connections, settings)
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

    @property
    def unix_paths(self) -> list[str]:
        """The path of every listening Unix socket (``listen = ["unix:/PATH"]``)."""
        return [sock.getsockname() for lst in self._unix_listeners for sock in lst.sockets]

    async def start(self, host: str | None = None, port: int | None = None) -> None:
        """Listen on ``host:port`` (or every TCP ``listen``), and on ``implicit_tls_listen``.

        The ``unix:/PATH`` entries of ``listen`` are listened on either way.
        """
        loop = asyncio.get_running_loop()
        tcp = [spec for spec in self.settings.listen if not spec.startswith(UNIX_PREFIX)]
        if host is not None or port is not None:
            plain = [(host or "127.0.0.1", port or 0)]
        else:
            plain = [parse_hostport(spec, setting="listen") for spec in tcp]
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
                    lambda: BufferedSMTPProtocol(self, loop),
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
        for spec in self.settings.listen:
            if spec.startswith(UNIX_PREFIX):
                # asyncio replaces a stale socket file left at the path.
                path = spec[len(UNIX_PREFIX) :]
                listener = await loop.create_unix_server(
                    lambda: BufferedSMTPProtocol(self, loop), path, backlog=1024
                )
                self._unix_listeners.append(listener)
                log.info("listening on %s as %s", path, self.settings.hostname)
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
        seconds whatever is left is aborted; so is a hook task, and then the
        handler's ``server_stopping``, still running ``grace`` seconds later.
        The waits use ``asyncio.timeout``, not ``wait_for``, which on 3.11 can
        swallow a cancel of ``close`` itself (see ``Scheduler._run``).
        """
        listeners = self._listeners + self._tls_listeners + self._unix_listeners
        paths = self.unix_paths
        for listener in listeners:
            listener.close()
        for protocol in list(self._connections):
            protocol.shutdown()
        if self._connections:
            self._all_closed = asyncio.Event()  # set by _unregister for the last one
            try:
                async with asyncio.timeout(grace):
                    await self._all_closed.wait()
            except TimeoutError:
                for protocol in list(self._connections):
                    protocol.abort()
        for listener in listeners:
            await listener.wait_closed()
        self._listeners.clear()
        self._tls_listeners.clear()
        self._unix_listeners.clear()
        self.timeouts.stop()
        for path in paths:
            _remove_socket(path)
        if self._tasks:
            _, late = await asyncio.wait(list(self._tasks), timeout=grace)
            for task in late:  # a hook that never returns must not hold the stop
                log.warning("handler task still running after %.0f s, cancelled: %r", grace, task)
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        stopping = getattr(self.handler, "server_stopping", None)
        if stopping is not None:
            try:
                async with asyncio.timeout(grace):
                    await stopping()
            except TimeoutError:
                log.warning("the handler's server_stopping took over %.0f s: cancelled", grace)

    # --- used by the connections ------------------------------------------
    def _register(self, protocol: SMTPProtocol) -> None:
        self._connections.add(protocol)

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
        # RFC 3848 §2: ESMTP, and LMTP with the same S and A suffixes.
        proto = "LMTP" if self.settings.lmtp else "ESMTP" if session.extended else "SMTP"
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


def _remove_socket(path: str) -> None:
    """Remove a Unix socket file we listened on (asyncio leaves it before Python 3.13)."""
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove socket %s: %s", path, exc)


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


def run(handler: object | None = None, **settings: Any) -> None:
    """Run a server until SIGINT/SIGTERM, then close it gracefully.

    ``settings`` are ``Settings`` fields; ``loop="uvloop"`` uses uvloop.
    """
    server = Server(handler, **settings)
    if server.settings.workers > 1:
        from .workers import run_workers

        if server.authenticator is not None and not server.settings.auth_file:
            raise ConfigError("workers > 1 takes AUTH users from auth_file, not authenticator=")

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
        log.info("event loop: %s", type(loop).__module__.partition(".")[0])
        await server.start()
        await stop.wait()
        log.info("shutting down")
        await server.close()

    with asyncio.Runner(loop_factory=lambda: new_event_loop(server.settings.loop)) as runner:
        runner.run(main())


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new event loop of the ``loop`` setting's kind: ``auto``, ``asyncio`` or ``uvloop``.

    ``auto`` takes uvloop when it is installed: it usually costs less server
    CPU per message than asyncio (bench/README.md); it is never required.
    """
    if kind == "asyncio":
        return asyncio.new_event_loop()
    try:
        import uvloop
    except ImportError:
        if kind == "auto":
            return asyncio.new_event_loop()
        raise ConfigError(
            "loop = 'uvloop' needs uvloop: pip install 'fastsmtp-engine[uvloop]'"
        ) from None
    return uvloop.new_event_loop()
