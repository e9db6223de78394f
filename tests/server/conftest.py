"""Fixtures for the asyncio server tests: real loopback sockets, bounded waits.

``serve(handler, **settings)`` starts a server with
``fastsmtp.testing.running`` (stopped when the test ends) and returns its
``(host, port)``. ``client(addr)`` opens a raw socket client that has read
the greeting; ``RawClient`` sends bytes and reads whole replies with a
deadline, for what smtplib cannot express (pipelining, bare CR/LF,
half-close, garbage).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fastsmtp.testing import running
from smtp_replies import WireReply, reply_line

HOSTNAME = "mx.test"
TIMEOUT = 5.0  # seconds for any one socket operation
DEADLINE = 10.0  # seconds for any one multi-read wait

Address = tuple[str, int]


class RawClient:
    """A blocking socket client that speaks bytes and reads replies with a deadline."""

    def __init__(self, addr: Address | str, timeout: float = TIMEOUT) -> None:
        if isinstance(addr, str):  # the path of a Unix socket
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(addr)
        else:
            self.sock = socket.create_connection(addr, timeout=timeout)
        self.sock.settimeout(timeout)
        self._buf = bytearray()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _line(self, deadline: float) -> bytes:
        while True:
            end = self._buf.find(b"\r\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 2]
                return line
            if time.monotonic() > deadline:
                raise TimeoutError(f"no complete reply line; have {bytes(self._buf)!r}")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"server closed the connection; have {bytes(self._buf)!r}")
            self._buf += chunk

    def reply(self, deadline: float | None = None) -> WireReply:
        """Read one (possibly multi-line) reply."""
        deadline = deadline or time.monotonic() + DEADLINE
        lines: list[str] = []
        for _ in range(1000):
            raw = self._line(deadline)
            code, last, text = reply_line(raw)
            lines.append(text)
            if last:
                return WireReply(code, lines)
        raise AssertionError("reply with more than 1000 lines")

    def replies(self, n: int) -> list[WireReply]:
        """Read exactly ``n`` replies within one deadline."""
        deadline = time.monotonic() + DEADLINE
        return [self.reply(deadline) for _ in range(n)]

    def cmd(self, line: str | bytes) -> WireReply:
        """Send one command line and read its reply."""
        raw = line.encode("utf-8") if isinstance(line, str) else line
        self.send(raw + b"\r\n")
        return self.reply()

    def ehlo(self, name: str = "client.example") -> WireReply:
        reply = self.cmd(f"EHLO {name}")
        assert reply.code == 250, reply
        return reply

    def begin(self, sender: str = "<alice@example.com>", *rcpts: str) -> None:
        """EHLO, MAIL and RCPT, each answered with 250."""
        self.ehlo()
        assert self.cmd(f"MAIL FROM:{sender}").code == 250
        for rcpt in rcpts or ("<bob@example.com>",):
            assert self.cmd(f"RCPT TO:{rcpt}").code == 250

    def send_message(self, body: bytes) -> WireReply:
        """DATA, ``body`` (CRLF-terminated, already dot-stuffed), the terminator."""
        assert self.cmd("DATA").code == 354
        self.send(body + b".\r\n")
        return self.reply()

    def assert_quiet(self, seconds: float) -> None:
        """Wait ``seconds`` on the socket and check the server said nothing."""
        readable, _, _ = select.select([self.sock], [], [], seconds)
        assert not readable and not self._buf, "the server sent something unexpected"

    def read_until_eof(self) -> bytes:
        """Everything until the server closes (bounded by the deadline)."""
        deadline = time.monotonic() + DEADLINE
        data = bytes(self._buf)
        self._buf.clear()
        while time.monotonic() < deadline:
            chunk = self.sock.recv(65536)
            if not chunk:
                return data
            data += chunk
        raise TimeoutError(f"server did not close; got {data!r}")

    def expect_closed(self) -> None:
        """The server closed the connection with nothing more to say."""
        assert self.read_until_eof() == b""

    def close(self) -> None:
        self.sock.close()


class Servers:
    """Starts servers with ``fastsmtp.testing.running``; ``stop()`` stops them all."""

    def __init__(self, loop: str) -> None:
        self._stack = contextlib.ExitStack()
        self.loop = loop

    def __call__(self, handler: object, **settings: Any) -> Address:
        settings.setdefault("hostname", HOSTNAME)
        settings.setdefault("loop", self.loop)
        return self._stack.enter_context(running(handler, port=0, **settings))

    def stop(self) -> None:
        """Stop every server started so far (closing listeners and connections)."""
        self._stack.close()


@pytest.fixture(params=["asyncio", "uvloop"])
def serve(request: pytest.FixtureRequest) -> Iterator[Servers]:
    """``serve(handler, **settings)``: a running server's address; stopped at teardown.

    Every server test runs on both event loops: uvloop's transports are not
    asyncio's classes, and the server must not care. ``serve.stop()`` stops
    the servers earlier, e.g. before looking at the logs.
    """
    if request.param == "uvloop":
        pytest.importorskip("uvloop", reason="uvloop is not available on this platform")
    servers = Servers(request.param)
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def client(serve: Servers) -> Iterator[Callable[..., RawClient]]:
    """``client(addr)``: a ``RawClient`` that has read the 220 greeting; closed at teardown."""
    opened: list[RawClient] = []

    def connect(addr: Address | str, greeting: bool = True) -> RawClient:
        raw = RawClient(addr)
        opened.append(raw)
        if greeting:
            reply = raw.reply()
            assert reply.code == 220, reply
        return raw

    yield connect
    for raw in opened:
        raw.close()


@pytest.fixture
def tracebacks(caplog: pytest.LogCaptureFixture) -> Callable[[], list[logging.LogRecord]]:
    """``tracebacks()``: log records at ERROR or above, or carrying a traceback.

    Call it after the server has stopped, so every record has been emitted.
    """
    caplog.set_level(logging.INFO)

    def bad() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]

    return bad
