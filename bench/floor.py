"""The Python floor: the least an SMTP responder in Python on an event loop can cost.

A measuring stick for the load benchmark, not a server: never use it to take
mail. It answers every command with a canned reply chosen by its first four
bytes (``220`` greeting, ``250`` to everything, ``354`` to DATA, ``221`` to
QUIT, ``250 queued`` after the body), finds the end of DATA with
``bytearray.find``, and keeps nothing: no envelope, no body, no checks. What
it costs per message is what Python and the event loop cost alone, so
fastsmtp ÷ floor is fastsmtp's own work, and floor ÷ smtp-sink the part of
the gap to C that no SMTP code in Python can close.

It does what a cheap server must: one ``asyncio.BufferedProtocol`` per
connection reading into one buffer shared by all of them, one
``transport.write`` per read (pipelined commands get one answer), and the end
of data found even when ``CRLF.CRLF`` arrives split across reads. Its replies
are written here, not taken from fastsmtp's table: it must not depend on the
code it measures.

``python -m bench.floor --listen 127.0.0.1:PORT --loop asyncio|uvloop``
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from typing import cast

__all__ = ["FloorProtocol", "main"]

GREETING = b"220 floor.bench.test ESMTP Python floor\r\n"
EHLO = b"250-floor.bench.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE\r\n"
OK = b"250 2.0.0 Ok\r\n"
QUEUED = b"250 2.0.0 Ok: queued as FLOOR\r\n"
GO_AHEAD = b"354 End data with <CR><LF>.<CR><LF>\r\n"
BYE = b"221 2.0.0 Bye\r\n"
#: by the first four bytes of a command line, upper-cased; anything else gets OK
REPLIES = {b"EHLO": EHLO, b"DATA": GO_AHEAD, b"QUIT": BYE}
TOO_LONG = b"500 5.5.2 Line too long\r\n"
END_OF_DATA = b"\r\n.\r\n"
#: a longer command line closes the connection: only a bound on memory (RFC 5321
#: §4.5.3.1.4 allows 512 octets; real clients stay far below this)
MAX_LINE = 4096

# One buffer for every connection: each read is answered before the next one.
_BUFFER = bytearray(256 * 1024)
_VIEW = memoryview(_BUFFER)


class FloorProtocol(asyncio.BufferedProtocol):
    """One connection: canned replies, and a scan for the end of DATA."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.in_data = False
        #: the start of a command line whose LF has not arrived yet
        self.line = b""
        #: in DATA, the last (up to) four bytes before this read
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(GREETING)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _VIEW

    def buffer_updated(self, nbytes: int) -> None:
        assert self.transport is not None
        replies = []
        start = 0
        close = False
        while start < nbytes and not close:
            if self.in_data:
                start = self._end_of_data(start, nbytes)
                if start < 0:
                    break
                self.in_data = False
                replies.append(QUEUED)
                continue
            eol = _BUFFER.find(b"\n", start, nbytes)
            if eol < 0:
                self.line += _BUFFER[start:nbytes]
                if len(self.line) > MAX_LINE:
                    replies.append(TOO_LONG)
                    close = True
                break
            verb = (self.line + _BUFFER[start : min(start + 4, eol)])[:4].upper()
            self.line = b""
            start = eol + 1
            replies.append(REPLIES.get(verb, OK))
            if verb == b"DATA":
                self.in_data = True
                self.tail = b"\r\n"  # the command's CRLF opens the end-of-data marker
            close = verb == b"QUIT"
        if replies:
            self.transport.write(b"".join(replies))
        if close:
            self.transport.close()

    def _end_of_data(self, start: int, nbytes: int) -> int:
        """Where the bytes after the end-of-data marker start, or -1 (tail kept)."""
        # A marker that began in an earlier read ends in the first four bytes here.
        head = self.tail + _BUFFER[start : min(start + 4, nbytes)]
        found = head.find(END_OF_DATA)
        if found >= 0:
            return start + found + len(END_OF_DATA) - len(self.tail)
        found = _BUFFER.find(END_OF_DATA, start, nbytes)
        if found >= 0:
            return found + len(END_OF_DATA)
        self.tail = (self.tail + _BUFFER[max(start, nbytes - 4) : nbytes])[-4:]
        return -1


async def serve(host: str, port: int) -> None:
    """Answer on ``host:port`` until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # The backlog bench/servers.py gives smtp-sink, and fastsmtp's.
    server = await loop.create_server(FloorProtocol, host, port, backlog=1024)
    async with server:
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.floor``: serve until stopped."""
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(serve(host, int(port)))
    else:
        asyncio.run(serve(host, int(port)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
