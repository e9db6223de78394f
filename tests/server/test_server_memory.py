"""Memory per connection is bounded, whatever the client sends or fails to read.

The server runs in the test's own event loop, so the test can look inside
its connections between reads: what the line reader holds, what the body
collects, what waits in the transport to be written. ``tracemalloc`` checks
the whole process as well: megabytes sent must not become megabytes held.
"""

from __future__ import annotations

import asyncio
import socket
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from fastsmtp import Collect, Server
from fastsmtp.server import new_event_loop

MIB = 1024 * 1024
READ = 256 * 1024  # the server reads at most this much at once
CHUNK = b"x" * 65536

Check = Callable[[Any], None]


async def _reply(reader: asyncio.StreamReader) -> bytes:
    """One whole reply (its last line), within a deadline."""
    for _ in range(1000):
        line = await asyncio.wait_for(reader.readline(), 10)
        assert line, "the server closed the connection"
        if line[3:4] != b"-":
            return line
    raise AssertionError("endless reply")


def run(test: Callable[..., Awaitable[None]], loop: str = "asyncio", **settings: Any) -> None:
    """Run ``test(server, reader, writer, protocol)`` against a fresh server, then stop it."""

    async def main() -> None:
        server = Server(Collect(), hostname="mx.test", **settings)
        await server.start("127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection(*server.addresses[0])
            assert (await _reply(reader)).startswith(b"220 ")
            [protocol] = server._connections
            await test(server, reader, writer, protocol)
            writer.close()
        finally:
            await server.close(grace=1)

    with asyncio.Runner(loop_factory=lambda: new_event_loop(loop)) as runner:
        runner.run(main())


async def flood(writer: asyncio.StreamWriter, megabytes: int, check: Check, protocol: Any) -> None:
    """Send ``megabytes`` MiB of ``x``; ``check`` the connection after each piece."""
    for _ in range(megabytes * 16):
        writer.write(CHUNK)
        await writer.drain()
        check(protocol)


async def traced(work: Awaitable[None]) -> int:
    """The peak of memory allocated (tracemalloc) while ``work`` runs."""
    tracemalloc.start()
    try:
        await work
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def begin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    for command in (b"EHLO c.example", b"MAIL FROM:<a@example.com>", b"RCPT TO:<b@example.com>"):
        writer.write(command + b"\r\n")
        assert (await _reply(reader)).startswith(b"250")


def test_a_10_mib_line_without_crlf():
    limit = 512

    def check(protocol):
        assert len(protocol.conn._reader) <= limit

    async def test(server, reader, writer, protocol):
        async def work():
            await flood(writer, 10, check, protocol)
            writer.write(b"\r\nNOOP\r\n")
            assert (await _reply(reader)).startswith(b"500 5.5.6 ")  # all 10 MiB were read
            assert (await _reply(reader)).startswith(b"250 ")

        peak = await traced(work())
        assert peak < 2 * MIB, f"{peak} octets allocated for a 10 MiB line"

    run(test, max_command_line=limit)


def test_a_bdat_chunk_over_the_size_limit_is_consumed_not_kept():
    def check(protocol):
        assert len(protocol.conn._reader) <= READ
        assert protocol._body.sink is None

    async def test(server, reader, writer, protocol):
        await begin(reader, writer)

        async def work():
            writer.write(b"BDAT %d LAST\r\n" % (10 * MIB))
            await flood(writer, 10, check, protocol)
            assert (await _reply(reader)).startswith(b"552 5.3.4 ")  # all 10 MiB were read
            assert protocol._body.sink is None

        peak = await traced(work())
        assert peak < 2 * MIB, f"{peak} octets allocated for a refused 10 MiB chunk"
        # The session goes on; a huge declared size is refused the same way.
        writer.write(b"NOOP\r\nBDAT 1000000000000000000000 LAST\r\n")
        assert (await _reply(reader)).startswith(b"250 ")
        await flood(writer, 2, check, protocol)

    run(test, max_message_size=MIB)


def test_a_message_over_the_size_limit_holds_at_most_the_limit():
    def check(protocol):
        # The limit, plus our Received: header written first (Collect: a MessageBody).
        sink = protocol._body.sink
        assert sink is None or sink.size <= MIB + 1024

    async def test(server, reader, writer, protocol):
        await begin(reader, writer)
        writer.write(b"DATA\r\n")
        assert (await _reply(reader)).startswith(b"354")

        async def work():
            # No line ends: too big, and the decoder keeps a few octets.
            await flood(writer, 10, check, protocol)
            writer.write(b"\r\n.\r\n")
            assert (await _reply(reader)).startswith(b"552 5.3.4 ")
            assert protocol._body.sink is None

        peak = await traced(work())
        assert peak < 3 * MIB, f"{peak} octets allocated for a 10 MiB message (limit 1 MiB)"

    run(test, max_message_size=MIB, max_line_length=0)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_client_that_pipelines_and_never_reads_is_paused(loop):
    """Endless RCPTs, replies never read: the server stops reading instead of buffering."""
    count = 40_000  # 1.5 MB of replies: more than the kernel buffers hold

    async def test(server, reader, writer, protocol):
        # Small kernel buffers on the server's side, so that replies pile up soon.
        sock = protocol.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        # And on the client's: loopback's receive buffer may grow to megabytes
        # (autotuning) and take every reply, so that the server never waits;
        # 64 KiB, not less, keeps the final read phase quick.
        client = writer.get_extra_info("socket")
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        writer.write(b"EHLO c.example\r\n")
        assert (await _reply(reader)).startswith(b"250 ")
        writer.write(b"MAIL FROM:<a@example.com>\r\n")
        writer.write(b"".join(b"RCPT TO:<u%05d@example.com>\r\n" % i for i in range(count)))
        # Nothing to await on the server's side: look until it has paused (bounded).
        for _ in range(500):
            if protocol._write_paused:
                break
            await asyncio.sleep(0.01)
        for _ in range(20):  # let it settle: nothing more must be read or written
            await asyncio.sleep(0.01)
        # At most the high-water mark and the replies to one read wait to be written.
        assert protocol.transport.get_write_buffer_size() < 64 * 1024 + 40 * (READ // 28)
        assert protocol._write_paused
        assert len(protocol.conn._reader) <= READ
        assert len(protocol.conn.envelope.rcpt_tos) <= 100
        # The client reads at last: every command is answered, in order.
        data = b""
        for _ in range(10_000):
            if data.count(b"\r\n") >= 1 + count:
                break
            data += await asyncio.wait_for(reader.read(1 << 20), 10)
        codes = [line[:4] for line in data.split(b"\r\n")[:-1]]
        assert codes == [b"250 "] + [b"250 "] * 100 + [b"452 "] * (count - 100)
        writer.write(b"QUIT\r\n")
        assert (await _reply(reader)).startswith(b"221 ")

    if loop == "uvloop":
        pytest.importorskip("uvloop", reason="uvloop is not available on this platform")
    run(test, loop)
