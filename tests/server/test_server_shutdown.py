"""Graceful shutdown (RFC 5321 §3.8): 421 to idle clients, busy ones finish first.

``fastsmtp.testing.running`` stops the server when its block exits; here
that exit runs in a helper thread so the test can watch clients meanwhile.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from contextlib import AbstractContextManager

import pytest

from fastsmtp import Collect, Server
from fastsmtp.testing import running


class Stopper:
    """Runs a ``running(...)`` context's exit (Server.close) in a thread."""

    def __init__(self, context: AbstractContextManager) -> None:
        self.context = context
        self.thread = threading.Thread(target=self._exit, name="stopper")
        self.error: list[BaseException] = []

    def _exit(self) -> None:
        try:
            self.context.__exit__(None, None, None)
        except BaseException as exc:
            self.error.append(exc)

    def start(self) -> None:
        if self.thread.ident is None:
            self.thread.start()

    def join(self) -> None:
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the server did not stop"
        assert not self.error, self.error


class Slow(Collect):
    """on_message waits for the test's go-ahead (bounded) before storing."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def on_message(self, session, envelope):  # sync: runs in the thread pool
        self.entered.set()
        if not self.release.wait(10):
            raise TimeoutError("the test never released the hook")
        with self._arrived:
            self.envelopes.append(envelope)
            self.sessions.append(session)
            self._arrived.notify_all()


@pytest.fixture
def started():
    """``started(handler, **settings)``: (address, Stopper) for a running server."""
    stoppers: list[Stopper] = []

    def start(handler, **settings):
        context = running(handler, port=0, hostname="mx.test", **settings)
        addr = context.__enter__()
        stopper = Stopper(context)
        stoppers.append(stopper)
        return addr, stopper

    yield start
    for stopper in stoppers:
        stopper.start()  # if the test did not get that far
        stopper.join()


def test_close_sends_421_to_an_idle_client(started, client):
    addr, stopper = started(Collect())
    raw = client(addr)
    raw.ehlo()
    stopper.start()
    reply = raw.reply()
    assert (reply.code, reply.enhanced) == (421, "4.3.2")
    raw.expect_closed()
    stopper.join()


def test_close_mid_transaction_delivers_nothing(started, client):
    handler = Collect()
    addr, stopper = started(handler)
    raw = client(addr)
    raw.begin()
    assert raw.cmd("DATA").code == 354
    raw.send(b"Subject: unfinished\r\n\r\nhalf")
    stopper.start()
    reply = raw.reply()
    assert (reply.code, reply.enhanced) == (421, "4.3.2")
    raw.expect_closed()
    stopper.join()
    assert handler.envelopes == []


def test_busy_connection_finishes_its_message_then_gets_421(started, client):
    handler = Slow()
    addr, stopper = started(handler)
    busy, idle = client(addr), client(addr)
    try:
        idle.ehlo()
        busy.begin()
        assert busy.cmd("DATA").code == 354
        busy.send(b"Subject: important\r\n\r\nkeep me\r\n.\r\n")
        assert handler.entered.wait(5)
        stopper.start()
        # The idle client hears 421 at once: close() is under way...
        reply = idle.reply()
        assert (reply.code, reply.enhanced) == (421, "4.3.2")
        idle.expect_closed()
        # ...and no new connections are accepted...
        with pytest.raises(OSError):
            socket.create_connection(addr, timeout=5).close()
        # ...while the busy one is still waiting for its hook, told nothing yet.
        busy.assert_quiet(0.2)
        handler.release.set()
        stored, bye = busy.replies(2)
        assert (stored.code, stored.enhanced) == (250, "2.0.0")
        assert stored.queue_id
        assert (bye.code, bye.enhanced) == (421, "4.3.2")
        busy.expect_closed()
        stopper.join()
    finally:
        handler.release.set()  # never leave the hook (and the server) hanging
    [envelope] = handler.envelopes
    assert envelope.queue_id == stored.queue_id
    assert envelope.content.endswith(b"\r\nkeep me\r\n")


class Stuck(Collect):
    """An async on_message that never returns, and a server_stopping that hangs too."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.stopping_cancelled = threading.Event()

    async def on_message(self, session, envelope):
        self.entered.set()
        await asyncio.Event().wait()  # never set: only cancellation ends it

    async def server_stopping(self):
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.stopping_cancelled.set()
            raise


def test_close_is_bounded_when_a_hook_never_returns():
    handler = Stuck()

    async def main() -> float:
        server = Server(handler)
        await server.start("127.0.0.1", 0)
        host, port = server.addresses[0]
        _, writer = await asyncio.open_connection(host, port)
        writer.write(
            b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
            b"Subject: stuck\r\n\r\nx\r\n.\r\n"
        )
        await writer.drain()
        for _ in range(50):  # bounded: at most 5 s for the hook to be entered
            if handler.entered.is_set():
                break
            await asyncio.sleep(0.1)
        assert handler.entered.is_set()
        started = time.monotonic()
        await server.close(grace=0.3)
        took = time.monotonic() - started
        writer.close()
        return took

    took = asyncio.run(main())
    # Three bounded waits (connections, hook tasks, server_stopping), not forever.
    assert took < 5
    assert handler.stopping_cancelled.is_set()
