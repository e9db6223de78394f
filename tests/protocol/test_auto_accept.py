"""``auto_accept``: decisions nobody takes are answered by the connection itself."""

from __future__ import annotations

import pytest

from fastsmtp.protocol.events import (
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
from fastsmtp.protocol.server import AUTO_ACCEPTABLE, State


def test_mail_and_rcpt_are_answered_without_their_events(connect):
    smtp = connect(auto_accept=(Hello, MailFrom, RcptTo), dsn=True)
    out = smtp.feed(
        b"EHLO c.example\r\nMAIL FROM:<a@x.example> SIZE=10\r\n"
        b"RCPT TO:<b@x.example> NOTIFY=NEVER\r\nRCPT TO:<c@x.example>\r\nDATA\r\n",
    )
    assert [type(e) for e in smtp.events] == [DataStarted]
    assert out.split(b"250 ENHANCEDSTATUSCODES\r\n")[1] == (
        b"250 2.1.0 Sender OK\r\n"
        b"250 2.1.5 Recipient OK\r\n"
        b"250 2.1.5 Recipient OK\r\n"
        b"354 End data with <CR><LF>.<CR><LF>\r\n"
    )
    assert smtp.conn.envelope.rcpt_tos == ["b@x.example", "c@x.example"]


def test_auto_accepted_commands_fill_the_envelope_as_accepted_events_do(connect):
    data = (
        b"EHLO c.example\r\nMAIL FROM:<a@x.example> BODY=8BITMIME RET=HDRS ENVID=e1\r\n"
        b"RCPT TO:<b@x.example> NOTIFY=SUCCESS ORCPT=rfc822;b@x.example\r\nDATA\r\n"
    )
    auto = connect(auto_accept=(Hello, MailFrom, RcptTo), dsn=True)
    asked = connect(dsn=True)
    assert auto.feed(data) == asked.feed(data)
    assert [type(e) for e in asked.events] == [Hello, MailFrom, RcptTo, DataStarted]
    assert auto.conn.envelope == asked.conn.envelope
    assert auto.conn.envelope.body_type == "8BITMIME"
    assert auto.conn.envelope.rcpt_dsn[0].notify == {"SUCCESS"}
    assert auto.conn.envelope.dsn_ret == "HDRS"
    assert auto.conn.session == asked.conn.session
    assert auto.conn.state is asked.conn.state is State.DATA


@pytest.mark.parametrize("name", [b"c.example", b"caf\xc3\xa9.example", b"bad\xff.example"])
def test_an_auto_accepted_hello_names_the_session_as_the_event_would(connect, name):
    auto = connect(auto_accept=(Hello,))
    asked = connect()
    line = b"HELO " + name + b"\r\n"
    assert auto.feed(line) == asked.feed(line)
    assert asked.events[0].host_name == name.decode("utf-8", "replace")
    assert auto.conn.session == asked.conn.session
    assert auto.conn.session.host_name == name.decode("utf-8", "replace")
    assert auto.conn.session.extended is asked.conn.session.extended is False


def test_an_auto_accepted_hello_in_a_transaction_still_reports_the_reset(connect):
    smtp = connect(auto_accept=(Hello, MailFrom))
    smtp.feed(b"EHLO c.example\r\nMAIL FROM:<a@x.example>\r\n")
    assert smtp.events == []
    out = smtp.feed(b"EHLO c.example\r\nNOOP\r\n")
    assert [type(e) for e in smtp.events] == [Reset]
    assert smtp.events[0].envelope.mail_from == "a@x.example"
    assert smtp.conn.state is State.READY
    assert out.endswith(b"250 2.0.0 OK\r\n")  # NOOP, read after


def test_refusals_still_happen_before_acceptance(connect):
    smtp = connect(auto_accept=(Hello, MailFrom, RcptTo))
    smtp.ehlo()
    assert smtp.feed(b"RCPT TO:<b@x.example>\r\nMAIL FROM:<bad\r\n") == (
        b"503 5.5.1 Error: need MAIL command\r\n501 5.1.7 Bad sender address syntax\r\n"
    )
    assert smtp.events == []
    assert smtp.conn.envelope.mail_from is None


def test_message_end_and_the_others_are_never_auto_accepted(connect):
    assert MessageEnd not in AUTO_ACCEPTABLE
    assert Authenticate not in AUTO_ACCEPTABLE  # its default would take any password
    for kind in (Authenticate, MessageEnd):
        with pytest.raises(ValueError, match="auto_accept takes only"):
            connect(auto_accept=(kind,))
    smtp = connect(auto_accept=AUTO_ACCEPTABLE)
    assert b"252 " in smtp.feed(b"HELO c.example\r\nVRFY someone\r\nMAIL FROM:<a@x>\r\n")
    assert smtp.events == []
    smtp.feed(b"RCPT TO:<b@x>\r\nDATA\r\nhi\r\n.\r\n")
    assert [type(e) for e in smtp.events] == [DataStarted, BodyChunk, MessageEnd]
    assert Verify in AUTO_ACCEPTABLE
