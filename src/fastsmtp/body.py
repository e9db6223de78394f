"""Message bodies as they arrive: kept in memory when small, spooled to a file when large.

The server hands each decoded chunk of a message (fastsmtp's ``Received:``
header first) to a *sink*, on the event loop, in arrival order. By default
the sink is a ``MessageBody``: it keeps the chunks in memory until they
pass ``spool_threshold`` octets, then moves them to a temporary file in
``spool_dir`` and appends every later chunk there, so a 200 MiB message
never needs 200 MiB of memory. A handler that wants the chunks itself
returns its own ``BodySink`` from ``on_data_start``.

Writes go to the file with ``os.write`` from the loop, one read's worth
(at most 256 KiB) at a time: a page-cache copy, measured in ``bench/memory.py``
to keep other connections' round trips in the low milliseconds.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import tempfile
from typing import BinaryIO, Protocol

from .protocol import replies as R
from .protocol.replies import Reply

__all__ = ["BodySink", "MessageBody"]

log = logging.getLogger("fastsmtp")


class BodySink(Protocol):
    """Where a message's chunks go as they arrive (``Handler.on_data_start``).

    ``write`` is called on the event loop with each chunk, so it must be
    quick: buffer, or hand the work to a thread. ``close`` is called once
    the message has ended well, before ``on_message``; ``abort`` when it
    was dropped instead (a size or syntax error, RSET, a lost connection).
    An exception from any of them is logged and the client gets ``451``.
    """

    def write(self, chunk: bytes) -> None:
        """Take the next chunk (dot-unstuffed, CRLF line endings)."""

    def close(self) -> None:
        """The message is complete."""

    def abort(self) -> None:
        """The message was dropped: throw away what was written."""


class MessageBody:
    """The message as received: bytes up to ``threshold`` octets, else a temporary file.

    ``size`` counts the octets written. ``path`` is the spool file's name
    while there is one (``None`` for a body kept in memory). ``open()``
    gives a binary file positioned at the start either way, and ``read()``
    the whole message as one ``bytes`` (for a spooled body, a read of the
    whole file into memory). The server calls ``abort()`` once
    ``on_message`` has returned: the spool file is removed then, while a
    body kept in memory stays readable.
    """

    __slots__ = ("_chunks", "_data", "_directory", "_fd", "_threshold", "path", "size")

    def __init__(self, threshold: int, directory: str | None = None) -> None:
        self._threshold = threshold
        self._directory = directory
        self._chunks: list[bytes] = []
        self._data: bytes | None = None
        self._fd = -1
        self.path: str | None = None
        self.size = 0

    @property
    def spooled(self) -> bool:
        """True when the body went to a temporary file."""
        return self.path is not None

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``; past the threshold, move everything to the spool file."""
        self.size += len(chunk)
        if self._fd >= 0:
            write_all(self._fd, chunk)
            return
        self._chunks.append(chunk)
        if self.size > self._threshold:
            self._spool()

    def _spool(self) -> None:
        fd, self.path = tempfile.mkstemp(prefix="fastsmtp-", suffix=".msg", dir=self._directory)
        self._fd = fd
        chunks, self._chunks = self._chunks, []
        for chunk in chunks:
            write_all(fd, chunk)

    def close(self) -> None:
        """The message is complete: join what is in memory, or stop writing the file."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
        elif self._data is None:
            self._data = b"".join(self._chunks)
            self._chunks = []

    def abort(self) -> None:
        """Remove the spool file (a body in memory stays readable)."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
        path, self.path = self.path, None
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._chunks = []

    def open(self) -> BinaryIO:
        """The message as a binary file positioned at its start; close it after use."""
        if self._data is not None:
            return io.BytesIO(self._data)  # shares the bytes, no copy
        if self.path is None or self._fd >= 0:
            raise ValueError(
                "the message body is not readable: it is still being received, or it "
                "was spooled and removed after on_message returned (read it there)"
            )
        return open(self.path, "rb")

    def read(self) -> bytes:
        """The whole message; for a spooled body this reads the file into memory."""
        if self._data is not None:
            return self._data
        with self.open() as f:
            return f.read()


class BodyReceiver:
    """One connection's message in progress: its sink, its size, and whether it failed.

    The asyncio server feeds it; a failure (a full disk, a sink that
    raises) is logged once, the rest of the message is dropped, and
    ``finish`` returns the reply for the end of the message.
    """

    __slots__ = ("_error", "_session_id", "sink", "size")

    def __init__(self, session_id: str) -> None:
        self._session_id = session_id
        self._error: Reply | None = None
        self.sink: BodySink | None = None
        self.size = 0

    def start(self, sink: BodySink, trace: bytes) -> None:
        """A new message goes to ``sink``, starting with the ``Received:`` header."""
        self.drop()
        self.sink = sink
        self.write(trace)

    def fail(self, reply: Reply) -> None:
        """The message cannot be kept: drop it and answer ``reply`` at its end."""
        self.drop()
        self._error = reply

    def write(self, chunk: bytes) -> None:
        """Hand a chunk to the sink (dropped after a failure)."""
        sink = self.sink
        if sink is None:
            return
        self.size += len(chunk)
        try:
            sink.write(chunk)
        except Exception as exc:
            self._failed("write", exc)

    def finish(self) -> tuple[BodySink | None, Reply | None]:
        """The message ended: ``(sink, None)`` once closed, or ``(None, error reply)``."""
        if self.sink is not None and self._error is None:
            try:
                self.sink.close()
            except Exception as exc:
                self._failed("close", exc)
        sink, self.sink = self.sink, None
        error, self._error = self._error, None
        assert sink is not None or error is not None, "a message ended that never started"
        return sink, error

    def drop(self) -> None:
        """Abort the message in progress, if any (RSET, errors, disconnect)."""
        sink, self.sink = self.sink, None
        self._error = None
        self.size = 0
        if sink is not None:
            release(sink, self._session_id)

    def _failed(self, what: str, exc: Exception) -> None:
        if isinstance(exc, OSError) and isinstance(self.sink, MessageBody):
            log.error("%s: cannot spool the message body (452): %s", self._session_id, exc)
            reply = R.SPOOL_FAILED
        else:
            log.error("%s: message sink %s failed", self._session_id, what, exc_info=exc)
            reply = R.HANDLER_ERROR
        self.fail(reply)


def release(sink: BodySink, session_id: str) -> None:
    """Abort ``sink`` (for a ``MessageBody``: remove its spool file), logging a failure."""
    try:
        sink.abort()
    except Exception:
        log.exception("%s: aborting the message sink failed", session_id)


def stored(sink: BodySink, session_id: str) -> None:
    """``on_message`` is done: remove a ``MessageBody``'s spool file.

    A handler's own sink was closed already and stays the handler's business.
    """
    if isinstance(sink, MessageBody):
        release(sink, session_id)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (os.write may write less)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "write made no progress")
        view = view[written:]
