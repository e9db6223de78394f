"""ServerConnection without sockets: DATA, its limits, SMTP smuggling, chunk splits.

RFC 5321 §4.1.1.4 (DATA), §4.5.2 (transparency), §4.5.3.1.6 (text line),
RFC 1870 (SIZE), CVE-2023-51764 and friends (SMTP smuggling).
"""

from __future__ import annotations

import pytest

from fastsmtp.protocol.events import (
    BodyChunk,
    Closed,
    DataStarted,
    MailFrom,
    MessageAborted,
    MessageEnd,
    RcptTo,
)
from fastsmtp.protocol.replies import Reply
from fastsmtp.protocol.server import State
from smtp_replies import parse_replies

BODY = b"Subject: hello\r\n\r\nHi Bob,\r\n..a line that starts with a dot\r\nBye\r\n"
UNSTUFFED = b"Subject: hello\r\n\r\nHi Bob,\r\n.a line that starts with a dot\r\nBye\r\n"

SESSION = (
    b"EHLO client.example\r\n"
    b"MAIL FROM:<alice@example.com> BODY=8BITMIME\r\n"
    b"RCPT TO:<bob@example.com>\r\n"
    b"RCPT TO:bad-address\r\n"
    b"RCPT TO:<carol@example.com>\r\n"
    b"DATA\r\n" + BODY + b".\r\n"
    b"NOOP\r\n"
    b"MAIL FROM:<>\r\n"
    b"RCPT TO:<dave@example.com>\r\n"
    b"DATA\r\n"
    b".\r\n"
    b"RSET\r\n"
    b"QUIT\r\n"
)


def _codes(replies):
    return [(r.code, r.enhanced) for r in replies]


# --- a message ------------------------------------------------------------------
def test_data_delivers_the_unstuffed_body(smtp):
    smtp.begin()
    reply = smtp.cmd("DATA")
    assert reply.code == 354
    assert reply.enhanced is None  # RFC 2034: 3xx replies carry no enhanced code
    assert smtp.conn.in_data
    replies = smtp.send(BODY + b".\r\n")
    assert _codes(replies) == [(250, "2.0.0")]
    [(envelope, body)] = smtp.delivered
    assert body == UNSTUFFED
    assert envelope.mail_from == "alice@example.com"
    assert envelope.rcpt_tos == ["bob@example.com"]
    types = [type(e) for e in smtp.merged_events()]
    assert types[-3:] == [DataStarted, BodyChunk, MessageEnd]
    # The transaction is over: back to READY with a fresh envelope.
    assert smtp.conn.state is State.READY
    assert smtp.conn.envelope.mail_from is None
    assert smtp.conn.session.transactions == 1


def test_empty_body(smtp):
    smtp.begin()
    replies = smtp.send(b"DATA\r\n.\r\n")
    assert [r.code for r in replies] == [354, 250]
    assert smtp.delivered[0][1] == b""


def test_message_end_answer_comes_from_the_application(connect):
    def decide(event):
        if isinstance(event, MessageEnd):
            return Reply(554, "5.7.1", "Message rejected as spam")
        return None

    driver = connect(decide=decide)
    driver.begin()
    replies = driver.send(b"DATA\r\n" + BODY + b".\r\n")
    assert [(r.code, r.enhanced, r.text) for r in replies] == [
        (354, None, "End data with <CR><LF>.<CR><LF>"),
        (554, "5.7.1", "Message rejected as spam"),
    ]
    assert driver.delivered == []
    assert driver.conn.session.transactions == 0
    # A refused message ends the transaction too.
    assert driver.conn.state is State.READY
    assert driver.cmd("MAIL FROM:<a@example.com>").code == 250


def test_two_transactions_in_one_session(smtp):
    smtp.begin()
    smtp.send(b"DATA\r\nfirst\r\n.\r\n")
    assert smtp.cmd("MAIL FROM:<x@example.com>").code == 250
    assert smtp.cmd("RCPT TO:<y@example.com>").code == 250
    smtp.send(b"DATA\r\nsecond\r\n.\r\n")
    assert [(e.mail_from, e.rcpt_tos, b) for e, b in smtp.delivered] == [
        ("alice@example.com", ["bob@example.com"], b"first\r\n"),
        ("x@example.com", ["y@example.com"], b"second\r\n"),
    ]
    assert smtp.conn.session.transactions == 2


def test_commands_pipelined_after_the_terminator_run_in_order(smtp):
    smtp.begin()
    replies = smtp.send(b"DATA\r\nbody\r\n.\r\nMAIL FROM:<c@example.com>\r\nNOOP\r\n")
    assert [r.code for r in replies] == [354, 250, 250, 250]
    assert smtp.conn.envelope.mail_from == "c@example.com"


def test_eof_during_data_delivers_nothing(smtp):
    smtp.begin()
    smtp.send(b"DATA\r\nSubject: cut\r\n\r\nhalf a mess")
    assert smtp.feed(b"") == b""
    assert smtp.delivered == []
    assert isinstance(smtp.events[-1], Closed)
    assert not any(isinstance(e, MessageEnd) for e in smtp.events)
    assert smtp.conn.closed


def test_timeout_during_data_delivers_nothing(smtp):
    smtp.begin()
    smtp.send(b"DATA\r\npartial\r\n")
    smtp.conn.timed_out()
    assert _codes(smtp.send(b"")) == [(421, "4.4.2")]
    assert smtp.delivered == []
    assert smtp.conn.closed


# --- SIZE and line limits ----------------------------------------------------------
def test_body_at_the_size_limit_is_accepted(connect):
    body = b"x" * 98 + b"\r\n"
    driver = connect(max_message_size=len(body) * 10)
    driver.begin()
    replies = driver.send(b"DATA\r\n" + body * 10 + b".\r\n")
    assert [r.code for r in replies] == [354, 250]
    assert driver.delivered[0][1] == body * 10


def test_body_over_the_size_limit_is_552_after_the_terminator(connect):
    driver = connect(max_message_size=1000)
    driver.begin()
    assert driver.cmd("DATA").code == 354
    # Nothing is said before the terminator: the client is not listening.
    assert driver.send(b"y" * 98 + b"\r\n") == []
    assert driver.send((b"y" * 98 + b"\r\n") * 20) == []
    replies = driver.send(b".\r\n")
    assert _codes(replies) == [(552, "5.3.4")]
    assert driver.delivered == []
    aborted = [e for e in driver.events if isinstance(e, MessageAborted)]
    assert [(e.reply.code, e.reply.enhanced) for e in aborted] == [(552, "5.3.4")]
    assert not any(isinstance(e, MessageEnd) for e in driver.events)
    # The session continues and the next transaction is delivered.
    assert driver.conn.state is State.READY
    driver.cmd("MAIL FROM:<a@example.com>")
    driver.cmd("RCPT TO:<b@example.com>")
    assert [r.code for r in driver.send(b"DATA\r\nsmall\r\n.\r\n")] == [354, 250]
    assert [b for _, b in driver.delivered] == [b"small\r\n"]


def test_text_line_of_1000_octets_is_accepted(smtp):
    smtp.begin()
    line = b"a" * 998 + b"\r\n"
    assert [r.code for r in smtp.send(b"DATA\r\n" + line + b".\r\n")] == [354, 250]
    assert smtp.delivered[0][1] == line


def test_text_line_over_1000_octets_is_refused(smtp):
    smtp.begin()
    line = b"a" * 999 + b"\r\n"
    replies = smtp.send(b"DATA\r\n" + line + b".\r\nNOOP\r\n")
    assert _codes(replies) == [(354, None), (554, "5.6.0"), (250, "2.0.0")]
    assert smtp.delivered == []


def test_line_length_limit_is_configurable(connect):
    driver = connect(max_line_length=80)
    driver.begin()
    replies = driver.send(b"DATA\r\n" + b"b" * 79 + b"\r\n.\r\n")
    assert _codes(replies) == [(354, None), (554, "5.6.0")]


def test_command_line_of_512_octets_is_accepted(smtp):
    line = b"NOOP " + b"x" * 505
    assert len(line + b"\r\n") == 512
    assert smtp.cmd(line).code == 250


def test_command_line_over_512_octets_is_500_and_the_session_goes_on(smtp):
    smtp.ehlo()
    line = b"NOOP " + b"x" * 506
    replies = smtp.send(line + b"\r\nNOOP\r\n")
    assert _codes(replies) == [(500, "5.5.6"), (250, "2.0.0")]
    # A very long line arriving in pieces is one error, not many.
    smtp.send(b"MAIL FROM:<" + b"a" * 5000)
    assert smtp.send(b"z" * 5000) == []
    assert _codes(smtp.send(b"@example.com>\r\nNOOP\r\n")) == [(500, "5.5.6"), (250, "2.0.0")]
    assert smtp.conn.envelope.mail_from is None


def test_command_line_limit_is_configurable(connect):
    driver = connect(max_command_line=100)
    assert driver.cmd(b"NOOP " + b"x" * 93).code == 250
    assert driver.cmd(b"NOOP " + b"x" * 94).code == 500


# --- bare CR / LF and SMTP smuggling -------------------------------------------------
@pytest.mark.parametrize("line", [b"NOOP\n", b"NO\rOP\r\n", b"NOOP\r\r\n", b"EHLO a.example\n"])
def test_bare_line_endings_in_commands_are_500(smtp, line):
    replies = smtp.send(line + b"NOOP\r\n")
    assert _codes(replies) == [(500, "5.5.2"), (250, "2.0.0")]
    assert smtp.events == []


def test_bare_lf_commands_are_accepted_when_not_strict(connect):
    driver = connect(strict_crlf=False)
    replies = driver.send(b"EHLO a.example\nNOOP\n")
    assert [r.code for r in replies] == [250, 250]


SMUGGLE_SEQUENCES = [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n"]


def _smuggling_payload(fake_end: bytes) -> bytes:
    return (
        b"From: alice@example.com\r\nSubject: real\r\n\r\nreal body"
        + fake_end
        + b"MAIL FROM:<admin@example.com>\r\n"
        b"RCPT TO:<victim@example.com>\r\n"
        b"DATA\r\n"
        b"From: admin@example.com\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n"
        b".\r\n"
    )


@pytest.mark.parametrize("fake_end", SMUGGLE_SEQUENCES, ids=repr)
def test_smuggled_message_is_refused_and_nothing_is_executed(smtp, fake_end):
    smtp.begin()
    replies = smtp.send(b"DATA\r\n" + _smuggling_payload(fake_end))
    # One refusal for the whole thing; the "commands" inside were body text.
    assert _codes(replies) == [(354, None), (554, "5.6.0")]
    assert smtp.delivered == []
    after_data = smtp.events[smtp.events.index(DataStarted()) :]
    assert not any(isinstance(e, (MailFrom, RcptTo, MessageEnd)) for e in after_data)
    assert smtp.conn.state is State.READY
    assert smtp.cmd("NOOP").code == 250


@pytest.mark.parametrize("fake_end", SMUGGLE_SEQUENCES, ids=repr)
def test_fake_terminators_never_end_data(connect, fake_end):
    # Strict or not, only CRLF.CRLF ends the body: the fake one leaves us in DATA.
    for strict in (True, False):
        driver = connect(strict_crlf=strict)
        driver.begin()
        replies = driver.send(b"DATA\r\nbody" + fake_end + b"MAIL FROM:<x@example.com>\r\n")
        assert [r.code for r in replies] == [354]
        assert driver.conn.in_data
        assert not any(isinstance(e, MailFrom) for e in driver.events[4:])


@pytest.mark.parametrize("fake_end", SMUGGLE_SEQUENCES, ids=repr)
def test_not_strict_delivers_one_message_only(connect, fake_end):
    driver = connect(strict_crlf=False)
    driver.begin()
    replies = driver.send(b"DATA\r\n" + _smuggling_payload(fake_end))
    assert [r.code for r in replies] == [354, 250]
    [(envelope, body)] = driver.delivered
    assert envelope.rcpt_tos == ["bob@example.com"]
    # The would-be commands are part of the one message's text.
    assert b"MAIL FROM:<admin@example.com>\r\n" in body
    assert b"smuggled body\r\n" in body


def test_not_strict_normalises_bare_lf_to_crlf(connect):
    driver = connect(strict_crlf=False)
    driver.begin()
    replies = driver.send(b"DATA\r\nSubject: lf\n\nline one\nline two\r\n.\r\n")
    assert [r.code for r in replies] == [354, 250]
    assert driver.delivered[0][1] == b"Subject: lf\r\n\r\nline one\r\nline two\r\n"


@pytest.mark.parametrize("body", [b"bare\nlf\r\n", b"bare\rcr\r\n", b"end with lf\n", b"\n"])
def test_strict_refuses_bare_line_endings_in_data(smtp, body):
    smtp.begin()
    replies = smtp.send(b"DATA\r\n" + body + b"\r\n.\r\n")
    assert _codes(replies) == [(354, None), (554, "5.6.0")]
    assert smtp.delivered == []


# --- chunk boundaries ------------------------------------------------------------------
def _run(connect, chunks):
    driver = connect()
    for chunk in chunks:
        driver.feed(chunk)
    driver.feed(b"")
    return driver


def test_reference_session_is_what_we_expect(connect):
    driver = _run(connect, [SESSION])
    assert [r.code for r in driver.replies()] == [
        250, 250, 250, 501, 250, 354, 250, 250, 250, 250, 354, 250, 250, 221,
    ]  # fmt: skip
    assert [b for _, b in driver.delivered] == [UNSTUFFED, b""]
    assert driver.delivered[0][0].rcpt_tos == ["bob@example.com", "carol@example.com"]


def test_byte_by_byte_equals_one_piece(connect):
    whole = _run(connect, [SESSION])
    bytewise = _run(connect, [SESSION[i : i + 1] for i in range(len(SESSION))])
    assert bytewise.merged_events() == whole.merged_events()
    assert bytewise.output == whole.output
    assert [b for _, b in bytewise.delivered] == [b for _, b in whole.delivered]


def test_every_split_point_gives_the_same_result(connect):
    whole = _run(connect, [SESSION])
    for i in range(1, len(SESSION)):
        split = _run(connect, [SESSION[:i], SESSION[i:]])
        assert split.merged_events() == whole.merged_events(), i
        assert split.output == whole.output, i
        assert [b for _, b in split.delivered] == [b for _, b in whole.delivered], i


def test_bytes_that_wait_unread_keep_their_order(connect):
    """The I/O layer may hand over several reads before it asks for events (a hook is busy)."""
    whole = _run(connect, [SESSION])
    for i in range(1, len(SESSION) - 1):
        for j in (i + 1, i + 7, len(SESSION) - 1):
            driver = connect()
            driver.feed(SESSION[:i])
            driver.conn.receive_data(SESSION[i:j])
            driver.feed(SESSION[j:])
            driver.feed(b"")
            assert driver.merged_events() == whole.merged_events(), (i, j)
            assert driver.output == whole.output, (i, j)


def test_bytes_after_the_terminator_wait_while_the_last_chunk_is_handled(smtp):
    smtp.begin()
    assert smtp.cmd("DATA").code == 354
    smtp.conn.receive_data(b"last line\r\n.\r\n")
    assert smtp.conn.next_event() == BodyChunk(b"last line\r\n")
    # The application is still busy with that chunk when the next command arrives.
    smtp.conn.receive_data(b"NOOP\r\n")
    smtp.pump()
    assert _codes(parse_replies(smtp.conn.data_to_send())) == [(250, "2.0.0"), (250, "2.0.0")]
    assert isinstance(smtp.events[-1], MessageEnd)


def test_an_unread_body_is_checked_and_answered_but_never_made(connect):
    kept = _run(connect, [SESSION])
    for chunks in ([SESSION], [SESSION[i : i + 1] for i in range(len(SESSION))]):
        driver = connect(keep_body=False)
        for chunk in chunks:
            driver.feed(chunk)
        driver.feed(b"")
        assert not any(isinstance(e, BodyChunk) for e in driver.events)
        assert driver.output == kept.output
        assert [e for e in driver.events if not isinstance(e, BodyChunk)] == [
            e for e in kept.events if not isinstance(e, BodyChunk)
        ]


@pytest.mark.parametrize("body", [b"x" * 1001 + b"\r\n", b"bare\nlf\r\n", b"y\r\n" * 400])
def test_an_unread_body_gets_the_same_refusals(connect, body):
    replies = {}
    for keep_body in (True, False):
        driver = connect(keep_body=keep_body, max_message_size=1000)
        driver.begin()
        replies[keep_body] = _codes(driver.send(b"DATA\r\n" + body + b".\r\n"))
    assert replies[False] == replies[True]
    assert replies[True][1][0] in (552, 554, 500)


@pytest.mark.parametrize("fake_end", SMUGGLE_SEQUENCES, ids=repr)
def test_smuggling_is_refused_at_every_split_point(connect, fake_end):
    session = (
        b"EHLO c.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
        b"DATA\r\nx" + fake_end + b"RCPT TO:<c@example.com>\r\n.\r\nQUIT\r\n"
    )
    for i in range(1, len(session)):
        driver = _run(connect, [session[:i], session[i:]])
        assert [r.code for r in driver.replies()] == [250, 250, 250, 354, 554, 221], i
        assert driver.delivered == [], i
