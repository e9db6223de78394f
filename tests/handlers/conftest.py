"""Helpers for the handler tests: send real mail with smtplib, take stored mail apart.

``send(client, sender, rcpts, message, options)`` runs one transaction on an
open ``smtplib.SMTP`` and returns the queue id from the 250 reply; a refusal
raises ``smtplib.SMTPDataError`` (or the RCPT/MAIL one) with the code.
``split_trace(data, eol)`` checks that a stored message starts with our
``Return-Path:`` line and fastsmtp's ``Received:`` header, and returns
``(sender, received, rest)``: ``rest`` is what the client sent.
"""

from __future__ import annotations

import re
import smtplib
from collections.abc import Callable, Sequence

import pytest

SendMail = Callable[..., str]
SplitTrace = Callable[..., tuple[str, bytes, bytes]]


def _send(
    client: smtplib.SMTP,
    sender: str,
    rcpts: Sequence[str],
    message: bytes,
    options: Sequence[str] = (),
) -> str:
    client.ehlo_or_helo_if_needed()
    code, reply = client.mail(sender, list(options))
    if code != 250:
        raise smtplib.SMTPSenderRefused(code, reply, sender)
    for rcpt in rcpts:
        code, reply = client.rcpt(rcpt)
        if code != 250:
            raise smtplib.SMTPRecipientsRefused({rcpt: (code, reply)})
    code, reply = client.data(message)  # dot-stuffs, as every client must
    if code != 250:
        client.rset()
        raise smtplib.SMTPDataError(code, reply)
    match = re.fullmatch(rb"2\.0\.0 OK: queued as (\w+)", reply)
    assert match, reply
    return match[1].decode()


def _split_trace(data: bytes, eol: bytes = b"\r\n") -> tuple[str, bytes, bytes]:
    e = re.escape(eol)
    pattern = rb"Return-Path: <([^>\r\n]*)>" + e + rb"(Received: .*?" + e + rb"(?:[ \t].*?" + e
    match = re.match(pattern + rb")*)", data)
    assert match, data[:300]
    # The Received: header is folded; its continuation lines are indented.
    received = match[2]
    assert all(line[:1] in (b" ", b"\t") for line in received.split(eol)[1:-1]), received
    return match[1].decode(), received, data[match.end() :]


@pytest.fixture
def send() -> SendMail:
    """``send(client, sender, rcpts, message, options=())`` -> queue id."""
    return _send


@pytest.fixture
def split_trace() -> SplitTrace:
    """``split_trace(data, eol=b"\\r\\n")`` -> ``(sender, received, rest)``."""
    return _split_trace
