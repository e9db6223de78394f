"""ATRN (RFC 2645, On-Demand Mail Relay) over a real socket.

The MTA holds mail for held.test (``atrn_domains``: owned by the user
"owner"). The test's client authenticates, says ATRN, then plays the SMTP
server on the same socket with a fastsmtp ``ServerConnection`` and receives
the held mail byte for byte.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from peers import Clock, defer

from fastsmtp.auth import set_password
from fastsmtp.config import Settings
from fastsmtp.delivery.queue import Queue
from fastsmtp.handlers import Collect
from fastsmtp.handlers.relay import Relay
from fastsmtp.protocol import replies as R
from fastsmtp.protocol.events import NEED_DATA, BodyChunk, Closed, MessageEnd
from fastsmtp.protocol.server import ServerConnection
from fastsmtp.session import Envelope, Session
from fastsmtp.testing import running
from smtp_replies import reply_line

FIRST = b"From: alice@here.test\r\nSubject: one\r\n\r\nfirst, with 8-bit: \xc3\xa9\r\n..dot\r\n"
SECOND = b"From: alice@here.test\r\nSubject: two\r\n\r\nsecond\r\n"


def relay(tmp_path: Path, clock: Clock, **settings: Any) -> Relay:
    """The MTA's handler: users owner and other (password "secret"), three ATRN domains."""
    users = tmp_path / "users"
    set_password(str(users), "owner", "secret")
    set_password(str(users), "other", "secret")
    config = Settings(
        hostname="mta.here.test",
        queue_dir=str(tmp_path / "queue"),
        sink=True,
        local_domains=("here.test",),
        auth_file=str(users),
        auth_without_tls=True,
        atrn_domains=("held.test=owner", "held2.test=owner", "theirs.test=other"),
        **settings,
    )
    return Relay(config, Collect(), now=clock)


@contextmanager
def mta(
    tmp_path: Path, clock: Clock, tls_context: ssl.SSLContext | None = None
) -> Iterator[tuple[str, int]]:
    handler = relay(tmp_path, clock)
    with running(handler, settings=handler.settings, tls_context=tls_context) as address:
        yield address


def hold(tmp_path: Path, clock: Clock) -> None:
    """Queue mail for held.test (two messages) and theirs.test, not due for an hour."""
    with Queue(tmp_path / "queue") as queue:
        for content, rcpts in (
            (FIRST, ["bob@held.test", "carol@held.test"]),
            (SECOND, ["bob@held.test", "eve@theirs.test"]),
        ):
            queue_id = queue.enqueue("alice@here.test", rcpts, content, now=clock())
            for rcpt in rcpts:
                defer(queue, queue_id, rcpt, clock())


def read_reply(file: BinaryIO) -> tuple[int, list[str]]:
    """One (multi-line) reply: its code and the text of each line."""
    lines = []
    for _ in range(100):
        code, last, text = reply_line(file.readline().rstrip(b"\r\n"))
        lines.append(text)
        if last:
            return code, lines
    raise AssertionError("a reply of over 100 lines")


class Customer:
    """The ODMR client: a socket that talks SMTP as a client, then as the server."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=10)
        self.file = self.sock.makefile("rb")
        assert read_reply(self.file)[0] == 220

    def starttls(self, context: ssl.SSLContext) -> None:
        """STARTTLS (RFC 3207): everything after this, the turn included, is encrypted."""
        assert self.command("STARTTLS")[0] == 220
        self.file.close()
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")
        self.file = self.sock.makefile("rb")

    def command(self, line: str) -> tuple[int, list[str]]:
        self.sock.sendall(line.encode() + b"\r\n")
        return read_reply(self.file)

    def login(self, user: str) -> None:
        self.command("EHLO customer.test")
        token = base64.b64encode(f"\0{user}\0secret".encode()).decode()
        assert self.command(f"AUTH PLAIN {token}")[0] == 235

    def serve(self) -> list[Envelope]:
        """Be the SMTP server until the MTA says QUIT; the envelopes received."""
        conn = ServerConnection(Settings(hostname="customer.test"), Session(id="odmr"))
        conn.greet()
        received: list[Envelope] = []
        body: list[bytes] = []
        for _ in range(1000):  # bounded: a handful of commands and chunks
            self.sock.sendall(conn.data_to_send())
            event = conn.next_event()
            if event is NEED_DATA:
                conn.receive_data(self.file.read1(65536))
                continue
            if isinstance(event, BodyChunk):
                body.append(event.data)
            elif isinstance(event, MessageEnd):
                envelope = conn.envelope
                envelope.content = b"".join(body)
                body.clear()
                received.append(envelope)
            elif isinstance(event, Closed):
                self.sock.sendall(conn.data_to_send())
                assert event.reason == "QUIT"
                return received
            if conn.pending_decision is not None:
                conn.respond()
        raise AssertionError("the MTA did not finish")

    def __enter__(self) -> Customer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()
        self.sock.close()


def test_atrn_turns_the_connection_around_and_delivers_the_held_mail(
    tmp_path: Path, clock: Clock
) -> None:
    hold(tmp_path, clock)
    with mta(tmp_path, clock) as address, Customer(address) as customer:
        customer.login("owner")
        code, lines = customer.command("ATRN held.test")
        assert (code, lines) == (250, ["2.0.0 OK now reversing the connection"])
        envelopes = customer.serve()
        assert customer.file.read() == b""  # the MTA closed after QUIT
    assert [(e.mail_from, e.rcpt_tos) for e in envelopes] == [
        ("alice@here.test", ["bob@held.test", "carol@held.test"]),
        ("alice@here.test", ["bob@held.test"]),
    ]
    assert [e.content for e in envelopes] == [FIRST, SECOND]
    with Queue(tmp_path / "queue") as queue:
        [left] = queue.list()
        assert [(r.address, r.status) for r in left.recipients] == [
            ("bob@held.test", "delivered"),
            ("eve@theirs.test", "deferred"),
        ]


def test_atrn_over_starttls_turns_the_encrypted_connection_around(
    tmp_path: Path, clock: Clock, server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    hold(tmp_path, clock)
    with mta(tmp_path, clock, server_context) as address, Customer(address) as customer:
        customer.command("EHLO customer.test")
        customer.starttls(client_context)
        customer.login("owner")
        assert customer.command("ATRN held.test")[0] == 250
        envelopes = customer.serve()  # the MTA now speaks as the client, still over TLS
        assert isinstance(customer.sock, ssl.SSLSocket)
    assert [e.content for e in envelopes] == [FIRST, SECOND]


def test_atrn_needs_auth_and_own_domains_and_mail_and_turn_stays_502(
    tmp_path: Path, clock: Clock
) -> None:
    hold(tmp_path, clock)
    with mta(tmp_path, clock) as address, Customer(address) as customer:
        ehlo = customer.command("EHLO customer.test")
        assert "ATRN" in ehlo[1]
        assert customer.command("ATRN held.test") == (530, ["5.7.0 Authentication required"])
        customer.login("owner")
        assert customer.command("ATRN theirs.test")[0] == 450
        assert customer.command("ATRN held.test,theirs.test")[0] == 450
        assert customer.command("ATRN held2.test") == (453, ["4.4.0 You have no mail"])
        assert customer.command("ATRN not..a.domain")[0] == 501
        assert customer.command("TURN") == (502, ["5.5.1 Error: command not implemented"])
        assert customer.command("QUIT")[0] == 221


def test_mail_for_an_atrn_domain_is_held_not_delivered(tmp_path: Path, clock: Clock) -> None:
    # Were it routed by MX, the lookup would fail (nothing answers DNS there).
    held = relay(tmp_path, clock, dns_servers=("127.0.0.1:9",))

    async def main() -> None:
        try:
            held.queue.enqueue("alice@here.test", ["bob@Held.Test"], FIRST, now=clock())
            await asyncio.wait_for(held.scheduler.run_pending(), 30)
            [message] = held.queue.list()
            [rcpt] = message.recipients
            assert (rcpt.status, rcpt.last_code, rcpt.last_enhanced) == ("deferred", 450, "4.4.0")
            assert rcpt.last_text == R.HELD_FOR_ATRN.text
            assert rcpt.remote_host is None  # no connection was made
        finally:
            await held.server_stopping()

    asyncio.run(main())
