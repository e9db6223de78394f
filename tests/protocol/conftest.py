"""Fixtures for the sans-IO protocol tests: a ``ServerConnection`` driven with bytes.

``Driver`` plays the I/O layer without any socket: it feeds bytes, pulls
events until ``NEED_DATA``, answers each decision event (by default with
``None``, the protocol's own acceptance) and parses what the connection
queued for the peer into ``WireReply`` objects.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import pytest

from fastsmtp.config import Settings
from fastsmtp.protocol.events import (
    NEED_DATA,
    BodyChunk,
    DataStarted,
    Event,
    MessageEnd,
)
from fastsmtp.protocol.replies import Reply
from fastsmtp.protocol.server import ServerConnection
from fastsmtp.session import Envelope, Session
from smtp_replies import WireReply, parse_replies

HOSTNAME = "mx.test"
PEER = ("192.0.2.7", 40123)
Decide = Callable[[Event], Reply | None]


class Driver:
    """A ``ServerConnection`` and a scripted application around it."""

    def __init__(
        self,
        settings: Settings,
        decide: Decide | None = None,
        *,
        keep_body: bool = True,
        auto_accept: Collection[type[Event]] = (),
    ) -> None:
        session = Session(id="T1", peer=PEER)
        self.conn = ServerConnection(
            settings, session, keep_body=keep_body, auto_accept=auto_accept
        )
        self.decide: Decide = decide or (lambda event: None)
        self.events: list[Event] = []
        #: (envelope, body) of every message the application accepted
        self.delivered: list[tuple[Envelope, bytes]] = []
        #: every byte queued for the peer after the greeting
        self.output = bytearray()
        self._body: list[bytes] = []
        self.conn.greet()
        self.greeting = parse_replies(self.conn.data_to_send())

    def feed(self, data: bytes) -> bytes:
        """Give the connection ``data`` (``b""``: EOF); return what it wants to send."""
        self.conn.receive_data(data)
        self.pump()
        out = self.conn.data_to_send()
        self.output += out
        return out

    def merged_events(self) -> list[Event]:
        """Events with consecutive ``BodyChunk``s joined (chunking is not behaviour)."""
        out: list[Event] = []
        for event in self.events:
            if isinstance(event, BodyChunk) and out and isinstance(out[-1], BodyChunk):
                out[-1] = BodyChunk(out[-1].data + event.data)
            else:
                out.append(event)
        return out

    def replies(self) -> list[WireReply]:
        """Every reply sent after the greeting."""
        return parse_replies(bytes(self.output))

    def pump(self) -> None:
        for _ in range(100_000):
            event = self.conn.next_event()
            if event is NEED_DATA:
                return
            self.events.append(event)
            if isinstance(event, DataStarted):
                self._body = []
            elif isinstance(event, BodyChunk):
                self._body.append(event.data)
            if self.conn.pending_decision is not None:
                assert self.conn.pending_decision is event
                reply = self.decide(event)
                if isinstance(event, MessageEnd) and (reply is None or reply.code < 400):
                    self.delivered.append((self.conn.envelope, b"".join(self._body)))
                self.conn.respond(reply)
        raise AssertionError("the connection never asked for more data")

    def send(self, data: bytes) -> list[WireReply]:
        """Feed ``data`` and return the replies it produced."""
        return parse_replies(self.feed(data))

    def cmd(self, line: str | bytes) -> WireReply:
        """Send one command line; exactly one reply must come back."""
        raw = line.encode("utf-8") if isinstance(line, str) else line
        replies = self.send(raw + b"\r\n")
        assert len(replies) == 1, [str(r) for r in replies]
        return replies[0]

    def ehlo(self) -> WireReply:
        reply = self.cmd("EHLO client.example")
        assert reply.code == 250, reply
        return reply

    def begin(self, sender: str = "<alice@example.com>", *rcpts: str) -> None:
        """EHLO, MAIL and RCPT (default one recipient), each answered with 250."""
        self.ehlo()
        assert self.cmd(f"MAIL FROM:{sender}").code == 250
        for rcpt in rcpts or ("<bob@example.com>",):
            assert self.cmd(f"RCPT TO:{rcpt}").code == 250


def make_settings(**kwargs: Any) -> Settings:
    kwargs.setdefault("hostname", HOSTNAME)
    return Settings(**kwargs)


@pytest.fixture
def connect() -> Callable[..., Driver]:
    """A greeted ``Driver``: ``connect(decide=None, *, keep_body, auto_accept, **settings)``."""

    def make(
        decide: Decide | None = None,
        *,
        keep_body: bool = True,
        auto_accept: Collection[type[Event]] = (),
        **settings: Any,
    ) -> Driver:
        return Driver(
            make_settings(**settings), decide, keep_body=keep_body, auto_accept=auto_accept
        )

    return make


@pytest.fixture
def smtp(connect: Callable[..., Driver]) -> Driver:
    """A greeted connection with default settings."""
    return connect()
