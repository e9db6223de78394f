"""LMTP (RFC 2033) in the sans-IO connection: LHLO, and per-recipient replies."""

from __future__ import annotations

import pytest

from fastsmtp.config import Settings
from fastsmtp.protocol.events import MessageEnd
from fastsmtp.protocol.replies import Reply
from fastsmtp.protocol.server import ServerConnection, State
from fastsmtp.session import Session

REFUSED = Reply(550, "5.1.1", "No such mailbox")


def at_message_end(lmtp: bool = False) -> ServerConnection:
    conn = ServerConnection(Settings(hostname="mx.test", lmtp=lmtp), Session(id="T1"))
    conn.greet()
    hello = "LHLO" if lmtp else "EHLO"
    conn.receive_data(
        f"{hello} c.example\r\nMAIL FROM:<a@x.example>\r\n"
        "RCPT TO:<b@x.example>\r\nRCPT TO:<c@x.example>\r\nDATA\r\nhi\r\n.\r\n".encode()
    )
    for _ in range(20):
        event = conn.next_event()
        if isinstance(event, MessageEnd):
            conn.data_to_send()
            return conn
        if conn.pending_decision is not None:
            conn.respond()
    raise AssertionError("no MessageEnd")


def test_respond_recipients_sends_one_reply_each_and_ends_the_transaction():
    conn = at_message_end(lmtp=True)
    conn.respond_recipients([None, REFUSED])
    assert conn.data_to_send() == b"250 2.0.0 OK\r\n550 5.1.1 No such mailbox\r\n"
    assert conn.state is State.READY
    assert conn.session.transactions == 1
    assert conn.envelope.rcpt_tos == []


def test_respond_in_lmtp_repeats_the_reply_for_every_recipient():
    conn = at_message_end(lmtp=True)
    conn.respond(REFUSED)
    assert conn.data_to_send() == REFUSED.encode() * 2
    assert conn.session.transactions == 0  # nobody accepted it


def test_respond_recipients_checks_the_count_and_the_mode():
    conn = at_message_end(lmtp=True)
    with pytest.raises(ValueError, match="1 replies for 2 recipients"):
        conn.respond_recipients([None])
    assert conn.pending_decision is not None  # still waiting for a valid answer
    with pytest.raises(RuntimeError, match="LMTP mode only"):
        at_message_end().respond_recipients([None, None])
