"""ServerConnection without sockets: MAIL and RCPT, their parameters and limits.

RFC 5321 §4.1.1.2-3, RFC 1870 (SIZE), RFC 6152 (8BITMIME), RFC 6531
(SMTPUTF8), RFC 5321 §4.5.3.1.8 (recipients), RFC 2920 (pipelining).
"""

from __future__ import annotations

import pytest

from fastsmtp.protocol.events import MailFrom, RcptTo
from fastsmtp.protocol.server import State


def _codes(replies):
    return [(r.code, r.enhanced) for r in replies]


# --- the envelope -------------------------------------------------------------
def test_mail_and_rcpt_fill_the_envelope(smtp):
    smtp.ehlo()
    reply = smtp.cmd("MAIL FROM:<alice@example.com> SIZE=1234 BODY=8BITMIME")
    assert (reply.code, reply.enhanced) == (250, "2.1.0")
    reply = smtp.cmd("RCPT TO:<bob@example.com>")
    assert (reply.code, reply.enhanced) == (250, "2.1.5")
    assert smtp.cmd("RCPT TO:<carol@example.org>").code == 250
    env = smtp.conn.envelope
    assert env.mail_from == "alice@example.com"
    assert env.mail_options == {"SIZE": "1234", "BODY": "8BITMIME"}
    assert env.body_type == "8BITMIME"
    assert env.smtputf8 is False
    assert env.rcpt_tos == ["bob@example.com", "carol@example.org"]
    assert env.rcpt_options == [{}, {}]
    assert smtp.events[1:] == [
        MailFrom("alice@example.com", {"SIZE": "1234", "BODY": "8BITMIME"}),
        RcptTo("bob@example.com", {}),
        RcptTo("carol@example.org", {}),
    ]
    assert smtp.conn.state is State.RCPT


def test_null_sender_is_the_empty_string(smtp):
    smtp.ehlo()
    assert smtp.cmd("MAIL FROM:<>").code == 250
    assert smtp.conn.envelope.mail_from == ""


def test_postmaster_without_domain_is_a_valid_recipient(smtp):
    smtp.ehlo()
    smtp.cmd("MAIL FROM:<>")
    assert smtp.cmd("RCPT TO:<Postmaster>").code == 250
    assert smtp.conn.envelope.rcpt_tos == ["Postmaster"]


@pytest.mark.parametrize(
    ("line", "code", "enhanced"),
    [
        ("MAIL TO:<a@example.com>", 501, "5.5.4"),
        ("MAIL", 501, "5.5.4"),
        ("MAIL FROM:", 501, "5.5.4"),
        ("MAIL FROM:a@example.com", 501, "5.1.7"),
        ("MAIL FROM:<a@example.com", 501, "5.1.7"),
        ("MAIL FROM:<not an address>", 501, "5.1.7"),
    ],
)
def test_malformed_mail_is_refused(smtp, line, code, enhanced):
    smtp.ehlo()
    reply = smtp.cmd(line)
    assert (reply.code, reply.enhanced) == (code, enhanced)
    assert smtp.conn.state is State.READY
    assert not any(isinstance(e, MailFrom) for e in smtp.events)


@pytest.mark.parametrize(
    ("line", "code", "enhanced"),
    [
        ("RCPT FROM:<b@example.com>", 501, "5.5.4"),
        ("RCPT TO:b@example.com", 501, "5.1.3"),
        ("RCPT TO:<>", 501, "5.1.3"),
        ("RCPT TO:<b@@example.com>", 501, "5.1.3"),
    ],
)
def test_malformed_rcpt_is_refused(smtp, line, code, enhanced):
    smtp.ehlo()
    smtp.cmd("MAIL FROM:<a@example.com>")
    reply = smtp.cmd(line)
    assert (reply.code, reply.enhanced) == (code, enhanced)
    assert smtp.conn.envelope.rcpt_tos == []
    assert not any(isinstance(e, RcptTo) for e in smtp.events)


def test_lenient_addresses_accept_paths_without_brackets(connect):
    driver = connect(lenient_addresses=True)
    driver.ehlo()
    assert driver.cmd("MAIL FROM:a@example.com").code == 250
    assert driver.cmd("RCPT TO:b@example.com").code == 250
    assert driver.conn.envelope.rcpt_tos == ["b@example.com"]


# --- SIZE (RFC 1870) ------------------------------------------------------------
def test_size_at_the_limit_is_accepted(connect):
    driver = connect(max_message_size=1000)
    driver.ehlo()
    assert driver.cmd("MAIL FROM:<a@example.com> SIZE=1000").code == 250
    assert driver.conn.envelope.mail_options == {"SIZE": "1000"}


def test_size_over_the_limit_is_552_and_no_transaction_starts(connect):
    driver = connect(max_message_size=1000)
    assert "SIZE 1000" in driver.ehlo().lines
    # One reply: the refusal, and no MAIL transaction behind it.
    replies = driver.send(b"MAIL FROM:<a@example.com> SIZE=1001\r\n")
    assert _codes(replies) == [(552, "5.3.4")]
    assert driver.conn.state is State.READY
    assert driver.conn.envelope.mail_from is None
    assert not any(isinstance(e, MailFrom) for e in driver.events)
    # The session goes on: a new MAIL is not "nested".
    assert driver.cmd("MAIL FROM:<a@example.com> SIZE=999").code == 250


def test_size_refusals_are_not_counted_as_errors(connect):
    driver = connect(max_message_size=10, max_errors=2)
    driver.ehlo()
    for _ in range(3):
        assert _codes(driver.send(b"MAIL FROM:<a@example.com> SIZE=11\r\n")) == [(552, "5.3.4")]
    assert not driver.conn.closed


@pytest.mark.parametrize("param", ["SIZE=abc", "SIZE", "SIZE=-1", "SIZE=1e3"])
def test_malformed_size_is_501(smtp, param):
    smtp.ehlo()
    replies = smtp.send(f"MAIL FROM:<a@example.com> {param}\r\n".encode())
    assert _codes(replies) == [(501, "5.5.4")]
    assert smtp.conn.state is State.READY


# --- 8BITMIME (RFC 6152) ----------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "body_type"), [("7BIT", "7BIT"), ("8BITMIME", "8BITMIME"), ("8bitmime", "8BITMIME")]
)
def test_body_parameter_sets_body_type(smtp, value, body_type):
    smtp.ehlo()
    assert smtp.cmd(f"MAIL FROM:<a@example.com> BODY={value}").code == 250
    assert smtp.conn.envelope.body_type == body_type


def test_body_type_is_none_without_the_parameter(smtp):
    smtp.begin()
    assert smtp.conn.envelope.body_type is None


@pytest.mark.parametrize("param", ["BODY=foo", "BODY=8BIT", "BODY"])
def test_bad_body_is_501_and_no_transaction_starts(smtp, param):
    smtp.ehlo()
    replies = smtp.send(f"MAIL FROM:<a@example.com> {param}\r\n".encode())
    assert _codes(replies) == [(501, "5.5.4")]
    assert smtp.conn.state is State.READY
    assert not any(isinstance(e, MailFrom) for e in smtp.events)


def test_body_parameter_is_unknown_when_8bitmime_is_off(connect):
    driver = connect(eightbitmime=False)
    driver.ehlo()
    assert _codes(driver.send(b"MAIL FROM:<a@example.com> BODY=8BITMIME\r\n")) == [(555, "5.5.4")]
    assert driver.conn.state is State.READY


# --- SMTPUTF8 (RFC 6531) ------------------------------------------------------------
def test_utf8_sender_needs_smtputf8(smtp):
    smtp.ehlo()
    replies = smtp.send("MAIL FROM:<jörg@exämple.de>\r\n".encode())
    assert _codes(replies) == [(553, "5.6.7")]
    assert smtp.conn.state is State.READY


def test_utf8_addresses_with_smtputf8(smtp):
    smtp.ehlo()
    reply = smtp.cmd("MAIL FROM:<jörg@exämple.de> SMTPUTF8")
    assert reply.code == 250
    assert smtp.cmd("RCPT TO:<用户@例子.广告>").code == 250
    env = smtp.conn.envelope
    assert env.smtputf8 is True
    assert env.mail_from == "jörg@exämple.de"
    assert env.rcpt_tos == ["用户@例子.广告"]
    assert env.mail_options == {"SMTPUTF8": None}


def test_ascii_transaction_with_smtputf8_still_sets_the_flag(smtp):
    smtp.ehlo()
    assert smtp.cmd("MAIL FROM:<a@example.com> SMTPUTF8").code == 250
    assert smtp.conn.envelope.smtputf8 is True


def test_utf8_recipient_needs_smtputf8_on_mail(smtp):
    smtp.ehlo()
    smtp.cmd("MAIL FROM:<a@example.com>")
    replies = smtp.send("RCPT TO:<jörg@example.de>\r\n".encode())
    assert _codes(replies) == [(553, "5.6.7")]
    assert smtp.conn.envelope.rcpt_tos == []
    assert smtp.conn.envelope.smtputf8 is False


def test_smtputf8_parameter_is_unknown_when_disabled(connect):
    driver = connect(smtputf8=False)
    driver.ehlo()
    assert _codes(driver.send(b"MAIL FROM:<a@example.com> SMTPUTF8\r\n")) == [(555, "5.5.4")]
    assert _codes(driver.send("MAIL FROM:<jörg@example.de>\r\n".encode())) == [(553, "5.6.7")]
    assert driver.conn.state is State.READY


def test_smtputf8_takes_no_value(smtp):
    smtp.ehlo()
    assert _codes(smtp.send(b"MAIL FROM:<a@example.com> SMTPUTF8=yes\r\n")) == [(501, "5.5.4")]


# --- unknown parameters, parameters after HELO ------------------------------------
@pytest.mark.parametrize("param", ["FOO=bar", "XYZ", "AUTH=<>", "RET=HDRS"])
def test_unknown_mail_parameter_is_555(smtp, param):
    smtp.ehlo()
    replies = smtp.send(f"MAIL FROM:<a@example.com> {param}\r\n".encode())
    assert _codes(replies) == [(555, "5.5.4")]
    assert smtp.conn.state is State.READY
    assert not any(isinstance(e, MailFrom) for e in smtp.events)


@pytest.mark.parametrize("param", ["FOO=bar", "NOTIFY=NEVER", "ORCPT=rfc822;b@example.com"])
def test_unknown_rcpt_parameter_is_555(smtp, param):
    smtp.ehlo()
    smtp.cmd("MAIL FROM:<a@example.com>")
    replies = smtp.send(f"RCPT TO:<b@example.com> {param}\r\n".encode())
    assert _codes(replies) == [(555, "5.5.4")]
    assert smtp.conn.envelope.rcpt_tos == []


@pytest.mark.parametrize("param", ["SIZE=10", "BODY=7BIT", "SMTPUTF8"])
def test_parameters_after_helo_are_555(smtp, param):
    assert smtp.cmd("HELO client.example").code == 250
    replies = smtp.send(f"MAIL FROM:<a@example.com> {param}\r\n".encode())
    assert _codes(replies) == [(555, "5.5.4")]
    assert smtp.conn.state is State.READY
    # Plain MAIL still works after HELO.
    assert smtp.cmd("MAIL FROM:<a@example.com>").code == 250


def test_parameter_given_twice_is_501(smtp):
    smtp.ehlo()
    replies = smtp.send(b"MAIL FROM:<a@example.com> SIZE=1 SIZE=2\r\n")
    assert _codes(replies) == [(501, "5.5.4")]


# --- recipients limit (RFC 5321 §4.5.3.1.8) -----------------------------------------
def test_default_recipient_limit_is_100_then_452(smtp):
    smtp.ehlo()
    smtp.cmd("MAIL FROM:<a@example.com>")
    group = b"".join(b"RCPT TO:<user%d@example.com>\r\n" % i for i in range(101))
    replies = smtp.send(group)
    assert len(replies) == 101
    assert all(r.code == 250 for r in replies[:100])
    assert (replies[100].code, replies[100].enhanced) == (452, "4.5.3")
    assert len(smtp.conn.envelope.rcpt_tos) == 100
    assert "user100@example.com" not in smtp.conn.envelope.rcpt_tos
    # 452 is not fatal: the transaction goes on with the 100 accepted.
    assert smtp.cmd("DATA").code == 354


def test_recipient_limit_is_configurable_and_not_an_error(connect):
    driver = connect(max_recipients=2, max_errors=2)
    driver.ehlo()
    driver.cmd("MAIL FROM:<a@example.com>")
    codes = [driver.cmd(f"RCPT TO:<u{i}@example.com>").code for i in range(5)]
    assert codes == [250, 250, 452, 452, 452]
    assert driver.conn.envelope.rcpt_tos == ["u0@example.com", "u1@example.com"]
    assert not driver.conn.closed


# --- pipelining (RFC 2920) -------------------------------------------------------------
def test_pipelined_group_is_answered_in_order_in_one_batch(smtp):
    smtp.ehlo()
    out = smtp.feed(
        b"MAIL FROM:<a@example.com>\r\n"
        b"RCPT TO:<b@example.com>\r\n"
        b"RCPT TO:bad\r\n"
        b"RCPT TO:<c@example.com>\r\n"
        b"NOOP\r\n"
        b"DATA\r\n"
    )
    # One call to data_to_send returns every reply of the group, in order.
    assert out == (
        b"250 2.1.0 Sender OK\r\n"
        b"250 2.1.5 Recipient OK\r\n"
        b"501 5.1.3 Bad recipient address syntax\r\n"
        b"250 2.1.5 Recipient OK\r\n"
        b"250 2.0.0 OK\r\n"
        b"354 End data with <CR><LF>.<CR><LF>\r\n"
    )
    assert smtp.conn.data_to_send() == b""
    assert smtp.conn.envelope.rcpt_tos == ["b@example.com", "c@example.com"]


def test_replies_wait_in_the_buffer_until_taken(smtp):
    # The I/O layer decides when to write: nothing is lost between decisions.
    smtp.conn.receive_data(b"EHLO c.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@ex.com>\r\n")
    smtp.pump()
    replies = smtp.send(b"")
    assert [r.code for r in replies] == [250, 250, 250]
