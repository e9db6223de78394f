"""The answer to the end of a message in the sans-IO connection: LMTP (RFC 2033)
per-recipient replies, and the default reply."""

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


@pytest.mark.parametrize("lmtp", [False, True])
def test_the_default_answer_to_a_message_names_its_queue_id(lmtp: bool):
    conn = at_message_end(lmtp=lmtp)
    conn.envelope.queue_id = "3F2A00000001"  # given by the I/O layer at DATA
    if lmtp:
        conn.respond_recipients([None, REFUSED])
        expected = b"250 2.0.0 OK: queued as 3F2A00000001\r\n" + REFUSED.encode()
    else:
        conn.respond()
        expected = b"250 2.0.0 OK: queued as 3F2A00000001\r\n"
    assert conn.data_to_send() == expected
    assert conn.session.transactions == 1
    assert conn.envelope.queue_id is None  # the next transaction starts blank


def test_without_a_queue_id_the_default_answer_is_ok():
    conn = at_message_end()
    conn.respond()
    assert conn.data_to_send() == b"250 2.0.0 OK\r\n"
