"""SMTP smuggling over a real socket: only CRLF.CRLF ends a message.

A message containing a fake end-of-data (``\\n.\\n``, ``\\r.\\r``,
``\\n.\\r\\n``, ``\\r\\n.\\n``) followed by a second, smuggled transaction must
never turn into two messages (CVE-2023-51764 and relatives). Strict mode
refuses the whole thing with 554 5.6.0; lenient mode delivers one message.
"""

from __future__ import annotations

import pytest

from fastsmtp import Collect

FAKE_ENDS = [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n"]


def _payload(fake_end: bytes) -> bytes:
    return (
        b"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: real\r\n\r\nreal body"
        + fake_end
        + b"MAIL FROM:<admin@example.com>\r\n"
        b"RCPT TO:<victim@example.com>\r\n"
        b"DATA\r\n"
        b"From: admin@example.com\r\nTo: victim@example.com\r\nSubject: smuggled\r\n\r\n"
        b"smuggled body\r\n"
        b".\r\n"
    )


@pytest.mark.parametrize("fake_end", FAKE_ENDS, ids=repr)
def test_smuggling_attempt_is_refused_and_nothing_is_delivered(serve, client, fake_end):
    handler = Collect()
    raw = client(serve(handler))
    raw.begin("<alice@example.com>", "<bob@example.com>")
    assert raw.cmd("DATA").code == 354
    raw.send(_payload(fake_end))
    reply = raw.reply()
    assert (reply.code, reply.enhanced) == (554, "5.6.0")
    # Nothing else was queued for us: the smuggled MAIL/RCPT/DATA never ran,
    # so the next reply is NOOP's own.
    noop = raw.cmd("NOOP")
    assert (noop.code, noop.enhanced, noop.text) == (250, "2.0.0", "OK")
    assert raw.cmd("QUIT").code == 221
    raw.expect_closed()
    serve.stop()
    assert handler.envelopes == []


@pytest.mark.parametrize("fake_end", FAKE_ENDS, ids=repr)
def test_lenient_mode_delivers_exactly_one_message(serve, client, fake_end):
    handler = Collect()
    raw = client(serve(handler, strict_crlf=False))
    raw.begin("<alice@example.com>", "<bob@example.com>")
    assert raw.cmd("DATA").code == 354
    raw.send(_payload(fake_end))
    assert raw.reply().code == 250
    noop = raw.cmd("NOOP")
    assert (noop.code, noop.enhanced, noop.text) == (250, "2.0.0", "OK")
    assert raw.cmd("QUIT").code == 221
    raw.expect_closed()
    serve.stop()
    [envelope] = handler.envelopes
    assert envelope.mail_from == "alice@example.com"
    assert envelope.rcpt_tos == ["bob@example.com"]
    # The "smuggled" transaction is just text inside the one message.
    assert b"MAIL FROM:<admin@example.com>\r\n" in envelope.content
    assert envelope.content.endswith(b"smuggled body\r\n")


def test_lenient_mode_normalises_bare_lf(serve, client):
    handler = Collect()
    raw = client(serve(handler, strict_crlf=False))
    raw.send(b"EHLO lf.example\nMAIL FROM:<a@example.com>\nRCPT TO:<b@example.com>\nDATA\n")
    assert [r.code for r in raw.replies(4)] == [250, 250, 250, 354]
    raw.send(b"Subject: lf\n\nline one\nline two\n.\r\n")  # "\n.\r\n" is not the end...
    raw.assert_quiet(0.2)
    raw.send(b"line three\r\n.\r\n")  # ...only CRLF.CRLF is
    assert raw.reply().code == 250
    [envelope] = handler.wait_for(1)
    assert envelope.content.endswith(
        b"Subject: lf\r\n\r\nline one\r\nline two\r\n\r\nline three\r\n"
    )


@pytest.mark.parametrize(
    "body", [b"bare LF\nin the middle\r\n", b"bare CR\rin the middle\r\n", b"ends in LF\n\r\n"]
)
def test_bare_cr_or_lf_in_a_message_is_refused(serve, client, body):
    handler = Collect()
    raw = client(serve(handler))
    raw.begin()
    reply = raw.send_message(body)
    assert (reply.code, reply.enhanced) == (554, "5.6.0")
    # Refused, not disconnected: the next message goes through.
    raw.cmd("MAIL FROM:<a@example.com>")
    raw.cmd("RCPT TO:<b@example.com>")
    assert raw.send_message(b"clean\r\n").code == 250
    serve.stop()
    assert len(handler.envelopes) == 1
    assert handler.envelopes[0].content.endswith(b"\r\nclean\r\n")


@pytest.mark.parametrize("line", [b"NOOP\n", b"NO\rOP\r\n", b"RSET\r\r\n"], ids=repr)
def test_bare_cr_or_lf_in_a_command_is_500(serve, client, line):
    raw = client(serve(Collect()))
    raw.send(line)
    reply = raw.reply()
    assert (reply.code, reply.enhanced) == (500, "5.5.2")
    assert raw.cmd("NOOP").code == 250


def test_command_smuggled_behind_a_bare_lf_is_not_executed(serve, client):
    handler = Collect()
    raw = client(serve(handler))
    raw.begin()
    # One line by CRLF rules: "RSET\nDATA". It must not act as RSET, then DATA.
    raw.send(b"RSET\nDATA\r\n")
    assert [(r.code, r.enhanced) for r in raw.replies(2)] == [(500, "5.5.2"), (354, None)]
    # The transaction survived: the message is delivered to the original recipient.
    raw.send(b"still here\r\n.\r\n")
    assert raw.reply().code == 250
    assert handler.wait_for(1)[0].rcpt_tos == ["bob@example.com"]
