"""LMTP mode (RFC 2033) over real sockets: TCP and a Unix socket.

smtplib.LMTP reads a single reply after DATA, so the per-recipient replies
are checked with the raw client.
"""

from __future__ import annotations

import logging
import os
import smtplib
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from fastsmtp import Collect, Handler, Reply

REFUSED = Reply(550, "5.1.1", "No such mailbox")
FULL = Reply(452, "4.2.2", "Mailbox full")
MESSAGE = b"Subject: lmtp\r\n\r\nhello\r\n"


class PerRecipient(Handler):
    """Accepts for the first recipient, refuses the second, defers the third."""

    def __init__(self, result: Any = (None, REFUSED, FULL)) -> None:
        self.result = result
        self.envelopes: list[Any] = []

    async def on_message(self, session: Any, envelope: Any) -> Any:
        self.envelopes.append(envelope)
        return self.result


@pytest.fixture
def sock_path() -> Iterator[str]:
    """A path for a Unix socket, short enough for sun_path (108 octets)."""
    with tempfile.TemporaryDirectory(prefix="fsmtp") as directory:
        yield os.path.join(directory, "lmtp.sock")


def lhlo(raw: Any) -> Any:
    reply = raw.cmd("LHLO client.example")
    assert reply.code == 250, reply
    return reply


def transaction(raw: Any, *rcpts: str) -> None:
    lhlo(raw)
    assert raw.cmd("MAIL FROM:<alice@example.com>").code == 250
    for rcpt in rcpts:
        assert raw.cmd(f"RCPT TO:<{rcpt}>").code == 250


RCPTS = ("one@example.com", "two@example.com", "three@example.com")


def test_smtplib_lmtp_delivers_over_tcp_with_lmtp_trace(serve):
    handler = Collect()
    host, port = serve(handler, lmtp=True)
    with smtplib.LMTP(host, port, timeout=10) as client:
        code, banner = client.ehlo("client.example")  # smtplib.LMTP sends LHLO
        assert code == 250
        assert b"PIPELINING" in banner and b"ENHANCEDSTATUSCODES" in banner
        # One recipient: smtplib reads one reply after DATA, LMTP sends one per recipient.
        assert client.sendmail("a@example.com", ["b@example.com"], MESSAGE) == {}
    [envelope] = handler.wait_for(1)
    assert envelope.rcpt_tos == ["b@example.com"]
    assert b"by mx.test (fastsmtp) with LMTP id " in envelope.content
    assert envelope.content.endswith(MESSAGE)
    assert handler.sessions[0].extended  # LHLO is EHLO by another name


def test_greeting_says_lmtp_and_helo_ehlo_are_refused(serve, client):
    raw = client(serve(Collect(), lmtp=True), greeting=False)
    assert "LMTP" in raw.reply().text
    for verb in ("HELO", "EHLO"):
        reply = raw.cmd(f"{verb} client.example")
        assert (reply.code, reply.enhanced) == (500, "5.5.1")
    reply = raw.cmd("MAIL FROM:<a@example.com>")
    assert (reply.code, reply.text) == (503, "Error: send LHLO first")
    lhlo(raw)


def test_lhlo_is_unknown_to_an_smtp_server(serve, client):
    raw = client(serve(Collect()))
    reply = raw.cmd("LHLO client.example")
    assert (reply.code, reply.enhanced) == (500, "5.5.2")


def test_one_reply_per_recipient_in_rcpt_order(serve, client):
    handler = PerRecipient()
    raw = client(serve(handler, lmtp=True))
    transaction(raw, *RCPTS)
    assert raw.cmd("DATA").code == 354
    raw.send(MESSAGE + b".\r\n")
    replies = raw.replies(3)
    assert [(r.code, r.enhanced) for r in replies] == [
        (250, "2.0.0"),
        (550, "5.1.1"),
        (452, "4.2.2"),
    ]
    assert replies[0].queue_id == handler.envelopes[0].queue_id
    raw.assert_quiet(0.2)  # exactly three replies
    assert raw.cmd("NOOP").code == 250
    assert handler.envelopes[0].rcpt_tos == list(RCPTS)


def test_a_single_reply_answers_for_every_recipient(serve, client):
    raw = client(serve(PerRecipient(FULL), lmtp=True))
    transaction(raw, *RCPTS[:2])
    assert raw.cmd("DATA").code == 354
    raw.send(MESSAGE + b".\r\n")
    assert [(r.code, r.text) for r in raw.replies(2)] == [(452, "Mailbox full")] * 2


def test_recipients_refused_at_rcpt_get_no_reply_after_data(serve, client):
    class RefuseTwo(PerRecipient):
        async def on_rcpt(self, session: Any, envelope: Any, rcpt: Any) -> Reply | None:
            return REFUSED if rcpt.address == "two@example.com" else None

    handler = RefuseTwo((None, FULL))
    raw = client(serve(handler, lmtp=True))
    lhlo(raw)
    raw.send(b"MAIL FROM:<a@example.com>\r\n")
    raw.send(b"".join(b"RCPT TO:<%s>\r\n" % r.encode() for r in RCPTS))
    raw.send(b"DATA\r\n")
    assert [r.code for r in raw.replies(5)] == [250, 250, 550, 250, 354]
    raw.send(MESSAGE + b".\r\n")
    assert [r.code for r in raw.replies(2)] == [250, 452]
    raw.assert_quiet(0.2)
    assert handler.envelopes[0].rcpt_tos == ["one@example.com", "three@example.com"]


def test_bdat_last_gets_one_reply_per_recipient(serve, client):
    handler = PerRecipient()
    raw = client(serve(handler, lmtp=True))
    transaction(raw, *RCPTS)
    raw.send(b"BDAT 6\r\nhello BDAT 7 LAST\r\nworld\r\n")
    replies = raw.replies(4)
    assert replies[0].text == "6 octets received"
    assert [r.code for r in replies[1:]] == [250, 550, 452]
    assert handler.envelopes[0].content.endswith(b"\r\nhello world\r\n")


@pytest.mark.parametrize(
    "result",
    [(None, None), [None, REFUSED, FULL, None], "250 OK", (None, "250", None)],
    ids=["short", "long", "string", "not-a-reply"],
)
def test_a_malformed_result_is_451_for_every_recipient(serve, client, tracebacks, result):
    raw = client(serve(PerRecipient(result), lmtp=True))
    transaction(raw, *RCPTS)
    assert raw.cmd("DATA").code == 354
    raw.send(MESSAGE + b".\r\n")
    assert [(r.code, r.enhanced) for r in raw.replies(3)] == [(451, "4.3.0")] * 3
    serve.stop()
    [record] = tracebacks()
    assert "on_message returned" in record.getMessage()


def test_a_failing_hook_is_451_for_every_recipient(serve, client):
    class Broken(Handler):
        async def on_message(self, session: Any, envelope: Any) -> None:
            raise RuntimeError("disk on fire")

    raw = client(serve(Broken(), lmtp=True))
    transaction(raw, *RCPTS[:2])
    assert raw.cmd("DATA").code == 354
    raw.send(MESSAGE + b".\r\n")
    assert [r.code for r in raw.replies(2)] == [451, 451]


def test_smtp_takes_a_sequence_whose_entries_agree(serve, client):
    raw = client(serve(PerRecipient((None, None))))
    raw.begin("<a@example.com>", "<b@example.com>", "<c@example.com>")
    reply = raw.send_message(MESSAGE)
    assert reply.code == 250 and reply.queue_id


def test_smtp_refuses_mixed_per_recipient_results_with_451(serve, client, caplog):
    caplog.set_level(logging.INFO)
    raw = client(serve(PerRecipient((None, REFUSED))))
    raw.begin("<a@example.com>", "<b@example.com>", "<c@example.com>")
    reply = raw.send_message(MESSAGE)
    assert (reply.code, reply.enhanced) == (451, "4.3.0")
    serve.stop()
    assert any("SMTP cannot send" in r.getMessage() for r in caplog.records)


def test_unix_socket_with_smtplib_and_raw_per_recipient_replies(sock_path, serve, client):
    class Positional(PerRecipient):
        async def on_message(self, session: Any, envelope: Any) -> Any:
            await super().on_message(session, envelope)
            return self.result[: len(envelope.rcpt_tos)]

    handler = Positional()
    serve(handler, lmtp=True, listen=[f"unix:{sock_path}"])
    with smtplib.LMTP(sock_path, timeout=10) as lmtp:
        lmtp.ehlo("client.example")  # sends LHLO
        # smtplib reads only the first reply after DATA: the first recipient's.
        assert lmtp.sendmail("a@example.com", ["one@example.com"], MESSAGE) == {}
    raw = client(sock_path)
    transaction(raw, *RCPTS)
    assert raw.cmd("DATA").code == 354
    raw.send(MESSAGE + b".\r\n")
    assert [r.code for r in raw.replies(3)] == [250, 550, 452]
    raw.close()
    first, _ = handler.envelopes
    assert first.rcpt_tos == ["one@example.com"]
    assert b"from client.example ([unix])" in first.content


def test_unix_socket_peer_is_the_socket_path_and_the_file_goes_at_close(sock_path, serve, client):
    handler = Collect()
    serve(handler, listen=[f"unix:{sock_path}"])
    raw = client(sock_path)
    raw.begin()
    assert raw.send_message(MESSAGE).code == 250
    handler.wait_for(1)
    assert handler.sessions[0].peer == sock_path
    assert os.path.exists(sock_path)
    serve.stop()
    assert not os.path.exists(sock_path)


def test_lmtp_with_starttls_says_lmtps(serve, server_context, client_context):
    handler = Collect()
    host, port = serve(handler, lmtp=True, tls_context=server_context)
    with smtplib.LMTP(host, port, timeout=10) as client:
        client.ehlo("client.example")  # LHLO
        assert client.has_extn("starttls")
        client.starttls(context=client_context)  # then LHLO again
        assert client.sendmail("a@example.com", ["b@example.com"], MESSAGE) == {}
    [envelope] = handler.wait_for(1)
    assert b"(fastsmtp) with LMTPS id " in envelope.content
