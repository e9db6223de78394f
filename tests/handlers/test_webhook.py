"""Webhook: a real SMTP session in front, a local http.server (plain and TLS) behind."""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from fastsmtp.config import ConfigError
from fastsmtp.handlers.webhook import Webhook
from fastsmtp.testing import running

MESSAGE = b"Subject: hooked\r\n\r\nbody\r\n"


class Hook:
    """An HTTP server in a thread that answers ``status`` and records each POST."""

    def __init__(self, status: int = 200, *, stall: threading.Event | None = None) -> None:
        self.status = status
        self.requests: list[tuple[dict[str, str], bytes, int]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if stall is not None:
                    stall.wait(30)  # the client times out first
                    return
                length = int(self.headers["Content-Length"])
                body = self.rfile.read(length)
                headers = {k: v for k, v in self.headers.items()}
                hook.requests.append((headers, body, length))
                self.send_response(hook.status)
                if 300 <= hook.status < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mail"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Hook:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def send(webhook: Webhook, rcpts: list[str], message: bytes = MESSAGE, **settings: Any) -> None:
    with running(webhook, **settings) as (host, port), smtplib.SMTP(host, port, timeout=30) as smtp:
        smtp.sendmail("sender@example.org", rcpts, message)


def test_2xx_delivers_the_message_and_envelope() -> None:
    with Hook(202) as hook:
        send(
            Webhook(hook.url, headers={"Authorization": "Bearer t"}),
            ["a@example.com", "b@example.com"],
        )
    [(headers, body, _)] = hook.requests
    assert headers["Content-Type"] == "message/rfc822"
    assert headers["X-Mail-From"] == "sender@example.org"
    assert headers["X-Rcpt-To"] == "<a@example.com>, <b@example.com>"
    assert headers["Authorization"] == "Bearer t"
    assert body.startswith(b"Received: ") and body.endswith(b"\r\n" + MESSAGE)
    assert headers["X-Queue-Id"].encode() in body  # the Received: header names it


def test_a_big_spooled_message_is_streamed_whole() -> None:
    big = b"Subject: big\r\n\r\n" + (b"z" * 78 + b"\r\n") * 40_000  # ~3 MiB
    with Hook() as hook:
        send(Webhook(hook.url), ["a@example.com"], big, spool_threshold=64 * 1024)
    [(_, body, length)] = hook.requests
    assert length == len(body) and body.endswith(b"\r\n" + big)


def refused(webhook: Webhook) -> smtplib.SMTPDataError:
    with pytest.raises(smtplib.SMTPDataError) as error:
        send(webhook, ["a@example.com"])
    return error.value


@pytest.mark.parametrize("status", [500, 404, 302])
def test_other_statuses_are_temporary_failures(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fastsmtp.handlers.webhook")
    with Hook(status) as hook:
        error = refused(Webhook(hook.url))
    assert (error.smtp_code, error.smtp_error[:6]) == (451, b"4.3.0 ")
    assert len(hook.requests) == 1  # a redirect is not followed
    assert any(f"answered {status}" in r.getMessage() for r in caplog.records)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_refused_is_temporary(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="fastsmtp.handlers.webhook")
    error = refused(Webhook(f"http://127.0.0.1:{_closed_port()}/"))
    assert error.smtp_code == 451
    assert any("refused" in r.getMessage() for r in caplog.records)


def test_no_answer_within_the_timeout_is_temporary() -> None:
    stall = threading.Event()
    with Hook(stall=stall) as hook:
        try:
            error = refused(Webhook(hook.url, timeout=1))
        finally:
            stall.set()
    assert error.smtp_code == 451


def test_https_verifies_the_certificate(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    hook = Hook()
    hook.server.socket = server_context.wrap_socket(hook.server.socket, server_side=True)
    url = hook.url.replace("http://", "https://")
    with hook:
        # The system CAs do not know the test CA: refused, temporarily.
        assert refused(Webhook(url)).smtp_code == 451
        assert hook.requests == []
        send(Webhook(url, tls_context=client_context), ["a@example.com"])
    assert len(hook.requests) == 1


def test_url_must_be_http() -> None:
    with pytest.raises(ConfigError, match="http:// or https://"):
        Webhook("ftp://example.com/")


def test_utf8_addresses_go_as_utf8_octets() -> None:
    with (
        Hook() as hook,
        running(Webhook(hook.url)) as (host, port),
        smtplib.SMTP(host, port, timeout=30) as smtp,
    ):
        smtp.sendmail("jösé@example.org", ["zoë@example.com"], MESSAGE, ["SMTPUTF8"])
    [(headers, _, _)] = hook.requests
    # http.server decodes header octets as Latin-1: undo that to see the UTF-8.
    assert headers["X-Mail-From"].encode("latin-1").decode() == "jösé@example.org"
    assert headers["X-Rcpt-To"].encode("latin-1").decode() == "<zoë@example.com>"
