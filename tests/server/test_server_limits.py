"""Limits over real sockets: SIZE, recipients, line lengths, errors, timeouts.

RFC 1870 (SIZE), RFC 5321 §4.5.3.1 (sizes), §4.5.3.2 (timeouts), §4.3.2
(closing on abuse). Timeouts are tiny; the tests wait on the socket, never
on a sleep.
"""

from __future__ import annotations

import smtplib
import time

import pytest

from fastsmtp import Collect


def test_smtplib_message_over_size_is_refused_at_mail(serve):
    handler = Collect()
    host, port = serve(handler, max_message_size=1000)
    with smtplib.SMTP(host, port, timeout=5) as smtp:
        smtp.ehlo()
        assert smtp.esmtp_features["size"] == "1000"
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            smtp.sendmail("a@example.com", ["b@example.com"], b"x" * 1100 + b"\r\n")
        assert refused.value.smtp_code == 552
        assert refused.value.smtp_error.startswith(b"5.3.4 ")
        # The session continues: a small message goes through.
        assert smtp.sendmail("a@example.com", ["b@example.com"], b"small\r\n") == {}
    [envelope] = handler.wait_for(1)
    assert envelope.content.endswith(b"\r\nsmall\r\n")


def test_declared_size_over_limit_is_only_552(serve, client):
    raw = client(serve(Collect(), max_message_size=1000))
    raw.ehlo()
    reply = raw.cmd("MAIL FROM:<a@example.com> SIZE=1001")
    assert (reply.code, reply.enhanced) == (552, "5.3.4")
    # No transaction began: the next reply is NOOP's own, and MAIL is not nested.
    noop = raw.cmd("NOOP")
    assert (noop.code, noop.enhanced, noop.text) == (250, "2.0.0", "OK")
    assert raw.cmd("MAIL FROM:<a@example.com> SIZE=1000").code == 250


def test_body_over_size_is_552_after_terminator_and_session_continues(serve, client):
    handler = Collect()
    raw = client(serve(handler, max_message_size=1000))
    raw.begin()
    reply = raw.send_message((b"z" * 98 + b"\r\n") * 11)
    assert (reply.code, reply.enhanced) == (552, "5.3.4")
    assert raw.cmd("MAIL FROM:<a@example.com>").code == 250
    assert raw.cmd("RCPT TO:<b@example.com>").code == 250
    assert raw.send_message(b"fits\r\n").code == 250
    assert raw.cmd("QUIT").code == 221
    raw.expect_closed()
    [envelope] = handler.wait_for(1)
    assert envelope.content.endswith(b"\r\nfits\r\n")


def test_default_recipient_limit_is_100(serve, client):
    handler = Collect()
    raw = client(serve(handler))
    raw.ehlo()
    raw.cmd("MAIL FROM:<a@example.com>")
    raw.send(b"".join(b"RCPT TO:<u%03d@example.com>\r\n" % i for i in range(101)))
    replies = raw.replies(101)
    assert [r.code for r in replies[:100]] == [250] * 100
    assert (replies[100].code, replies[100].enhanced) == (452, "4.5.3")
    assert raw.send_message(b"many\r\n").code == 250
    [envelope] = handler.wait_for(1)
    assert len(envelope.rcpt_tos) == 100
    assert envelope.rcpt_tos[-1] == "u099@example.com"


def test_command_line_limit_is_512_with_crlf(serve, client):
    raw = client(serve(Collect()))
    assert raw.cmd(b"NOOP " + b"x" * 505).code == 250  # 512 octets with CRLF
    reply = raw.cmd(b"NOOP " + b"x" * 506)  # 513
    assert (reply.code, reply.enhanced) == (500, "5.5.6")
    reply = raw.cmd(b"NOOP " + b"x" * 100_000)
    assert (reply.code, reply.enhanced) == (500, "5.5.6")
    raw.ehlo()  # the session continues


def test_data_line_limit_is_1000_with_crlf(serve, client):
    handler = Collect()
    raw = client(serve(handler))
    raw.begin()
    reply = raw.send_message(b"a" * 999 + b"\r\n")
    assert (reply.code, reply.enhanced) == (554, "5.6.0")
    raw.cmd("MAIL FROM:<a@example.com>")
    raw.cmd("RCPT TO:<b@example.com>")
    assert raw.send_message(b"a" * 998 + b"\r\n").code == 250
    [envelope] = handler.wait_for(1)
    assert envelope.content.endswith(b"\r\n" + b"a" * 998 + b"\r\n")


@pytest.mark.parametrize("max_errors", [10, 3])
def test_too_many_errors_give_421_and_close(serve, client, max_errors):
    settings = {} if max_errors == 10 else {"max_errors": max_errors}
    raw = client(serve(Collect(), **settings))
    raw.ehlo()
    for _ in range(max_errors - 1):
        assert raw.cmd("XYZZY").code == 500
    assert raw.cmd("NOOP").code == 250  # still served
    raw.send(b"XYZZY\r\n")
    assert [(r.code, r.enhanced) for r in raw.replies(2)] == [(500, "5.5.2"), (421, "4.7.0")]
    raw.expect_closed()


# --- timeouts (RFC 5321 §4.5.3.2) ------------------------------------------------
def test_command_timeout_says_421_and_closes(serve, client):
    raw = client(serve(Collect(), command_timeout=0.2))
    raw.ehlo()
    started = time.monotonic()
    reply = raw.reply()  # nothing sent: wait for the server to give up
    assert (reply.code, reply.enhanced) == (421, "4.4.2")
    assert time.monotonic() - started < 3
    raw.expect_closed()


def _busy_for(raw, seconds):
    """Keep the session active (NOOP after NOOP) for ``seconds``."""
    started = time.monotonic()
    for _ in range(100_000):
        assert raw.cmd("NOOP").code == 250
        if time.monotonic() - started > seconds:
            return
    raise AssertionError("too many NOOPs")


def test_data_timeout_says_421_and_delivers_nothing(serve, client):
    handler = Collect()
    raw = client(serve(handler, command_timeout=60, data_timeout=0.2, max_junk_commands=0))
    raw.begin()
    # Spend longer than the data timeout in command state first, so that the
    # server's timer is running for the (long) command timeout when DATA starts.
    _busy_for(raw, 0.5)
    assert raw.cmd("DATA").code == 354
    raw.send(b"Subject: stalled\r\n\r\nhalf")
    started = time.monotonic()
    reply = raw.reply()
    assert (reply.code, reply.enhanced) == (421, "4.4.2")
    assert time.monotonic() - started < 3
    raw.expect_closed()
    assert handler.envelopes == []


def test_command_timeout_applies_again_after_data(serve, client):
    handler = Collect()
    raw = client(serve(handler, command_timeout=0.3, data_timeout=60))
    raw.begin()
    assert raw.cmd("DATA").code == 354
    # A slow but steady body: longer in DATA than the command timeout.
    for i in range(8):
        raw.send(b"line %d\r\n" % i)
        raw.assert_quiet(0.1)
    raw.send(b".\r\n")
    assert raw.reply().code == 250
    started = time.monotonic()
    reply = raw.reply()
    assert (reply.code, reply.enhanced) == (421, "4.4.2")
    assert time.monotonic() - started < 3
    raw.expect_closed()
    assert len(handler.wait_for(1)) == 1


def test_activity_keeps_a_session_alive_past_the_timeout(serve, client):
    raw = client(serve(Collect(), command_timeout=0.5, max_junk_commands=0))
    raw.ehlo()
    _busy_for(raw, 1.0)  # twice the timeout, never idle for long
    assert raw.cmd("NOOP").code == 250
