"""swaks, a real SMTP client, against fastsmtp over loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastsmtp import Collect, Maildir
from fastsmtp.testing import running

# Lines that start with "." are dot-stuffed by swaks and must come back as sent.
BODY = "Subject: interop\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nplain line\r\n"


def _maildir_messages(root: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((root / "new").iterdir())]


def test_pipelined_delivery_into_maildir_is_byte_exact(
    tmp_path: Path, swaks: str, run_tool: Any
) -> None:
    root = tmp_path / "Maildir"
    with running(Maildir(str(root)), hostname="mx.test") as (host, port):
        result = run_tool(
            swaks,
            "--to", "a@b.example",
            "--from", "sender@c.example",
            "--server", f"{host}:{port}",
            "--pipeline",
            "--data", BODY,
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PIPELINING" in result.stdout
    messages = _maildir_messages(root)
    assert len(messages) == 1
    stored = messages[0]
    # Our trace headers first, then exactly what swaks sent (it adds one
    # empty line before the terminator), dot-unstuffed.
    assert stored.startswith(b"Return-Path: <sender@c.example>\r\nReceived: from ")
    assert stored.endswith(BODY.encode() + b"\r\n")
    assert stored.count(b"Subject: interop") == 1
    assert b"by mx.test (fastsmtp) with ESMTP id " in messages[0]


def test_swaks_sees_recipient_refusal_and_quits_cleanly(swaks: str, run_tool: Any) -> None:
    handler = Collect()
    with running(handler, max_recipients=1) as (host, port):
        result = run_tool(
            swaks,
            "--to", "one@b.example,two@b.example",
            "--server", f"{host}:{port}",
            "--pipeline",
        )  # fmt: skip
    # swaks reports the 452 for the second recipient and still delivers to the first.
    assert "452 4.5.3" in result.stdout
    assert len(handler.envelopes) == 1
    assert handler.envelopes[0].rcpt_tos == ["one@b.example"]


def test_swaks_smuggling_attempt_is_refused_and_nothing_delivered(
    swaks: str, run_tool: Any
) -> None:
    handler = Collect()
    # A bare-LF "terminator" followed by a second, smuggled transaction.
    smuggled = (
        "Subject: innocent\r\n\r\nhello\n.\n"
        "MAIL FROM:<admin@victim.example>\r\nRCPT TO:<x@b.example>\r\nDATA\r\n"
        "Subject: smuggled\r\n\r\nevil\r\n"
        ".\r\n"  # with --no-data-fixup swaks sends the terminator only if given
    )
    with running(handler) as (host, port):
        result = run_tool(
            swaks,
            "--to", "a@b.example",
            "--server", f"{host}:{port}",
            "--no-data-fixup",
            "--data", smuggled,
            timeout=30,
        )  # fmt: skip
    assert "554 5.6.0" in result.stdout
    assert handler.envelopes == []


def test_swaks_starttls(server_context: Any, swaks: str, run_tool: Any) -> None:
    handler = Collect()
    with running(handler, tls_context=server_context, require_tls=True) as (host, port):
        result = run_tool(
            swaks,
            "--to", "a@b.example",
            "--server", f"{host}:{port}",
            "--tls",  # STARTTLS, required: swaks gives up if it fails
            "--pipeline",
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "220 2.0.0 Ready to start TLS" in result.stdout
    assert len(handler.envelopes) == 1
