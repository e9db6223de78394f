"""The asyncio SMTP/LMTP client: one connection, several messages, a result per recipient.

::

    options = ClientOptions(helo_name="me.example")
    async with await SMTPClient.connect("mx.example.net", 25, options) as client:
        results = await client.send("a@me.example", ["b@example.net"], content)

``SMTPClient`` is a thin ``asyncio.Protocol`` around the sans-IO
``ClientConnection`` (public asyncio APIs only, so uvloop works; STARTTLS
with ``loop.start_tls``). ``connect`` greets (EHLO, HELO if EHLO is
refused; LHLO for LMTP), starts TLS as ``ClientOptions.tls`` says and
authenticates when ``auth`` is set; anything that goes wrong there raises
``ConnectFailed``, after which the caller tries the next host.

``send`` never raises for what the server or the network does: every
recipient gets a ``RecipientResult``. A message the server cannot take as
it is (SIZE, SMTPUTF8, 8BITMIME) is refused before a byte is sent (a file
whose 8-bit content was not declared is caught as it streams, and the
connection dropped before the message ends, so nothing is delivered). A
timeout or a lost connection defers the unanswered recipients with 4.4.2;
if the connection died after the message was sent in full but before its
reply, the server may have it: the result is still *deferred* (RFC 5321
§4.1.1.4 and RFC 1047 accept a possible duplicate over a lost message),
with text that says so.

The body is streamed in ``CHUNK`` octets: a file is read chunk by chunk in
a worker thread, never whole, and written as the transport drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import os
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import BinaryIO, Literal, cast

from ..protocol import replies as R
from ..protocol.client import ClientConnection, ClientState
from ..protocol.client_events import (
    ClientEvent,
    ConnectionClosed,
    Replied,
    SendBody,
    ServerReply,
    TransactionDone,
)
from ..protocol.events import NeedData

__all__ = ["CHUNK", "ClientOptions", "ConnectFailed", "RecipientResult", "SMTPClient"]

log = logging.getLogger("fastsmtp.delivery")

#: octets read from the message and written (or framed as one BDAT chunk) at a time
CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """What happened to one recipient of one message on one connection.

    ``code``/``enhanced``/``text`` are the server's reply to RCPT when it
    refused the recipient there, else its reply after the data; when the
    client decided by itself (a refusal before sending, a lost connection)
    they come from ``protocol/replies.py`` and ``remote_host`` is None.
    """

    recipient: str
    code: int
    enhanced: str | None
    text: str
    #: the host that answered (a bounce's Remote-MTA)
    remote_host: str | None
    #: the server offers DSN and was given NOTIFY/ORCPT: it sends the notices (RFC 3461 §5.2.2)
    dsn_relayed: bool = False

    @property
    def status(self) -> Literal["delivered", "deferred", "failed"]:
        """``delivered`` (2xx), ``deferred`` (4xx: retry later) or ``failed`` (5xx)."""
        if self.code < 300:
            return "delivered"
        return "deferred" if self.code < 500 else "failed"


class ConnectFailed(Exception):
    """No session with this host: could not connect, greet, say EHLO, start TLS or AUTH.

    ``temporary`` is false only when the server refused us permanently
    (a 5xx greeting or EHLO/HELO); ``reply`` is the server's reply, if one
    came. Try the next host either way.
    """

    def __init__(self, message: str, *, temporary: bool, reply: ServerReply | None = None) -> None:
        super().__init__(message)
        self.temporary = temporary
        # The client's own stand-ins (a lost connection, a timeout) are not replies.
        self.reply = reply if reply is not None and not reply.local else None


@dataclass(frozen=True)
class ClientOptions:
    """How to talk to one destination.

    ``tls``: ``"opportunistic"`` uses STARTTLS when offered and, with no
    ``tls_context``, does not verify the certificate (Postfix's ``may``);
    if that handshake fails the client reconnects once in plaintext.
    ``"required"`` fails the host without STARTTLS or with a failed
    handshake, and verifies against the system CAs when ``tls_context`` is
    None. ``auth`` (user, password) is only sent over TLS unless ``tls`` is
    ``"none"``; AUTH uses PLAIN, else LOGIN. ``command_timeout`` bounds
    each wait for a reply and each write.
    """

    helo_name: str
    tls: Literal["none", "opportunistic", "required"] = "opportunistic"
    tls_context: ssl.SSLContext | None = None
    auth: tuple[str, str] | None = None
    lmtp: bool = False
    connect_timeout: float = 30.0
    command_timeout: float = 300.0


class _TLSFailed(ConnectFailed):
    """The STARTTLS handshake failed (opportunistic TLS may retry in plaintext)."""


@functools.lru_cache(maxsize=2)
def _default_context(verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not verify:  # opportunistic: encryption against passive eavesdropping only
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _Protocol(asyncio.Protocol):
    """Feeds the connection as bytes arrive and writes what it answers by itself."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._progress: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        self.flush()
        self._wake()

    def eof_received(self) -> bool:
        self.conn.receive_data(b"")
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.receive_data(b"")
        if not self.closed.done():
            self.closed.set_result(None)
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def wait_progress(self, timeout: float) -> None:
        """Wait until bytes arrive or the connection ends; on timeout, give up on it."""
        self._progress = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._progress
        except TimeoutError:
            self.conn.abort(R.REMOTE_TIMEOUT)
            self.abort()

    async def drain(self, timeout: float) -> None:
        """Wait until the transport takes more data (flow control)."""
        if self._writable is not None:
            try:
                async with asyncio.timeout(timeout):
                    await self._writable
            except TimeoutError:
                self.conn.abort(R.REMOTE_TIMEOUT)
                self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _wake(self) -> None:
        if self._progress is not None and not self._progress.done():
            self._progress.set_result(None)


class SMTPClient:
    """One SMTP or LMTP connection, reusable for several messages (``connect`` opens it)."""

    def __init__(self, host: str, options: ClientOptions, protocol: _Protocol) -> None:
        #: the server's name: TLS verifies it, results name it (``remote_host``)
        self.host = host
        self.options = options
        self._protocol = protocol
        self._conn = protocol.conn
        self._busy = False

    @classmethod
    async def connect(
        cls, host: str, port: int, options: ClientOptions, *, server_name: str | None = None
    ) -> SMTPClient:
        """Connect, greet, start TLS and authenticate as ``options`` say.

        ``server_name`` is the host's name when ``host`` is its address (an
        MX's A record): the name TLS verifies and results report.
        """
        try:
            return await cls._connect(host, port, options, server_name)
        except _TLSFailed as exc:
            if options.tls != "opportunistic":
                raise
            log.info("%s:%d: %s; retrying without TLS", host, port, exc)
            return await cls._connect(host, port, replace(options, tls="none"), server_name)

    @classmethod
    async def connect_unix(cls, path: str, options: ClientOptions) -> SMTPClient:
        """Connect to the Unix socket at ``path`` (an LMTP server's, usually); as ``connect``.

        Results name ``path`` as the host; STARTTLS would verify that name,
        so use ``tls="none"`` unless ``tls_context`` says otherwise.
        """
        return await cls._connect(path, None, options, None)

    @classmethod
    async def _connect(
        cls, host: str, port: int | None, options: ClientOptions, server_name: str | None
    ) -> SMTPClient:
        """Open the connection and session; ``port`` None means ``host`` is a Unix socket path."""
        loop = asyncio.get_running_loop()
        conn = ClientConnection(lmtp=options.lmtp)
        where = host if port is None else f"{host}:{port}"
        try:
            async with asyncio.timeout(options.connect_timeout):
                if port is None:
                    _, protocol = await loop.create_unix_connection(lambda: _Protocol(conn), host)
                else:
                    _, protocol = await loop.create_connection(lambda: _Protocol(conn), host, port)
        except (OSError, TimeoutError) as exc:
            raise ConnectFailed(f"cannot connect to {where}: {exc}", temporary=True) from exc
        return await cls(server_name or host, options, protocol)._opened()

    @classmethod
    async def over(
        cls, transport: asyncio.Transport, host: str, options: ClientOptions
    ) -> SMTPClient:
        """Be the client on a connection that exists: ATRN (RFC 2645) turned it around.

        Takes ``transport`` over from its protocol, waits for the peer's
        greeting and greets as ``options`` say (as ``connect`` does).
        """
        protocol = _Protocol(ClientConnection(lmtp=options.lmtp))
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        transport.resume_reading()  # the server side paused it while it decided
        return await cls(host, options, protocol)._opened()

    async def __aenter__(self) -> SMTPClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, *_: object) -> None:
        """QUIT after a clean block, just close after an error."""
        if kind is None:
            await self.quit()
        else:
            await self.close()

    @property
    def closed(self) -> bool:
        """True once the connection is over; ``send`` would only defer."""
        return self._conn.state is ClientState.CLOSED

    @property
    def tls(self) -> bool:
        """True when the session is encrypted (STARTTLS succeeded)."""
        return self._conn.tls_active

    # --- the session ----------------------------------------------------------
    async def _opened(self) -> SMTPClient:
        """``_open``, closing the connection if that fails."""
        try:
            await self._open()
        except BaseException:
            await self.close()
            raise
        return self

    async def _open(self) -> None:
        greeting = await self._reply("GREETING")
        if greeting.code != 220:
            raise ConnectFailed(
                f"{self.host} greeted with {greeting}",
                temporary=greeting.code < 500,
                reply=greeting,
            )
        await self._hello()
        tls = self.options.tls
        if tls != "none" and self._conn.extensions.starttls:
            await self._starttls()
        elif tls == "required":
            raise ConnectFailed(f"{self.host} does not offer STARTTLS", temporary=True)
        if self.options.auth is not None:
            await self._authenticate(*self.options.auth)

    async def _hello(self) -> None:
        name = self.options.helo_name
        self._conn.hello(name)
        reply = await self._reply("LHLO" if self.options.lmtp else "EHLO")
        # RFC 5321 §4.1.4: a server that does not know EHLO gets HELO.
        if reply.code >= 500 and not self.options.lmtp:
            self._conn.helo(name)
            reply = await self._reply("HELO")
        if not reply.ok:
            raise ConnectFailed(
                f"{self.host} refused our greeting: {reply}",
                temporary=reply.code < 500,
                reply=reply,
            )

    async def _starttls(self) -> None:
        self._conn.starttls()
        reply = await self._reply("STARTTLS")
        if reply.code != 220:
            if self.options.tls == "required":
                raise ConnectFailed(
                    f"{self.host} refused STARTTLS: {reply}", temporary=True, reply=reply
                )
            return  # opportunistic: carry on in plaintext, as the server wants
        context = self.options.tls_context or _default_context(self.options.tls == "required")
        transport = self._protocol.transport
        assert transport is not None
        try:
            secure = await asyncio.get_running_loop().start_tls(
                transport,
                self._protocol,
                context,
                server_hostname=self.host,
                ssl_handshake_timeout=self.options.connect_timeout,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            self._protocol.abort()
            raise _TLSFailed(f"TLS with {self.host} failed: {exc}", temporary=True) from exc
        if secure is None:
            raise _TLSFailed(f"TLS with {self.host} failed: connection closed", temporary=True)
        self._protocol.transport = secure
        self._conn.tls_started()
        await self._hello()

    async def _authenticate(self, user: str, password: str) -> None:
        if not self._conn.tls_active and self.options.tls != "none":
            raise ConnectFailed(
                f"not sending credentials to {self.host} without TLS", temporary=True
            )
        offered = self._conn.extensions.auth
        mechanism = next((m for m in ("PLAIN", "LOGIN") if m in offered), None)
        if mechanism is None:
            raise ConnectFailed(
                f"{self.host} offers no AUTH mechanism we use (PLAIN, LOGIN): "
                f"{' '.join(sorted(offered)) or 'no AUTH'}",
                temporary=True,
            )
        self._conn.authenticate(mechanism, user, password)
        reply = await self._reply("AUTH")
        if reply.code != 235:
            # Temporary like Postfix's smtp_sasl_auth_soft_bounce: a wrong password
            # in our configuration must not bounce the whole queue.
            raise ConnectFailed(
                f"AUTH {mechanism} at {self.host} failed: {reply}", temporary=True, reply=reply
            )

    # --- messages ---------------------------------------------------------------
    async def send(
        self,
        mail_from: str,
        recipients: Sequence[str],
        content: bytes | BinaryIO,
        *,
        mail_params: Mapping[str, str | None] = {},  # read only
        rcpt_params: Sequence[Mapping[str, str | None]] | None = None,
        smtputf8: bool = False,
        body_type: str | None = None,
    ) -> list[RecipientResult]:
        """Send one message; one result per recipient, in ``recipients``' order.

        ``content`` is the message with CRLF line endings, as bytes or a
        binary file positioned at its start (read from there, in chunks).
        ``body_type`` is MAIL's BODY (``"8BITMIME"``...). When the server
        lacks 8BITMIME, a body not declared 8-bit is checked: bytes before
        anything is sent, a file as it streams (the connection is then
        dropped before the message ends, so the server discards it).
        """
        if self._busy:
            raise RuntimeError("one message at a time per SMTPClient")
        self._busy = True
        try:
            return await self._send(
                mail_from, recipients, content, mail_params, rcpt_params, smtputf8, body_type
            )
        finally:
            self._busy = False

    async def _send(
        self,
        mail_from: str,
        recipients: Sequence[str],
        content: bytes | BinaryIO,
        mail_params: Mapping[str, str | None],
        rcpt_params: Sequence[Mapping[str, str | None]] | None,
        smtputf8: bool,
        body_type: str | None,
    ) -> list[RecipientResult]:
        declared_8bit = (body_type or "").upper() in ("8BITMIME", "BINARYMIME")
        check_8bit = not declared_8bit and not self._conn.extensions.eightbitmime
        if check_8bit and isinstance(content, bytes):
            # Bytes are checked here, a file as it streams (see _send_body).
            if not content.isascii():
                body_type = "8BITMIME"  # refused by start_transaction, before sending
            check_8bit = False
        self._conn.start_transaction(
            mail_from,
            recipients,
            size=_size(content),
            body_type=body_type,
            smtputf8=smtputf8,
            mail_params=mail_params,
            rcpt_params=rcpt_params,
        )
        self._protocol.flush()
        while True:
            event = await self._event()
            if isinstance(event, SendBody):
                await self._send_body(content, check_8bit)
            elif isinstance(event, TransactionDone):
                return [
                    RecipientResult(
                        rcpt,
                        reply.code,
                        reply.enhanced,
                        reply.text,
                        None if reply.local else self.host,
                        not reply.local and self._conn.extensions.dsn,
                    )
                    for rcpt, reply in zip(recipients, event.results, strict=True)
                ]

    async def _send_body(self, content: bytes | BinaryIO, check_8bit: bool) -> None:
        conn, protocol = self._conn, self._protocol
        timeout = self.options.command_timeout
        async for chunk, last in _chunks(content):
            while not conn.body_ready:
                if not conn.sending_body:
                    return  # a BDAT chunk was refused, or the connection ended
                await protocol.wait_progress(timeout)
            if check_8bit and not bytes(chunk).isascii():  # a file's chunk: no copy
                # RFC 6152 §3: no 8-bit octets to this server; drop the connection
                # before the end, so that nothing is delivered.
                conn.abort(R.REMOTE_NEEDS_8BITMIME)
                protocol.abort()
                return
            conn.send_body(chunk, last=last)
            protocol.flush()
            await protocol.drain(timeout)

    async def quit(self) -> None:
        """Say QUIT, wait for its reply (bounded), and close."""
        if not self.closed:
            self._conn.quit()
            self._protocol.flush()
            while not self.closed:
                await self._event()
        await self.close()

    async def close(self) -> None:
        """Close the connection without QUIT (abandons a transaction in progress)."""
        self._conn.abort()
        self._protocol.abort()
        transport = self._protocol.transport
        if transport is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.connect_timeout):
                    await self._protocol.closed

    # --- waiting ----------------------------------------------------------------
    async def _event(self) -> ClientEvent:
        """The next event; waits at most ``command_timeout`` for bytes to make one.

        What the connection queued to send (a command just given) goes out first.
        """
        while True:
            self._protocol.flush()
            event = self._conn.next_event()
            if not isinstance(event, NeedData):
                if isinstance(event, ConnectionClosed):
                    level = logging.DEBUG if event.reason == "QUIT" else logging.INFO
                    log.log(level, "%s: %s", self.host, event.reason)
                    self._protocol.abort()
                return event
            await self._protocol.wait_progress(self.options.command_timeout)

    async def _reply(self, command: str) -> ServerReply:
        """Wait for the reply to a direct command (the connection supplies one if it ends)."""
        while True:
            event = await self._event()
            if isinstance(event, Replied) and event.command == command:
                return event.reply
            if isinstance(event, ConnectionClosed):
                raise ConnectFailed(f"{self.host}: {event.reason}", temporary=True)


def _size(content: bytes | BinaryIO) -> int | None:
    """The message's length from here on, for SIZE (None when it cannot be known)."""
    if isinstance(content, bytes):
        return len(content)
    try:
        return os.fstat(content.fileno()).st_size - content.tell()
    except (OSError, AttributeError, io.UnsupportedOperation):
        return None


async def _chunks(content: bytes | BinaryIO) -> AsyncIterator[tuple[bytes | memoryview, bool]]:
    """``(chunk, is_last)`` pairs; a file is read ahead by one chunk, in a thread."""
    if isinstance(content, bytes):
        view = memoryview(content)
        for start in range(0, max(len(view), 1), CHUNK):
            yield view[start : start + CHUNK], start + CHUNK >= len(view)
        return
    chunk = await asyncio.to_thread(content.read, CHUNK)
    while True:
        following = await asyncio.to_thread(content.read, CHUNK) if chunk else b""
        yield chunk, not following
        if not following:
            return
        chunk = following
