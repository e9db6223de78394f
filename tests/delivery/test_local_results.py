"""The queue's local delivery takes a local handler's per-recipient results (a gateway's).

The relay hands local mail from the queue to ``LMTPForward``, which delivers
to a real fastsmtp LMTP server; that server's verdict on each mailbox must
become each recipient's queue status: delivered, deferred or failed.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from peers import Clock

from fastsmtp import Collect
from fastsmtp.config import Settings
from fastsmtp.handlers.lmtp import LMTPForward
from fastsmtp.handlers.relay import Relay
from fastsmtp.protocol.replies import Reply
from fastsmtp.session import Address, Envelope, Session
from fastsmtp.testing import running

MESSAGE = b"Subject: hello\r\n\r\nHi.\r\n"
RCPTS = ["one@here.test", "full@here.test", "gone@here.test"]


class Mailboxes(Collect):
    """An LMTP back end: gone@ is refused at RCPT, full@ deferred after the data."""

    async def on_rcpt(self, session: Session, envelope: Envelope, rcpt: Address) -> Reply | None:
        return Reply(550, "5.1.1", "No such mailbox") if rcpt.address.startswith("gone@") else None

    async def on_message(self, session: Session, envelope: Envelope) -> list[Reply | None]:
        await super().on_message(session, envelope)
        full = Reply(452, "4.2.2", "Mailbox full")
        return [full if r.startswith("full@") else None for r in envelope.rcpt_tos]


class Miscounted:
    """A local handler that returns the wrong number of results."""

    async def on_message(self, session: Session, envelope: Envelope) -> list[Reply | None]:
        return [None]


def deliver(tmp_path: Path, local: object, clock: Clock) -> dict[str, tuple[str, int | None]]:
    """Queue MESSAGE to RCPTS, run one delivery round; each recipient's (status, code)."""
    settings = Settings(
        hostname="mta.here.test",
        queue_dir=str(tmp_path / "queue"),
        sink=True,  # stands for the local handler given below
        local_domains=("here.test",),
        delivery_port=1,
    )
    relay = Relay(settings, local, now=clock)

    async def main() -> None:
        try:
            queue_id = relay.queue.enqueue("", RCPTS, MESSAGE, now=clock())
            await asyncio.wait_for(relay.scheduler.run_pending(), 30)
            [message] = [m for m in relay.queue.list() if m.id == queue_id]
            found.update({r.address: (r.status, r.last_code) for r in message.recipients})
        finally:
            await relay.server_stopping()

    found: dict[str, tuple[str, int | None]] = {}
    asyncio.run(main())
    return found


def test_each_recipient_gets_its_own_lmtp_verdict(tmp_path: Path, clock: Clock) -> None:
    back = Mailboxes()
    with running(back, lmtp=True) as (host, port):
        status = deliver(tmp_path, LMTPForward(f"{host}:{port}"), clock)
    assert status == {
        "one@here.test": ("delivered", 250),
        "full@here.test": ("deferred", 452),
        "gone@here.test": ("failed", 550),
    }
    [envelope] = back.envelopes
    assert envelope.rcpt_tos == ["one@here.test", "full@here.test"]


def test_a_wrong_number_of_results_defers_everyone(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="fastsmtp")
    status = deliver(tmp_path, Miscounted(), clock)
    assert status == {rcpt: ("deferred", 451) for rcpt in RCPTS}
    assert any("1 results for 3 recipients" in r.getMessage() for r in caplog.records)
