"""A multi-connection SMTP load client, for machines without Postfix's smtp-source.

``python -m bench.client HOST:PORT -s SESSIONS -m MESSAGES -l LENGTH [-d] [-r RCPTS]``
takes smtp-source's flags with the same meaning: ``-s`` sessions in
parallel, ``-m`` messages in all, ``-l`` payload bytes per message, ``-d``
to send every message of a session over one connection (otherwise one
connection per message), ``-r`` recipients per message. Like smtp-source it
waits for each reply before the next command (no pipelining), so it
measures the same round trips.

The payload is 76-character lines with CRLF, some starting with a dot
(dot-stuffed on the wire). It prints one JSON object: ``messages`` sent and
accepted, ``errors``, and ``elapsed`` seconds from the first connection to
the last reply, which the load benchmark uses instead of the wall time of
the process (Python's start-up is not the server's cost). Every read has a
deadline, so a stuck server ends the run with an error, never a hang.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

__all__ = ["LoadResult", "main", "make_payload", "run_load"]

REPLY_TIMEOUT = 120.0


class SMTPFailure(Exception):
    """The server answered with an unexpected code, or closed the connection."""


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one client run achieved."""

    messages: int
    errors: int
    elapsed: float
    first_error: str = ""


def make_payload(length: int) -> bytes:
    """``length`` bytes of message text: 76-character CRLF lines, every 25th dotted."""
    lines = []
    total = n = 0
    while total < length:
        n += 1
        text = f"{n:08d} The quick brown fox jumps over the lazy dog; pack my box with five "
        line = (text + "dozen jugs")[:76].encode()
        if n % 25 == 0:
            line = b"." + line[1:]
        lines.append(line + b"\r\n")
        total += len(line) + 2
    return b"".join(lines)[:length]


def _message(length: int, sender: str, rcpt: str) -> bytes:
    """Headers and payload, dot-stuffed and terminated, ready to write after DATA."""
    payload = make_payload(length)
    if payload and not payload.endswith(b"\r\n"):
        payload += b"\r\n"
    head = (
        f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: fastsmtp bench\r\n"
        "Message-ID: <bench@client.example>\r\n\r\n"
    ).encode()
    stuffed = (head + payload).replace(b"\r\n.", b"\r\n..")
    return stuffed + b".\r\n"


class _Session:
    """One SMTP connection, lockstep: each command waits for its reply."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def reply(self, expect: int) -> None:
        """Read one (possibly multi-line) reply; fail unless its code is ``expect``."""
        while True:
            line = await asyncio.wait_for(self.reader.readline(), REPLY_TIMEOUT)
            if not line.endswith(b"\n"):
                raise SMTPFailure("connection closed by the server")
            if line[3:4] != b"-":
                break
        if line[:3] != str(expect).encode():
            raise SMTPFailure(line.decode("ascii", "replace").strip())

    async def command(self, line: bytes, expect: int) -> None:
        self.writer.write(line)
        await self.reply(expect)

    async def send_message(self, mail: bytes, rcpts: Sequence[bytes], message: bytes) -> None:
        await self.command(mail, 250)
        for rcpt in rcpts:
            await self.command(rcpt, 250)
        await self.command(b"DATA\r\n", 354)
        self.writer.write(message)
        await self.writer.drain()
        await self.reply(250)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.command(b"QUIT\r\n", 221)
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), REPLY_TIMEOUT)


async def run_load(
    host: str,
    port: int,
    *,
    sessions: int = 1,
    messages: int = 1,
    length: int = 1024,
    reuse: bool = False,
    rcpts: int = 1,
) -> LoadResult:
    """Send ``messages`` messages over ``sessions`` parallel sessions."""
    sender = "load@client.example"
    message = _message(length, sender, "sink@server.example")
    mail = f"MAIL FROM:<{sender}>\r\n".encode()
    rcpt_lines = [f"RCPT TO:<{i}sink@server.example>\r\n".encode() for i in range(1, rcpts + 1)]
    if rcpts == 1:
        rcpt_lines = [b"RCPT TO:<sink@server.example>\r\n"]
    remaining = messages
    sent = errors = 0
    first_error = ""

    def take() -> bool:
        nonlocal remaining
        if remaining <= 0:
            return False
        remaining -= 1
        return True

    async def connect() -> _Session:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=1 << 16), REPLY_TIMEOUT
        )
        session = _Session(reader, writer)
        await session.reply(220)
        await session.command(b"EHLO client.example\r\n", 250)
        return session

    async def worker() -> None:
        nonlocal sent, errors, first_error
        session: _Session | None = None
        try:
            while take():
                try:
                    if session is None:
                        session = await connect()
                    await session.send_message(mail, rcpt_lines, message)
                    sent += 1
                except (OSError, SMTPFailure, TimeoutError) as exc:
                    errors += 1
                    first_error = first_error or f"{type(exc).__name__}: {exc}"
                    if session is not None:
                        session.writer.close()
                    session = None
                    continue
                if not reuse:
                    await session.close()
                    session = None
        finally:
            if session is not None:
                await session.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(max(1, min(sessions, messages)))))
    return LoadResult(sent, errors, time.perf_counter() - start, first_error)


def _hostport(spec: str) -> tuple[str, int]:
    host, _, port = spec.rpartition(":")
    return host or "127.0.0.1", int(port)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; prints the result as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.client", description=__doc__)
    parser.add_argument("server", help="HOST:PORT")
    parser.add_argument("-s", dest="sessions", type=int, default=1, help="parallel sessions")
    parser.add_argument("-m", dest="messages", type=int, default=1, help="messages in all")
    parser.add_argument("-l", dest="length", type=int, default=1024, help="payload bytes")
    parser.add_argument("-d", dest="reuse", action="store_true", help="reuse connections")
    parser.add_argument("-r", dest="rcpts", type=int, default=1, help="recipients per message")
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="client event loop (auto: uvloop when installed)",
    )
    args = parser.parse_args(argv)
    host, port = _hostport(args.server)
    coro = run_load(
        host,
        port,
        sessions=args.sessions,
        messages=args.messages,
        length=args.length,
        reuse=args.reuse,
        rcpts=args.rcpts,
    )
    use_uvloop = args.loop == "uvloop" or (
        args.loop == "auto" and importlib.util.find_spec("uvloop") is not None
    )
    if use_uvloop:
        import uvloop

        result = uvloop.run(coro)
    else:
        result = asyncio.run(coro)
    print(json.dumps(asdict(result)))
    return 0 if result.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
