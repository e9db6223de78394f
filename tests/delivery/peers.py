"""Test peers for delivery: destination MX servers on a common port, and a settable clock."""

from __future__ import annotations

import socket
from contextlib import ExitStack
from email.message import EmailMessage
from typing import Any

from fastsmtp.delivery.queue import Queue
from fastsmtp.testing import SMTPTestServer, running

__all__ = ["Clock", "MXServer", "MXServers", "defer", "delivery_status", "free_port"]


class Clock:
    """A ``now()`` that moves only when the test says so (epoch seconds)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.value = start

    def __call__(self) -> float:
        return self.value

    def advance(self, seconds: float) -> None:
        self.value += seconds


def free_port(hosts: tuple[str, ...]) -> int:
    """A TCP port free on every one of ``hosts`` (loopback addresses)."""
    for _ in range(50):
        with ExitStack() as stack:
            first = stack.enter_context(socket.socket())
            first.bind((hosts[0], 0))
            port: int = first.getsockname()[1]
            try:
                for host in hosts[1:]:
                    stack.enter_context(socket.socket()).bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no common free port on {hosts}")


class MXServer(SMTPTestServer):
    """An ``SMTPTestServer`` on a chosen ``host:port`` (a destination MX)."""

    def __init__(self, host: str, port: int, **settings: Any) -> None:
        super().__init__(host, **settings)
        self._port = port

    def start(self) -> None:
        self._settings.setdefault("hostname", f"mx-{self._host}.test")
        self._address = self._stack.enter_context(
            running(self._handler, self._host, self._port, **self._settings)
        )


class MXServers(dict[str, MXServer]):
    """Running ``MXServer``s by address, all on ``port``."""

    port: int


def delivery_status(report: EmailMessage) -> list[dict[str, str]]:
    """The per-message and per-recipient field blocks of an RFC 3464 report."""
    assert report.get_content_type() == "multipart/report"
    [status] = [p for p in report.walk() if p.get_content_type() == "message/delivery-status"]
    blocks = [dict(block.items()) for block in status.get_payload()]
    return blocks


def defer(queue: Queue, queue_id: str, recipient: str, now: float, delay: float = 3600) -> None:
    """Record ``recipient`` as deferred (a failed try) and due again ``delay`` seconds on."""
    queue.record(
        queue_id,
        recipient,
        "deferred",
        code=450,
        enhanced="4.4.0",
        text="tried, deferred",
        remote_host=None,
        next_attempt=now + delay,
        now=now,
    )
