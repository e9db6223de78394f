"""The timeout sweep (``fastsmtp._timeouts``): one timer for a server's connections.

The timeouts themselves (421 after ``command_timeout``, ``data_timeout``,
``min_data_rate``) are tested over sockets in test_server_limits.py and
test_server_abuse.py; here, what the sweep adds: the handler's time is not
the client's, the timer runs only while there are connections, and one
connection's failure does not stop the others' timeouts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import SimpleNamespace

import pytest

from fastsmtp import Collect, Server
from fastsmtp._timeouts import TimeoutSweep
from fastsmtp.config import Settings


class SlowStore(Collect):
    """on_message takes longer than the client's command timeout."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    async def on_message(self, session, envelope):
        await asyncio.sleep(self.seconds)
        await super().on_message(session, envelope)


def test_a_slow_handler_does_not_use_up_the_clients_time(serve, client):
    handler = SlowStore(1.0)
    raw = client(serve(handler, command_timeout=0.3))
    raw.begin()
    assert raw.cmd("DATA").code == 354
    started = time.monotonic()
    raw.send(b"Subject: slow\r\n\r\nbody\r\n.\r\n")
    assert raw.reply().code == 250  # after the handler's second, not a 421
    assert time.monotonic() - started >= 0.9
    # The client's clock starts again at the reply: it has its whole timeout.
    assert raw.cmd("NOOP").code == 250
    assert len(handler.wait_for(1)) == 1


async def _eventually(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_the_sweep_runs_only_while_there_are_connections(loop):
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop", reason="uvloop is not available on this platform")
        runner = uvloop.run
    else:
        runner = asyncio.run

    async def main() -> None:
        server = Server(Collect(), hostname="mx.test", command_timeout=0.4)
        await server.start("127.0.0.1", 0)
        try:
            assert not server.timeouts.running
            for _ in range(2):  # it stops with the last connection and starts with the next
                reader, writer = await asyncio.open_connection(*server.addresses[0])
                assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"220 ")
                assert server.timeouts.running
                writer.close()
                await writer.wait_closed()
                assert await _eventually(lambda: not server.timeouts.running)
        finally:
            await server.close(grace=5)
        assert not server.timeouts.running

    runner(main())


class FakeConn:
    """What the sweep reads of a ``ServerConnection``; a broken one fails to say."""

    def __init__(self, name: str, broken: bool) -> None:
        self.session = SimpleNamespace(id=name)
        self.broken = broken
        self.timed = False

    @property
    def in_data(self) -> bool:
        if self.broken:
            raise RuntimeError("broken connection")
        return False

    def timed_out(self) -> None:
        self.timed = True


class FakeProtocol:
    """What the sweep reads of an ``SMTPProtocol``: a connection long idle."""

    def __init__(self, name: str, broken: bool = False) -> None:
        self._timed = True
        self._busy = self._heard = self._answered = self._write_paused = False
        self._last_activity = self._progress = 0.0
        self._progress_octets = 0
        self.conn = FakeConn(name, broken)

    def _flush(self) -> None:
        pass


def test_one_failing_connection_does_not_stop_the_others_timeouts(caplog):
    caplog.set_level(logging.INFO, logger="fastsmtp")

    async def main() -> list[FakeProtocol]:
        broken = FakeProtocol("BROKEN", broken=True)
        good = [FakeProtocol(f"GOOD{i}") for i in range(3)]
        connections = {broken, *good}
        sweep = TimeoutSweep(connections, Settings(command_timeout=0.2))  # type: ignore[arg-type]
        sweep.watch(asyncio.get_running_loop())
        try:
            assert await _eventually(lambda: all(fake.conn.timed for fake in good))
        finally:
            sweep.stop()
        assert not broken.conn.timed
        return good

    good = asyncio.run(main())
    assert all(not fake._timed for fake in good)  # timed out once, then left alone
    failures = [r for r in caplog.records if r.exc_info]
    assert failures and all("BROKEN" in r.getMessage() for r in failures)
