"""``LMTPForward``: hand each message to an LMTP server (Dovecot, Cyrus) over TCP or a Unix socket.

LMTP (RFC 2033) answers the end of a message once per recipient, so the
delivery agent's verdict on each mailbox comes back whole: the handler
returns one ``Reply | None`` per recipient. That reaches the sending client
as it is when fastsmtp itself speaks LMTP (``lmtp = true``) and through the
queue (``queue_dir``: each recipient is delivered, retried or bounced on its
own). A plain SMTP front has one reply after DATA, so there differing
verdicts become ``451 4.3.0`` for all (see ``_outcome.py``) and the client
retries; put the queue in front to avoid that.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from ..config import UNIX_PREFIX, ConfigError, parse_hostport
from ..delivery.client import ClientOptions, ConnectFailed, RecipientResult, SMTPClient
from ..handler import Handler
from ..protocol import replies as R
from ..protocol.replies import Reply
from ..session import Envelope, Session

__all__ = ["LMTPForward"]

log = logging.getLogger(__name__)


class LMTPForward(Handler):
    """Deliver every accepted message to the LMTP server at ``target``.

    ``target`` is ``HOST:PORT`` (``[IPv6]:PORT``) or ``unix:/PATH``; a bad
    one raises ``ConfigError`` here, not at the first message. One
    connection is kept open between messages and reused while the server
    keeps it open (a second one is opened for a message that arrives while
    it is busy, and closed after); one the server closed while idle is
    replaced, without losing or repeating the message. ``server_stopping``
    closes it with QUIT. No STARTTLS: LMTP is for the local host or network
    (RFC 2033 §1).

    Results, one per ``envelope.rcpt_tos`` entry: ``None`` when the server
    accepted the recipient (the front then says its own "queued as"), else
    the server's reply (code, enhanced code, text), whether it refused the
    RCPT or the message. When no session could be had (connection refused,
    bad greeting, timeout) every recipient gets ``451 4.4.1`` and a log
    line; a connection lost mid-transaction defers the unanswered
    recipients with ``421 4.4.2`` (the client's own verdicts). Nothing the
    LMTP server does raises out of ``on_message``.
    """

    def __init__(
        self,
        target: str,
        *,
        helo_name: str | None = None,
        connect_timeout: float = 30.0,
        command_timeout: float = 300.0,
    ) -> None:
        self.target = target
        self._path: str | None = None
        self._host = ""
        self._port = 0
        if target.startswith(UNIX_PREFIX):
            self._path = target[len(UNIX_PREFIX) :]
            if not self._path:
                raise ConfigError("lmtp_forward needs a path after 'unix:', as in unix:/run/lmtp")
        else:
            self._host, self._port = parse_hostport(target, setting="lmtp_forward")
        #: the connection kept open for the next message, and its event loop
        self._idle: SMTPClient | None = None
        self._idle_loop: asyncio.AbstractEventLoop | None = None
        self._options = ClientOptions(
            helo_name=helo_name or socket.getfqdn(),
            tls="none",
            lmtp=True,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
        )

    async def on_message(self, session: Session, envelope: Envelope) -> list[Reply | None]:
        """Send the message over LMTP; one reply (None: delivered) per recipient."""
        results = await self._reused(envelope)
        if results is None:
            try:
                client = await self._connect()
            except ConnectFailed as exc:
                log.warning(
                    "%s: LMTP to %s: %s (451, retry later)", envelope.queue_id, self.target, exc
                )
                return [R.CONNECT_FAILED] * len(envelope.rcpt_tos)
            results = await _send(client, envelope)
            await self._release(client)
        replies = [_reply(result) for result in results]
        for result, reply in zip(results, replies, strict=True):
            if reply is not None:
                log.info(
                    "%s: LMTP %s refused <%s>: %s",
                    envelope.queue_id,
                    self.target,
                    result.recipient,
                    reply,
                )
        return replies

    async def server_stopping(self) -> None:
        """Say QUIT on the kept connection (``Server.close`` and ``Relay`` call this)."""
        client, self._idle = self._idle, None
        if client is not None and self._idle_loop is asyncio.get_running_loop():
            await client.quit()

    async def _connect(self) -> SMTPClient:
        if self._path is not None:
            return await SMTPClient.connect_unix(self._path, self._options)
        return await SMTPClient.connect(self._host, self._port, self._options)

    async def _reused(self, envelope: Envelope) -> list[RecipientResult] | None:
        """Send over the kept connection; None when there is none or it was found closed.

        The server may close an idle connection at any time; if it did so
        just as the message started (every recipient lost with nothing
        answered after the data), nothing was delivered and a new
        connection is safe.
        """
        client, self._idle = self._idle, None
        if client is None or self._idle_loop is not asyncio.get_running_loop():
            return None  # a connection of another event loop is only dropped
        if client.closed:
            await client.close()
            return None
        results = await _send(client, envelope)
        if all(_lost_before_sending(r) for r in results):
            log.debug("%s: kept LMTP connection was closed; reconnecting", envelope.queue_id)
            await client.close()
            return None
        await self._release(client)
        return results

    async def _release(self, client: SMTPClient) -> None:
        """Keep the connection for the next message if it is open and none is kept yet."""
        if client.closed:
            await client.close()
        elif self._idle is None:
            self._idle, self._idle_loop = client, asyncio.get_running_loop()
        else:
            await client.quit()


async def _send(client: SMTPClient, envelope: Envelope) -> list[RecipientResult]:
    with envelope.open_content() as content:
        return await client.send(
            envelope.mail_from or "",
            envelope.rcpt_tos,
            content,
            smtputf8=envelope.smtputf8,
            body_type=envelope.body_type,
        )


def _lost_before_sending(result: RecipientResult) -> bool:
    """The connection ended before the server answered anything after the data."""
    lost = R.REMOTE_CONNECTION_LOST
    return (result.code, result.enhanced, result.text) == (lost.code, lost.enhanced, lost.text)


def _reply(result: RecipientResult) -> Reply | None:
    """The front's reply for one recipient's LMTP result (None: delivered)."""
    if result.status == "delivered":
        return None
    enhanced = result.enhanced
    if enhanced is not None and enhanced[:1] != str(result.code)[:1]:
        enhanced = None  # a server's mismatched enhanced code is not repeated
    return Reply(result.code, enhanced, result.text)
