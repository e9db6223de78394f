"""ServerConnection without sockets: greeting, HELO/EHLO, the command set, sequence errors.

RFC 5321 §4.1 (commands), §4.2 (replies), §4.3.2 (which reply to which
command), RFC 2034 (enhanced status codes), RFC 2920 (pipelining).
"""

from __future__ import annotations

import pytest

from fastsmtp.config import Settings
from fastsmtp.protocol.events import (
    Closed,
    Expand,
    Hello,
    MailFrom,
    RcptTo,
    Reset,
    Verify,
)
from fastsmtp.protocol.replies import Reply
from fastsmtp.protocol.server import ServerConnection, State
from fastsmtp.session import Session

DEFAULT_EHLO = [
    "mx.test",
    "PIPELINING",
    "SIZE 33554432",
    "8BITMIME",
    "SMTPUTF8",
    "CHUNKING",
    "BINARYMIME",
    "ENHANCEDSTATUSCODES",
]


# --- greeting and HELO/EHLO --------------------------------------------------
def test_greeting_is_220_with_hostname_and_no_enhanced_code(smtp):
    [greeting] = smtp.greeting
    assert greeting.code == 220
    assert greeting.lines == ["mx.test ESMTP fastsmtp"]
    # RFC 2034 §3: the greeting carries no enhanced status code.
    assert greeting.enhanced is None
    assert smtp.conn.state is State.CONNECTED


def test_greet_with_refusal_sends_it_and_closes():
    conn = ServerConnection(Settings(hostname="mx.test"), Session(id="T2"))
    conn.greet(Reply(554, "5.7.1", "No SMTP service here"))
    assert conn.data_to_send() == b"554 5.7.1 No SMTP service here\r\n"
    assert conn.closed
    conn.receive_data(b"EHLO client.example\r\n")
    assert conn.data_to_send() == b""


def test_ehlo_lists_exactly_the_default_extensions(smtp):
    reply = smtp.cmd("EHLO client.example")
    assert reply.code == 250
    assert reply.lines == DEFAULT_EHLO
    assert smtp.conn.session.host_name == "client.example"
    assert smtp.conn.session.extended is True
    assert smtp.events == [Hello("EHLO", "client.example")]


@pytest.mark.parametrize(
    ("setting", "missing"),
    [
        ("pipelining", "PIPELINING"),
        ("eightbitmime", "8BITMIME"),
        ("smtputf8", "SMTPUTF8"),
        ("binarymime", "BINARYMIME"),
    ],
)
def test_ehlo_omits_a_disabled_extension(connect, setting, missing):
    reply = connect(**{setting: False}).cmd("EHLO client.example")
    assert reply.code == 250
    assert reply.lines == [line for line in DEFAULT_EHLO if line != missing]


def test_ehlo_with_every_optional_extension_disabled(connect):
    driver = connect(
        pipelining=False, eightbitmime=False, smtputf8=False, chunking=False, max_message_size=1000
    )
    assert driver.cmd("EHLO client.example").lines == [
        "mx.test",
        "SIZE 1000",
        "ENHANCEDSTATUSCODES",
    ]


def test_ehlo_raw_bytes_are_a_well_formed_multiline_reply(smtp):
    out = smtp.feed(b"EHLO client.example\r\n")
    assert out == (
        b"250-mx.test\r\n250-PIPELINING\r\n250-SIZE 33554432\r\n250-8BITMIME\r\n"
        b"250-SMTPUTF8\r\n250-CHUNKING\r\n250-BINARYMIME\r\n250 ENHANCEDSTATUSCODES\r\n"
    )


def test_helo_is_250_and_not_extended(smtp):
    reply = smtp.cmd("HELO client.example")
    assert (reply.code, reply.lines) == (250, ["mx.test"])
    assert smtp.conn.session.host_name == "client.example"
    assert smtp.conn.session.extended is False
    assert smtp.events == [Hello("HELO", "client.example")]


def test_helo_after_ehlo_makes_session_unextended(smtp):
    smtp.ehlo()
    assert smtp.cmd("HELO other.example").code == 250
    assert smtp.conn.session.extended is False
    assert smtp.conn.session.host_name == "other.example"


@pytest.mark.parametrize("verb", ["HELO", "EHLO", "helo", "ehlo"])
def test_hello_without_a_name_is_501(smtp, verb):
    reply = smtp.cmd(verb)
    assert (reply.code, reply.enhanced) == (501, "5.5.4")
    assert smtp.conn.state is State.CONNECTED


def test_verbs_are_case_insensitive(smtp):
    assert smtp.cmd("eHlO client.example").code == 250
    assert smtp.cmd("mail from:<a@example.com>").code == 250
    assert smtp.cmd("Rcpt To:<b@example.com>").code == 250
    assert smtp.cmd("noop").code == 250


def test_refused_hello_leaves_the_session_unchanged(connect):
    driver = connect(
        decide=lambda e: Reply(550, "5.7.1", "Go away") if isinstance(e, Hello) else None
    )
    reply = driver.cmd("EHLO bad.example")
    assert (reply.code, reply.enhanced, reply.text) == (550, "5.7.1", "Go away")
    assert driver.conn.session.host_name is None
    assert driver.cmd("MAIL FROM:<a@example.com>").code == 503


# --- simple commands ---------------------------------------------------------
@pytest.mark.parametrize("line", ["NOOP", "NOOP anything at all"])
def test_noop(smtp, line):
    reply = smtp.cmd(line)
    assert (reply.code, reply.enhanced) == (250, "2.0.0")


def test_help(smtp):
    reply = smtp.cmd("HELP")
    assert (reply.code, reply.enhanced) == (214, "2.0.0")
    assert "EHLO" in reply.text and "MAIL" in reply.text


def test_vrfy_default_is_252(smtp):
    reply = smtp.cmd("VRFY alice")
    assert (reply.code, reply.enhanced) == (252, "2.5.2")
    assert smtp.events == [Verify("alice")]


def test_vrfy_answer_comes_from_the_application(connect):
    driver = connect(decide=lambda e: Reply(250, "2.1.5", "Alice <alice@example.com>"))
    reply = driver.cmd("VRFY alice")
    assert (reply.code, reply.enhanced) == (250, "2.1.5")


def test_vrfy_without_argument_is_501(smtp):
    reply = smtp.cmd("VRFY")
    assert (reply.code, reply.enhanced) == (501, "5.5.4")
    assert smtp.events == []


def test_expn_default_is_502(smtp):
    reply = smtp.cmd("EXPN staff")
    assert (reply.code, reply.enhanced) == (502, "5.5.1")
    assert smtp.events == [Expand("staff")]


def test_starttls_without_tls_configured_is_not_implemented(smtp):
    smtp.ehlo()
    reply = smtp.cmd("STARTTLS")
    assert (reply.code, reply.enhanced) == (502, "5.5.1")


def test_turn_is_not_implemented(smtp):
    smtp.ehlo()
    reply = smtp.cmd("TURN")
    assert (reply.code, reply.enhanced) == (502, "5.5.1")


@pytest.mark.parametrize("line", ["FOO", "MAILFROM:<a@b.example>", "AUTH PLAIN"])
def test_unknown_commands_are_500(smtp, line):
    smtp.ehlo()
    reply = smtp.cmd(line)
    assert (reply.code, reply.enhanced) == (500, "5.5.2")


def test_rset_clears_the_transaction(smtp):
    smtp.begin()
    assert smtp.conn.envelope.rcpt_tos == ["bob@example.com"]
    reply = smtp.cmd("RSET")
    assert (reply.code, reply.enhanced) == (250, "2.0.0")
    assert isinstance(smtp.events[-1], Reset)
    assert smtp.conn.envelope.mail_from is None
    assert smtp.conn.envelope.rcpt_tos == []
    assert smtp.conn.state is State.READY
    # The transaction is gone: RCPT needs a new MAIL.
    assert smtp.cmd("RCPT TO:<bob@example.com>").code == 503
    assert smtp.cmd("MAIL FROM:<carol@example.com>").code == 250


def test_rset_before_helo_does_not_skip_helo(smtp):
    assert smtp.cmd("RSET").code == 250
    assert smtp.cmd("MAIL FROM:<a@example.com>").code == 503


def test_new_ehlo_during_a_transaction_resets_it(smtp):
    # RFC 5321 §4.1.4: an accepted EHLO resets the state exactly like RSET.
    smtp.begin()
    smtp.ehlo()
    assert smtp.conn.envelope.mail_from is None
    assert smtp.conn.envelope.rcpt_tos == []
    assert smtp.cmd("RCPT TO:<bob@example.com>").code == 503
    assert smtp.cmd("MAIL FROM:<a@example.com>").code == 250


def test_new_ehlo_during_a_transaction_emits_reset(smtp):
    # events.Reset: "The transaction was abandoned (RSET, or HELO/EHLO during one)";
    # the handler's on_reset is documented to run for "RSET or a new EHLO".
    smtp.begin()
    del smtp.events[:]
    smtp.ehlo()
    assert [type(e) for e in smtp.events] == [Hello, Reset]


def test_ehlo_outside_a_transaction_emits_no_reset(smtp):
    smtp.ehlo()
    smtp.ehlo()
    assert [type(e) for e in smtp.events] == [Hello, Hello]


@pytest.mark.parametrize("line", ["QUIT now", "RSET x", "DATA x"])
def test_commands_without_arguments_refuse_them(smtp, line):
    smtp.begin()
    reply = smtp.cmd(line)
    assert (reply.code, reply.enhanced) == (501, "5.5.4")
    assert not smtp.conn.closed


def test_quit_says_221_and_closes(smtp):
    smtp.ehlo()
    reply = smtp.cmd("QUIT")
    assert (reply.code, reply.enhanced) == (221, "2.0.0")
    assert smtp.events[-1] == Closed("QUIT")
    assert smtp.conn.closed
    # Nothing after QUIT is read or answered.
    assert smtp.feed(b"NOOP\r\n") == b""


def test_pipelined_commands_after_quit_are_ignored(smtp):
    replies = smtp.send(b"EHLO c.example\r\nQUIT\r\nMAIL FROM:<a@example.com>\r\n")
    assert [r.code for r in replies] == [250, 221]
    assert not any(isinstance(e, MailFrom) for e in smtp.events)


def test_eof_closes_without_a_reply(smtp):
    smtp.ehlo()
    assert smtp.feed(b"") == b""
    assert isinstance(smtp.events[-1], Closed)
    assert smtp.conn.closed


def test_eof_after_a_complete_command_answers_it_first(smtp):
    smtp.conn.receive_data(b"EHLO c.example\r\nNOOP\r\n")
    smtp.conn.receive_data(b"")
    smtp.pump()
    replies = smtp.send(b"")
    assert [r.code for r in replies] == [250, 250]
    assert isinstance(smtp.events[-1], Closed)
    assert smtp.conn.closed


# --- sequence errors (RFC 5321 §4.1.4, RFC 2920 §3.1) ------------------------
def test_mail_before_helo_is_503(smtp):
    reply = smtp.cmd("MAIL FROM:<a@example.com>")
    assert (reply.code, reply.enhanced) == (503, "5.5.1")
    assert not any(isinstance(e, MailFrom) for e in smtp.events)


def test_nested_mail_is_503(smtp):
    smtp.ehlo()
    assert smtp.cmd("MAIL FROM:<a@example.com>").code == 250
    reply = smtp.cmd("MAIL FROM:<b@example.com>")
    assert (reply.code, reply.enhanced) == (503, "5.5.1")
    assert smtp.conn.envelope.mail_from == "a@example.com"
    smtp.cmd("RCPT TO:<c@example.com>")
    assert smtp.cmd("MAIL FROM:<b@example.com>").code == 503


def test_rcpt_before_mail_is_503(smtp):
    assert smtp.cmd("RCPT TO:<b@example.com>").code == 503
    smtp.ehlo()
    reply = smtp.cmd("RCPT TO:<b@example.com>")
    assert (reply.code, reply.enhanced) == (503, "5.5.1")
    assert not any(isinstance(e, RcptTo) for e in smtp.events)


def test_data_before_mail_is_503(smtp):
    assert smtp.cmd("DATA").code == 503
    smtp.ehlo()
    reply = smtp.cmd("DATA")
    assert (reply.code, reply.enhanced) == (503, "5.5.1")
    assert smtp.conn.state is State.READY


def test_data_without_rcpt_is_503(smtp):
    smtp.ehlo()
    smtp.cmd("MAIL FROM:<a@example.com>")
    reply = smtp.cmd("DATA")
    assert (reply.code, reply.enhanced) == (503, "5.5.1")
    assert not smtp.conn.in_data


def test_data_with_only_refused_recipients_is_503(connect):
    def decide(event):
        if isinstance(event, RcptTo):
            return Reply(550, "5.1.1", "No such user here")
        return None

    driver = connect(decide=decide)
    driver.ehlo()
    assert driver.cmd("MAIL FROM:<a@example.com>").code == 250
    reply = driver.cmd("RCPT TO:<nobody@example.com>")
    assert (reply.code, reply.enhanced, reply.text) == (550, "5.1.1", "No such user here")
    assert driver.conn.envelope.rcpt_tos == []
    # RFC 2920 §3.1: DATA with no successful RCPT MUST fail with 503.
    reply = driver.cmd("DATA")
    assert (reply.code, reply.enhanced) == (503, "5.5.1")
    assert not driver.conn.in_data


def test_refused_mail_leaves_no_transaction(connect):
    def decide(event):
        if isinstance(event, MailFrom):
            return Reply(451, "4.7.1", "Greylisted, try again later")
        return None

    driver = connect(decide=decide)
    driver.ehlo()
    reply = driver.cmd("MAIL FROM:<a@example.com>")
    assert (reply.code, reply.enhanced, reply.text) == (451, "4.7.1", "Greylisted, try again later")
    assert driver.conn.envelope.mail_from is None
    assert driver.cmd("RCPT TO:<b@example.com>").code == 503


# --- errors and the error limit (RFC 5321 §4.3.2) ----------------------------
def test_too_many_errors_closes_with_421_default_10(smtp):
    smtp.ehlo()
    for i in range(9):
        reply = smtp.cmd(f"BOGUS{i}")
        assert reply.code == 500
    assert smtp.cmd("NOOP").code == 250
    assert not smtp.conn.closed
    replies = smtp.send(b"BOGUS\r\n")
    assert [(r.code, r.enhanced) for r in replies] == [(500, "5.5.2"), (421, "4.7.0")]
    assert smtp.conn.closed
    assert smtp.events[-1] == Closed("too many errors")


def test_sequence_and_syntax_errors_count_towards_the_limit(connect):
    driver = connect(max_errors=3)
    replies = driver.send(b"MAIL FROM:<a@example.com>\r\nEHLO\r\nRCPT TO:<b@example.com>\r\n")
    assert [r.code for r in replies] == [503, 501, 503, 421]
    assert driver.conn.closed


def test_max_errors_is_configurable(connect):
    driver = connect(max_errors=2)
    assert driver.cmd("XYZZY").code == 500
    replies = driver.send(b"XYZZY\r\nNOOP\r\n")
    assert [r.code for r in replies] == [500, 421]
    assert driver.conn.closed


def test_pending_decision_must_be_answered_before_reading_on(smtp):
    smtp.conn.receive_data(b"EHLO c.example\r\nNOOP\r\n")
    event = smtp.conn.next_event()
    assert event == Hello("EHLO", "c.example")
    assert smtp.conn.pending_decision is event
    with pytest.raises(RuntimeError):
        smtp.conn.next_event()
    smtp.conn.respond()
    assert smtp.conn.pending_decision is None
    with pytest.raises(RuntimeError):
        smtp.conn.respond()


def test_timed_out_says_421_442_and_closes(smtp):
    smtp.ehlo()
    smtp.conn.timed_out()
    replies = smtp.send(b"")
    assert [(r.code, r.enhanced) for r in replies] == [(421, "4.4.2")]
    assert smtp.conn.closed


def test_shutdown_says_421_432_and_closes(smtp):
    smtp.begin()
    smtp.conn.shutdown()
    assert [(r.code, r.enhanced) for r in smtp.send(b"")] == [(421, "4.3.2")]
    assert smtp.conn.closed
    smtp.conn.shutdown()  # idempotent: one 421 only
    assert smtp.feed(b"") == b""
