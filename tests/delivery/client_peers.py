"""Peers for the SMTPClient tests: a bounded loop runner and a scripted server.

``MiniServer`` runs in the test's own event loop and speaks just enough
SMTP/LMTP (greeting, EHLO/LHLO/HELO, AUTH PLAIN/LOGIN, MAIL, RCPT, DATA,
RSET, QUIT) to play the servers a fastsmtp ``Server`` cannot: an LMTP
server, one that asks for AUTH, one that hangs up or goes silent at a
chosen step, one that sends garbage.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from fastsmtp.server import new_event_loop

__all__ = ["MiniServer", "run"]

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], loop: str = "asyncio") -> T:
    """Run ``coro`` to completion on a new loop of that kind, within 30 seconds."""

    async def bounded() -> T:
        async with asyncio.timeout(30):
            return await coro

    event_loop = new_event_loop(loop)
    try:
        return event_loop.run_until_complete(bounded())
    finally:
        event_loop.close()


class MiniServer:
    """A scripted server on 127.0.0.1 (``async with MiniServer(...) as server``).

    ``extensions`` are advertised after EHLO/LHLO (``None``: EHLO is refused
    with 502, for the HELO fallback). ``rcpt`` maps a recipient to its RCPT
    reply, ``final`` to its reply after the data (LMTP: one per recipient;
    SMTP: the first recipient's, or 250). ``hangup`` / ``silent`` name the
    step (a command verb such as ``"EHLO"`` or ``"RCPT"``, or ``"."`` for the
    end of the data) at which the server closes the connection / stops
    answering. ``credentials`` are the (user, password) that AUTH accepts.
    What the client did is kept in ``commands``, ``messages`` and ``logins``.
    """

    def __init__(
        self,
        extensions: tuple[str, ...] | None = ("PIPELINING", "ENHANCEDSTATUSCODES"),
        *,
        lmtp: bool = False,
        greeting: bytes = b"220 mini.test ESMTP\r\n",
        rcpt: dict[str, bytes] | None = None,
        final: dict[str, bytes] | None = None,
        hangup: str | None = None,
        silent: str | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.extensions = extensions
        self.lmtp = lmtp
        self.greeting = greeting
        self.rcpt = rcpt or {}
        self.final = final or {}
        self.hangup = hangup
        self.silent = silent
        self.credentials = credentials
        self.commands: list[bytes] = []
        self.messages: list[bytes] = []
        self.logins: list[str] = []
        self.address = ("127.0.0.1", 0)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> MiniServer:
        self._server = await asyncio.start_server(self._connected, "127.0.0.1", 0)
        self.address = self._server.sockets[0].getsockname()[:2]
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._session(reader, writer)
        finally:
            writer.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(self.greeting)
        accepted: list[str] = []
        while line := await reader.readline():
            self.commands.append(line)
            verb = line.split(b" ", 1)[0].strip().upper().decode()
            if verb == self.hangup:
                return
            if verb == self.silent:
                await asyncio.Event().wait()  # never answers; cancelled at the end
            if verb == "DATA" and accepted:
                writer.write(b"354 go ahead\r\n")
                self.messages.append(await _read_message(reader))
                if self.hangup == ".":
                    return
                if self.silent == ".":
                    await asyncio.Event().wait()
            writer.write(await self._answer(verb, line, reader, writer, accepted))
            await writer.drain()
            if verb == "QUIT":
                return

    async def _answer(
        self,
        verb: str,
        line: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        accepted: list[str],
    ) -> bytes:
        if verb in ("EHLO", "LHLO"):
            if self.extensions is None or (verb == "LHLO") != self.lmtp:
                return b"502 5.5.1 command not implemented\r\n"
            lines = ["mini.test", *self.extensions]
            return b"".join(
                f"250{'-' if i < len(lines) - 1 else ' '}{text}\r\n".encode()
                for i, text in enumerate(lines)
            )
        if verb == "HELO":
            return b"250 mini.test\r\n"
        if verb == "AUTH":
            return await self._auth(line, reader, writer)
        if verb == "MAIL":
            accepted.clear()
            return b"250 2.1.0 ok\r\n"
        if verb == "RCPT":
            address = line.split(b"<", 1)[1].split(b">", 1)[0].decode()
            reply = self.rcpt.get(address, b"250 2.1.5 ok\r\n")
            if reply.startswith(b"2"):
                accepted.append(address)
            return reply
        if verb == "DATA":
            if not accepted:
                return b"503 5.5.1 no valid recipients\r\n"
            if self.lmtp:
                return b"".join(self.final.get(a, b"250 2.0.0 delivered\r\n") for a in accepted)
            return self.final.get(accepted[0], b"250 2.0.0 queued\r\n")
        if verb in ("RSET", "NOOP"):
            return b"250 2.0.0 ok\r\n"
        if verb == "QUIT":
            return b"221 2.0.0 bye\r\n"
        return b"500 5.5.2 unknown command\r\n"

    async def _auth(
        self, line: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bytes:
        words = line.split()
        mechanism = words[1].upper() if len(words) > 1 else b""
        if mechanism == b"PLAIN" and len(words) == 3:
            _, user, password = base64.b64decode(words[2]).split(b"\0")
        elif mechanism == b"LOGIN" and len(words) == 2:
            answers = []
            for prompt in (b"VXNlcm5hbWU6", b"UGFzc3dvcmQ6"):  # "Username:", "Password:"
                writer.write(b"334 " + prompt + b"\r\n")
                answers.append(base64.b64decode(await reader.readline()))
            user, password = answers
        else:
            return b"504 5.5.4 unrecognized authentication type\r\n"
        if self.credentials == (user.decode(), password.decode()):
            self.logins.append(f"{mechanism.decode()} {user.decode()}")
            return b"235 2.7.0 authentication successful\r\n"
        return b"535 5.7.8 authentication credentials invalid\r\n"


async def _read_message(reader: asyncio.StreamReader) -> bytes:
    """Read a DATA body up to the lone dot and undo the dot-stuffing."""
    lines = []
    while (line := await reader.readline()) != b".\r\n":
        if not line:
            raise ConnectionError("client went away mid-message")
        lines.append(line[1:] if line.startswith(b".") else line)
    return b"".join(lines)
