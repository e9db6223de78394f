"""``auto_accept``: decisions nobody takes are answered by the connection itself."""

from __future__ import annotations

import pytest

from fastsmtp.config import Settings
from fastsmtp.protocol.events import (
    NEED_DATA,
    Authenticate,
    BodyChunk,
    DataStarted,
    Hello,
    MailFrom,
    MessageEnd,
    RcptTo,
    Reset,
    Verify,
)
from fastsmtp.protocol.server import AUTO_ACCEPTABLE, ServerConnection, State
from fastsmtp.session import Session


def connection(*auto: type) -> ServerConnection:
    settings = Settings(hostname="mx.test", dsn=True)
    conn = ServerConnection(settings, Session(id="T1"), auto_accept=auto)
    conn.greet()
    conn.data_to_send()
    return conn


def events(conn: ServerConnection, data: bytes) -> list[object]:
    conn.receive_data(data)
    seen = []
    for _ in range(20):
        event = conn.next_event()
        if event is NEED_DATA:
            return seen
        seen.append(event)
        if conn.pending_decision is not None:
            conn.respond()
    raise AssertionError("no end")


def test_mail_and_rcpt_are_answered_without_their_events():
    conn = connection(Hello, MailFrom, RcptTo)
    seen = events(
        conn,
        b"EHLO c.example\r\nMAIL FROM:<a@x.example> SIZE=10\r\n"
        b"RCPT TO:<b@x.example> NOTIFY=NEVER\r\nRCPT TO:<c@x.example>\r\nDATA\r\n",
    )
    assert [type(e) for e in seen] == [DataStarted]
    assert conn.data_to_send().split(b"250 ENHANCEDSTATUSCODES\r\n")[1] == (
        b"250 2.1.0 Sender OK\r\n"
        b"250 2.1.5 Recipient OK\r\n"
        b"250 2.1.5 Recipient OK\r\n"
        b"354 End data with <CR><LF>.<CR><LF>\r\n"
    )
    assert conn.envelope.rcpt_tos == ["b@x.example", "c@x.example"]


def test_auto_accepted_commands_fill_the_envelope_as_accepted_events_do():
    data = (
        b"EHLO c.example\r\nMAIL FROM:<a@x.example> BODY=8BITMIME RET=HDRS ENVID=e1\r\n"
        b"RCPT TO:<b@x.example> NOTIFY=SUCCESS ORCPT=rfc822;b@x.example\r\nDATA\r\n"
    )
    auto, asked = connection(Hello, MailFrom, RcptTo), connection()
    events(auto, data)
    seen = events(asked, data)
    assert [type(e) for e in seen] == [Hello, MailFrom, RcptTo, DataStarted]
    assert auto.envelope == asked.envelope
    assert auto.envelope.body_type == "8BITMIME"
    assert auto.envelope.rcpt_dsn[0].notify == {"SUCCESS"}
    assert auto.envelope.dsn_ret == "HDRS"
    assert auto.session == asked.session
    assert auto.state is asked.state is State.DATA
    assert auto.data_to_send() == asked.data_to_send()


def test_an_auto_accepted_hello_in_a_transaction_still_reports_the_reset():
    conn = connection(Hello, MailFrom)
    events(conn, b"EHLO c.example\r\nMAIL FROM:<a@x.example>\r\n")
    seen = events(conn, b"EHLO c.example\r\nNOOP\r\n")
    assert [type(e) for e in seen] == [Reset]
    assert seen[0].envelope.mail_from == "a@x.example"
    assert conn.state is State.READY
    assert conn.data_to_send().endswith(b"250 2.0.0 OK\r\n")  # NOOP, read after


def test_refusals_still_happen_before_acceptance():
    conn = connection(Hello, MailFrom, RcptTo)
    events(conn, b"EHLO c.example\r\n")
    conn.data_to_send()
    assert events(conn, b"RCPT TO:<b@x.example>\r\nMAIL FROM:<bad\r\n") == []
    assert conn.data_to_send() == (
        b"503 5.5.1 Error: need MAIL command\r\n501 5.1.7 Bad sender address syntax\r\n"
    )
    assert conn.envelope.mail_from is None


def test_message_end_and_the_others_are_never_auto_accepted():
    assert MessageEnd not in AUTO_ACCEPTABLE
    assert Authenticate not in AUTO_ACCEPTABLE  # its default would take any password
    for kind in (Authenticate, MessageEnd):
        with pytest.raises(ValueError, match="auto_accept takes only"):
            connection(kind)
    conn = connection(*AUTO_ACCEPTABLE)
    seen = events(conn, b"HELO c.example\r\nVRFY someone\r\nMAIL FROM:<a@x>\r\n")
    assert seen == []
    assert b"252 " in conn.data_to_send()
    seen = events(conn, b"RCPT TO:<b@x>\r\nDATA\r\nhi\r\n.\r\n")
    assert [type(e) for e in seen] == [DataStarted, BodyChunk, MessageEnd]
    assert Verify in AUTO_ACCEPTABLE
