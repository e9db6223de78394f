"""Message bodies as they arrive: kept in memory when small, spooled to a file when large.

The server hands each decoded chunk of a message (fastsmtp's ``Received:``
header first) to a *sink*, on the event loop, in arrival order. By default
the sink is a ``MessageBody``: it keeps the chunks in memory until they
pass ``spool_threshold`` octets, then moves them to a temporary file in
``spool_dir`` and appends every later chunk there, so a 200 MiB message
never needs 200 MiB of memory. A handler that wants the chunks itself
returns its own ``BodySink`` from ``on_data_start``.

The spool file is written by the loop's thread pool, never on the loop
(see ``_Spool``), with a bounded backlog; ``bench/memory.py`` measures
both the memory of one 100 MiB message and the NOOP round trip of another
connection while ten 20 MiB messages arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import logging
import os
import tempfile
import threading
from collections.abc import Awaitable
from typing import BinaryIO, Protocol

from .protocol import replies as R
from .protocol.replies import Reply

__all__ = ["BodySink", "MessageBody"]

log = logging.getLogger("fastsmtp")


class BodySink(Protocol):
    """Where a message's chunks go as they arrive (``Handler.on_data_start``).

    ``write`` is called on the event loop with each chunk, so it must be
    quick: buffer, or hand the work to a thread. It may return an
    awaitable: the connection then reads nothing more until it is done
    (backpressure). ``close`` is called once the message has ended well,
    before ``on_message`` (which waits for an awaitable it returns);
    ``abort`` when it was dropped instead (a size or syntax error, RSET, a
    lost connection). An exception from ``write`` or ``close`` is logged,
    the rest of the message dropped and the client gets ``451 4.3.0``; one
    from ``abort`` is logged.
    """

    def write(self, chunk: bytes) -> Awaitable[None] | None:
        """Take the next chunk (dot-unstuffed, CRLF line endings)."""

    def close(self) -> Awaitable[None] | None:
        """The message is complete."""

    def abort(self) -> None:
        """The message was dropped: throw away what was written."""


# Octets a spooling body may hold in memory, waiting for its writer thread,
# before the connection stops reading: memory stays bounded on a slow disk.
_BACKLOG = 1024 * 1024


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

    __slots__ = ("_chunks", "_data", "_directory", "_spool", "_threshold", "size")

    def __init__(self, threshold: int, directory: str | None = None) -> None:
        self._threshold = threshold
        self._directory = directory
        self._chunks: list[bytes] = []
        self._data: bytes | None = None
        self._spool: _Spool | None = None
        self.size = 0

    @property
    def path(self) -> str | None:
        """The spool file's name while it exists (``None`` for a body in memory)."""
        spool = self._spool
        return spool.path if spool is not None and not spool._dropped else None

    @property
    def spooled(self) -> bool:
        """True when the body went to a temporary file."""
        return self._spool is not None

    def write(self, chunk: bytes) -> Awaitable[None] | None:
        """Append ``chunk``; past the threshold, move everything to the spool file."""
        self.size += len(chunk)
        if self._spool is not None:
            return self._spool.write(chunk)
        self._chunks.append(chunk)
        if self.size > self._threshold:
            chunks, self._chunks = self._chunks, []
            self._spool = _Spool(self._directory, chunks)
        return None

    def close(self) -> Awaitable[None] | None:
        """The message is complete: join what is in memory, or finish the file."""
        if self._spool is not None:
            return self._spool.close()
        if self._data is None:
            self._data = b"".join(self._chunks)
            self._chunks = []
        return None

    def abort(self) -> None:
        """Remove the spool file (a body in memory stays readable)."""
        if self._spool is not None:
            self._spool.drop()
        self._chunks = []

    def open(self) -> BinaryIO:
        """The message as a binary file positioned at its start; close it after use."""
        if self._data is not None:
            return io.BytesIO(self._data)  # shares the bytes, no copy
        if self._spool is None or not self._spool.complete or self.path is None:
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


class _Spool:
    """A temporary file made, written and removed by the loop's thread pool, in order.

    Nothing touches the disk on the event loop: measured here, a single
    256 KiB write to a fresh file sometimes takes 100 ms (writeback
    throttling) and removing a 20 MiB file 5 to 14 ms, stalls every
    connection would feel. One job runs at a time; chunks wait in
    ``_pending`` meanwhile, and past ``_BACKLOG`` octets ``write`` returns
    a future that the connection awaits before reading on. Whoever finishes
    last, the job or ``drop``, removes the file (``_lock`` decides), so a
    dropped message leaves nothing behind even when the loop stops. Without
    a running loop (the class used outside the server) the work is done at
    once instead.
    """

    __slots__ = (
        "_closing",
        "_directory",
        "_dropped",
        "_error",
        "_fd",
        "_job",
        "_lock",
        "_loop",
        "_pending",
        "_pending_size",
        "_running",
        "_waiter",
        "complete",
        "path",
    )

    def __init__(self, directory: str | None, chunks: list[bytes]) -> None:
        self._directory = directory
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._fd = -1
        #: the file's name, once the first job has made it
        self.path: str | None = None
        self._pending = chunks
        self._pending_size = sum(map(len, chunks))
        self._job: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._closing = False
        self._lock = threading.Lock()
        self._running = False  # a job owns the file (under _lock)
        self._dropped = False
        #: the file holds the whole message and is closed
        self.complete = False
        self._submit()

    def write(self, chunk: bytes) -> Awaitable[None] | None:
        if self._error is not None:
            raise self._error
        self._pending.append(chunk)
        self._pending_size += len(chunk)
        if self._job is None:
            self._submit()
        if self._pending_size > _BACKLOG:
            return self._wait()
        return None

    def close(self) -> Awaitable[None] | None:
        self._closing = True
        if self._job is None:  # nothing in flight: the error (if any) is known now
            self._finish()
            return None
        return self._closed(self._wait())

    async def _closed(self, written: asyncio.Future[None]) -> None:
        await written
        self._finish()

    def _finish(self) -> None:
        if self._error is not None:
            raise self._error
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)  # a regular file: close() does not wait for the disk
        self.complete = True

    def drop(self) -> None:
        """Forget the message; its file is removed by the job in flight, or now."""
        self._pending = []
        self._pending_size = 0
        self._error = self._error or ValueError("the spooled message was dropped")
        self.complete = False
        with self._lock:
            self._dropped = True
            running = self._running
        if not running:
            if self._loop is None:
                self._remove()
            else:
                self._loop.run_in_executor(None, self._remove)
        self._wake()

    def _submit(self) -> None:
        chunks, self._pending, self._pending_size = self._pending, [], 0
        self._running = True
        if self._loop is None:
            self._write(chunks)
            return
        self._job = self._loop.run_in_executor(None, self._write, chunks)
        self._job.add_done_callback(self._done)

    def _write(self, chunks: list[bytes]) -> None:
        """The job, in a worker thread: make the file if need be and append ``chunks``."""
        try:
            if not self._dropped:
                if self._fd < 0:
                    self._fd, self.path = tempfile.mkstemp(
                        prefix="fastsmtp-", suffix=".msg", dir=self._directory
                    )
                for chunk in chunks:
                    write_all(self._fd, chunk)
        finally:
            with self._lock:
                self._running = False
                if self._dropped:
                    self._remove()

    def _remove(self) -> None:
        """Close and remove the file (in a worker thread, once no job uses it)."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def _done(self, job: asyncio.Future[None]) -> None:
        self._job = None
        error = job.exception()
        if error is not None and self._error is None:
            self._error = error
            self._pending = []
        if self._error is None and self._pending:
            self._submit()
        if self._error is not None or self._job is None or not self._closing:
            self._wake()

    def _wait(self) -> asyncio.Future[None]:
        if self._waiter is None:
            assert self._loop is not None
            self._waiter = self._loop.create_future()
        return self._waiter

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class BodyReceiver:
    """One connection's message in progress: its sink, and whether it failed.

    The asyncio server feeds it; a failure (a full disk, a sink that
    raises) is logged once, the rest of the message is dropped, and
    ``result`` gives the reply for the end of the message.
    """

    __slots__ = ("_error", "_session_id", "sink")

    def __init__(self, session_id: str) -> None:
        self._session_id = session_id
        self._error: Reply | None = None
        self.sink: BodySink | None = None

    def start(self, sink: BodySink, trace: bytes) -> Awaitable[None] | None:
        """A new message goes to ``sink``, starting with the ``Received:`` header ``trace``."""
        self.drop()
        self.sink = sink
        return self.write(trace)

    def fail(self, reply: Reply) -> None:
        """The message cannot be kept: drop it and answer ``reply`` at its end."""
        self.drop()
        self._error = reply

    def write(self, chunk: bytes) -> Awaitable[None] | None:
        """Hand a chunk to the sink (dropped after a failure); await what it returns."""
        sink = self.sink
        if sink is None:
            return None
        try:
            pending = sink.write(chunk)
        except Exception as exc:
            self._failed("write", exc)
            return None
        return None if pending is None else self._guard("write", pending)

    def close(self) -> Awaitable[None] | None:
        """The message ended: close the sink (await what it returns), then call ``result``."""
        if self.sink is None or self._error is not None:
            return None
        try:
            pending = self.sink.close()
        except Exception as exc:
            self._failed("close", exc)
            return None
        return None if pending is None else self._guard("close", pending)

    def result(self) -> tuple[BodySink | None, Reply | None]:
        """``(sink, None)`` for a message kept well, or ``(None, the reply refusing it)``."""
        sink, self.sink = self.sink, None
        error, self._error = self._error, None
        assert sink is not None or error is not None, "a message ended that never started"
        return sink, error

    async def _guard(self, what: str, pending: Awaitable[None]) -> None:
        try:
            await pending
        except Exception as exc:
            if self.sink is not None:  # else it was dropped meanwhile: nothing to answer
                self._failed(what, exc)

    def drop(self) -> None:
        """Abort the message in progress, if any (RSET, errors, disconnect)."""
        sink, self.sink = self.sink, None
        self._error = None
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
