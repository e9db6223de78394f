"""Whole SMTP sessions over loopback sockets: what smtplib and a raw client see.

RFC 5321 (the dialogue), RFC 1870/6152/6531/2920/2034 (the advertised
extensions), RFC 5321 §4.4 (the Received: trace header).
"""

from __future__ import annotations

import smtplib

import pytest

from fastsmtp import Collect

MESSAGE = b"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: hi\r\n\r\nHello Bob.\r\n"


def split_received(content: bytes) -> tuple[bytes, bytes]:
    """``(the first header field with its folded lines, the rest)``."""
    lines = content.split(b"\r\n")
    assert lines[0].startswith(b"Received: "), content[:200]
    n = 1
    while lines[n][:1] in (b" ", b"\t"):
        n += 1
    return b"\r\n".join(lines[:n]), b"\r\n".join(lines[n:])


def test_smtplib_sendmail_delivers_with_session_and_envelope(serve):
    handler = Collect()
    host, port = serve(handler)
    with smtplib.SMTP(host, port, local_hostname="client.example", timeout=5) as smtp:
        code, _ = smtp.ehlo()
        assert code == 250
        refused = smtp.sendmail(
            "alice@example.com", ["bob@example.com", "carol@example.org"], MESSAGE
        )
        client_address = smtp.sock.getsockname()[:2]
    assert refused == {}
    [envelope] = handler.wait_for(1)
    [session] = handler.sessions
    assert session.peer == client_address
    assert session.host_name == "client.example"
    assert session.extended is True
    assert envelope.mail_from == "alice@example.com"
    assert envelope.rcpt_tos == ["bob@example.com", "carol@example.org"]
    assert envelope.rcpt_options == [{}, {}]
    # smtplib declares the size because the server advertises SIZE.
    assert envelope.mail_options == {"SIZE": str(len(MESSAGE))}
    assert envelope.body_type is None
    assert envelope.smtputf8 is False
    header, rest = split_received(envelope.content)
    assert rest == MESSAGE
    assert b"from client.example" in header and b"by mx.test" in header
    assert b"with ESMTP" in header


def test_ehlo_advertises_the_default_extensions(serve):
    host, port = serve(Collect(), max_message_size=4096)
    with smtplib.SMTP(host, port, timeout=5) as smtp:
        code, text = smtp.ehlo("client.example")
    assert code == 250
    assert text.decode().split("\n") == [
        "mx.test",
        "PIPELINING",
        "SIZE 4096",
        "8BITMIME",
        "SMTPUTF8",
        "CHUNKING",
        "BINARYMIME",
        "ENHANCEDSTATUSCODES",
    ]


def test_ehlo_does_not_advertise_disabled_extensions(serve):
    host, port = serve(
        Collect(), pipelining=False, eightbitmime=False, smtputf8=False, chunking=False
    )
    with smtplib.SMTP(host, port, timeout=5) as smtp:
        smtp.ehlo("client.example")
        features = dict(smtp.esmtp_features)
    assert features == {"size": "33554432", "enhancedstatuscodes": ""}


def test_queue_id_in_reply_envelope_and_received_header(serve, client):
    handler = Collect()
    addr = serve(handler)
    raw = client(addr)
    raw.begin("<alice@example.com>", "<bob@example.com>")
    reply = raw.send_message(MESSAGE)
    assert (reply.code, reply.enhanced) == (250, "2.0.0")
    queue_id = reply.queue_id
    assert queue_id
    [envelope] = handler.wait_for(1)
    assert envelope.queue_id == queue_id
    header, rest = split_received(envelope.content)
    assert f"id {queue_id}".encode() in header
    assert b"for <bob@example.com>" in header
    assert rest == MESSAGE


def test_every_message_gets_its_own_queue_id(serve, client):
    handler = Collect()
    raw = client(serve(handler))
    raw.begin()
    first = raw.send_message(b"one\r\n").queue_id
    raw.cmd("MAIL FROM:<a@example.com>")
    raw.cmd("RCPT TO:<b@example.com>")
    second = raw.send_message(b"two\r\n").queue_id
    assert first and second and first != second
    assert [e.queue_id for e in handler.wait_for(2)] == [first, second]


def test_null_sender_8bitmime_and_smtputf8_reach_the_envelope(serve):
    handler = Collect()
    host, port = serve(handler)
    with smtplib.SMTP(host, port, timeout=5) as smtp:
        smtp.sendmail("", ["bob@example.com"], b"bounce\r\n", mail_options=["BODY=8BITMIME"])
        smtp.sendmail("jörg@exämple.de", ["用户@例子.广告"], b"utf8\r\n", mail_options=["SMTPUTF8"])
    bounce, utf8 = handler.wait_for(2)
    assert bounce.mail_from == ""
    assert bounce.body_type == "8BITMIME"
    assert bounce.smtputf8 is False
    assert utf8.mail_from == "jörg@exämple.de"
    assert utf8.rcpt_tos == ["用户@例子.广告"]
    assert utf8.smtputf8 is True
    assert "SMTPUTF8" in utf8.mail_options


def test_helo_session_is_not_extended(serve):
    handler = Collect()
    host, port = serve(handler)
    with smtplib.SMTP(host, port, timeout=5) as smtp:
        code, text = smtp.helo("old.example")
        assert (code, text) == (250, b"mx.test")
        smtp.sendmail("a@example.com", ["b@example.com"], b"plain\r\n")
    [envelope] = handler.wait_for(1)
    [session] = handler.sessions
    assert session.extended is False
    assert session.host_name == "old.example"
    assert envelope.mail_options == {}
    assert b"with SMTP " in split_received(envelope.content)[0]


def test_smtplib_sees_refused_recipients(serve):
    handler = Collect()
    host, port = serve(handler, max_recipients=2)
    with smtplib.SMTP(host, port, timeout=5) as smtp:
        refused = smtp.sendmail(
            "a@example.com", ["r1@example.com", "r2@example.com", "r3@example.com"], b"x\r\n"
        )
    assert refused == {"r3@example.com": (452, b"4.5.3 Error: too many recipients")}
    assert handler.wait_for(1)[0].rcpt_tos == ["r1@example.com", "r2@example.com"]


@pytest.mark.parametrize(
    ("line", "code", "enhanced"),
    [
        ("NOOP", 250, "2.0.0"),
        ("NOOP ignored argument", 250, "2.0.0"),
        ("HELP", 214, "2.0.0"),
        ("VRFY alice", 252, "2.5.2"),
        ("VRFY", 501, "5.5.4"),
        ("EXPN staff", 502, "5.5.1"),
        ("TURN", 502, "5.5.1"),
        ("RSET", 250, "2.0.0"),
        ("WHAT", 500, "5.5.2"),
        ("MAIL FROM:<a@example.com>", 503, "5.5.1"),
        ("RCPT TO:<a@example.com>", 503, "5.5.1"),
        ("DATA", 503, "5.5.1"),
        ("EHLO", 501, "5.5.4"),
    ],
)
def test_single_commands_before_ehlo(serve, client, line, code, enhanced):
    raw = client(serve(Collect()))
    reply = raw.cmd(line)
    assert (reply.code, reply.enhanced) == (code, enhanced)
    # The session still works afterwards.
    assert raw.cmd("NOOP").code == 250


def test_smtplib_verify_and_expn(serve):
    host, port = serve(Collect())
    with smtplib.SMTP(host, port, timeout=5) as smtp:
        code, text = smtp.verify("alice")
        assert code == 252 and text.startswith(b"2.5.2 ")
        code, text = smtp.expn("staff")
        assert code == 502 and text.startswith(b"5.5.1 ")


def test_bad_sequences_get_503(serve, client):
    raw = client(serve(Collect()))
    assert raw.cmd("MAIL FROM:<a@example.com>").code == 503  # before HELO
    raw.ehlo()
    assert raw.cmd("RCPT TO:<b@example.com>").code == 503  # before MAIL
    assert raw.cmd("DATA").code == 503  # before MAIL
    assert raw.cmd("MAIL FROM:<a@example.com>").code == 250
    nested = raw.cmd("MAIL FROM:<c@example.com>")
    assert (nested.code, nested.enhanced) == (503, "5.5.1")
    no_rcpt = raw.cmd("DATA")
    assert (no_rcpt.code, no_rcpt.enhanced) == (503, "5.5.1")
    assert raw.cmd("RCPT TO:<b@example.com>").code == 250
    assert raw.cmd("DATA").code == 354


def test_quit_says_221_and_closes(serve, client):
    raw = client(serve(Collect()))
    raw.ehlo()
    reply = raw.cmd("QUIT")
    assert (reply.code, reply.enhanced) == (221, "2.0.0")
    raw.expect_closed()


def test_every_reply_after_ehlo_has_an_enhanced_code(serve, client):
    # RFC 2034 §3: every 2xx/4xx/5xx reply other than the greeting and the
    # HELO/EHLO answer carries an enhanced status code, on every line.
    handler = Collect()
    raw = client(serve(handler, max_recipients=1, max_message_size=2000, max_errors=100))
    raw.ehlo()
    session = [
        b"NOOP",
        b"HELP",
        b"VRFY alice",
        b"EXPN list",
        b"TURN",
        b"BOGUS",
        b"RCPT TO:<b@example.com>",
        b"DATA",
        b"MAIL FROM:<a@example.com> SIZE=999999",
        b"MAIL FROM:<a@example.com> BODY=foo",
        b"MAIL FROM:<a@example.com> FOO=bar",
        "MAIL FROM:<jörg@example.de>".encode(),
        b"MAIL FROM:a@example.com",
        b"MAIL FROM:<a@example.com>",
        b"MAIL FROM:<a@example.com>",
        b"DATA",
        b"RCPT TO:<bad",
        b"RCPT TO:<b@example.com> NOTIFY=NEVER",
        b"RCPT TO:<b@example.com>",
        b"RCPT TO:<c@example.com>",
        b"RSET",
        b"NOOP " + b"x" * 600,
        b"VRFY",
        b"QUIT extra",
    ]
    replies = [raw.cmd(line) for line in session]
    raw.send(b"NOOP\n")  # a bare LF ends this line: 500 5.5.2
    replies.append(raw.reply())
    raw.cmd("MAIL FROM:<a@example.com>")
    raw.cmd("RCPT TO:<b@example.com>")
    replies.append(raw.send_message(b"bare\nLF\r\n"))  # 554 5.6.0
    raw.cmd("MAIL FROM:<a@example.com>")
    raw.cmd("RCPT TO:<b@example.com>")
    replies.append(raw.send_message(b"x" * 900 + b"\r\n" + b"y" * 900 + b"\r\n" * 300))  # 552
    raw.cmd("MAIL FROM:<a@example.com>")
    raw.cmd("RCPT TO:<b@example.com>")
    replies.append(raw.send_message(MESSAGE))  # 250 queued
    replies.append(raw.cmd("QUIT"))
    seen = set()
    for reply in replies:
        seen.add(reply.code)
        assert reply.code // 100 in (2, 4, 5), reply
        for line in reply.lines:
            code = line.split(" ", 1)[0]
            parts = code.split(".")
            assert len(parts) == 3 and all(p.isdigit() for p in parts), reply
            assert parts[0] == str(reply.code)[0], reply
    # The session really was varied: these codes all came back.
    assert {214, 221, 250, 252, 452, 500, 501, 502, 503, 552, 553, 554, 555} <= seen
    assert len(handler.wait_for(1)) == 1


@pytest.mark.parametrize(
    ("hello", "line", "code", "enhanced"),
    [
        ("EHLO", "MAIL FROM:<a@example.com> BODY=7BIT", 250, "2.1.0"),
        ("EHLO", "MAIL FROM:<a@example.com> BODY=8BITMIME", 250, "2.1.0"),
        ("EHLO", "MAIL FROM:<a@example.com> BODY=foo", 501, "5.5.4"),
        ("EHLO", "MAIL FROM:<a@example.com> SIZE=2048", 552, "5.3.4"),
        ("EHLO", "MAIL FROM:<a@example.com> SIZE=1024", 250, "2.1.0"),
        ("EHLO", "MAIL FROM:<a@example.com> FOO=bar", 555, "5.5.4"),
        ("EHLO", "MAIL FROM:<jörg@example.de>", 553, "5.6.7"),
        ("EHLO", "MAIL FROM:<jörg@example.de> SMTPUTF8", 250, "2.1.0"),
        ("HELO", "MAIL FROM:<a@example.com> BODY=8BITMIME", 555, "5.5.4"),
        ("HELO", "MAIL FROM:<a@example.com> SIZE=10", 555, "5.5.4"),
        ("HELO", "MAIL FROM:<a@example.com>", 250, "2.1.0"),
    ],
)
def test_mail_parameters_over_the_wire(serve, client, hello, line, code, enhanced):
    raw = client(serve(Collect(), max_message_size=1024))
    assert raw.cmd(f"{hello} client.example").code == 250
    reply = raw.cmd(line)
    assert (reply.code, reply.enhanced) == (code, enhanced)
    # Exactly one reply, and a transaction exists only after a 250.
    after = raw.cmd("RCPT TO:<b@example.com>")
    assert after.code == (250 if code == 250 else 503), after
