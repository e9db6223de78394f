"""Printer over real SMTP sessions: what lands on the stream."""

from __future__ import annotations

import io
import re
import smtplib
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from fastsmtp.handlers import Printer
from fastsmtp.testing import running

SendMail = Callable[..., str]

MESSAGE = b"Subject: hello\r\n\r\n.starts with a dot\r\nFrom the start\r\nlast line\r\n"

RECEIVED = re.compile(r"Received: from .*\n(?:\t.*\n)+")


def printed(text: str) -> list[tuple[str, str]]:
    """Split the output into ``(header line, message)`` pairs."""
    parts = re.split(r"^(---------- .*)\n", text, flags=re.MULTILINE)
    assert parts[0] == ""
    return list(zip(parts[1::2], parts[2::2], strict=True))


def test_prints_header_line_and_message(send: SendMail) -> None:
    stream = io.StringIO()
    with running(Printer(stream), port=0) as addr, smtplib.SMTP(*addr, timeout=30) as client:
        queue_id = send(client, "a@example.org", ["b@example.com", "c@example.com"], MESSAGE)
    ((header, message),) = printed(stream.getvalue())
    assert (
        header == f"---------- {queue_id} from <a@example.org> to <b@example.com>, <c@example.com>"
    )
    received = RECEIVED.match(message)
    assert received, message
    assert f" id {queue_id}" in received[0]
    # Dot-unstuffed, CRLF turned into LF, nothing else changed.
    assert message[received.end() :] == MESSAGE.decode().replace("\r\n", "\n")


def test_utf8_and_undecodable_bytes(send: SendMail) -> None:
    stream = io.StringIO()
    message = "Subject: grüße\r\n\r\n日本語\r\n".encode() + b"latin-1 \xe9\r\n"
    with running(Printer(stream), port=0) as addr, smtplib.SMTP(*addr, timeout=30) as client:
        send(client, "jörg@exämple.org", ["b@example.com"], message, ["BODY=8BITMIME", "SMTPUTF8"])
        send(client, "", ["b@example.com"], message, ["BODY=8BITMIME"])
    (header1, text1), (header2, text2) = printed(stream.getvalue())
    assert header1.endswith(" from <jörg@exämple.org> to <b@example.com>")
    assert header2.endswith(" from <> to <b@example.com>")
    for text in (text1, text2):
        assert text.endswith("Subject: grüße\n\n日本語\nlatin-1 \ufffd\n")


def test_defaults_to_stdout_at_delivery_time(
    send: SendMail, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = Printer()
    stdout = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stdout)  # replaced after construction: still followed
    with running(handler, port=0) as addr, smtplib.SMTP(*addr, timeout=30) as client:
        queue_id = send(client, "a@example.org", ["b@example.com"], MESSAGE)
    out = stdout.getvalue()
    assert out.startswith(f"---------- {queue_id} from <a@example.org> to <b@example.com>\n")
    assert out.endswith("\nlast line\n")


def test_stream_that_cannot_encode(send: SendMail) -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii", write_through=True)
    with running(Printer(stream), port=0) as addr, smtplib.SMTP(*addr, timeout=30) as client:
        send(client, "a@example.org", ["b@example.com"], "Subject: é\r\n\r\n€\r\n".encode())
    assert raw.getvalue().endswith(b"Subject: \\xe9\n\n\\u20ac\n")


def test_concurrent_messages_are_not_interleaved(send: SendMail) -> None:
    stream = io.StringIO()
    clients, per_client = 4, 5

    def one_client(n: int) -> None:
        with smtplib.SMTP(*addr, timeout=30) as client:
            for i in range(per_client):
                body = b"Subject: %d/%d\r\n\r\n" % (n, i) + (b"%d" % n * 70 + b"\r\n") * 50
                send(client, f"c{n}@example.org", ["b@example.com"], body)

    with running(Printer(stream), port=0) as addr, ThreadPoolExecutor(clients) as pool:
        list(pool.map(one_client, range(clients)))
    blocks = printed(stream.getvalue())
    assert len(blocks) == clients * per_client
    for header, message in blocks:
        n = re.search(r" from <c(\d)@", header)
        assert n, header
        body = message.split("\n\n", 1)[1]
        assert body == (n[1] * 70 + "\n") * 50
