"""``Mbox``: append each accepted message to an mbox file, locked and durable.

The format is mboxrd (the "default" mbox of RFC 4155 with reversible
quoting): each message starts with a ``From sender date`` separator line
and ends with a blank line, and a body line that reads ``From `` after any
number of ``>`` gets one more ``>``, so a reader can undo the quoting
exactly.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from typing import BinaryIO

from ..body import write_all
from ..config import ConfigError
from ..handler import Handler
from ..protocol import replies as R
from ..protocol.replies import Reply
from ..session import Envelope, Session

try:
    import fcntl
except ImportError:  # Windows
    _HAVE_FCNTL = False
else:
    _HAVE_FCNTL = True

__all__ = ["Mbox"]

log = logging.getLogger(__name__)

# mboxrd: "^>*From " gains one ">" (and loses it again when read).
_FROM_QUOTE = re.compile(rb"^>*From ", re.MULTILINE)

# How often the lock is tried while another program holds it.
_FIRST_RETRY = 0.01
_LAST_RETRY = 0.25
# How often the file may be replaced under us before we give up (451).
_MAX_REOPENS = 10
# The message is read, quoted and written this much at a time.
_BLOCK = 1024 * 1024


class Mbox(Handler):
    """Append every accepted message to the mbox file at ``path``.

    The file is created (mode 0600) at the first message if it does not
    exist. Each message is written, in one append, as:

    * ``From sender date``: the null sender is ``MAILER-DAEMON``; spaces
      and control characters in the address become ``_`` and non-ASCII
      characters ``\\x``/``\\u`` escapes, because readers split this line
      at spaces and some (Python's ``mailbox``) read it as ASCII. The date
      is ``asctime`` in UTC.
    * ``Return-Path: <sender>``, as in ``Maildir`` and Postfix's local
      delivery; it holds the exact (possibly UTF-8) address.
    * the message (fastsmtp's ``Received:`` header first) with CRLF
      turned into LF, because mbox is a local Unix format, and mboxrd
      ``>From `` quoting; 8-bit and UTF-8 bytes are kept as they are.
    * a blank line. A blank line is also added before the ``From`` line
      when the file does not already end with one.

    The message is read from ``envelope.open_content()`` and written in
    blocks of about 1 MiB, so a spooled message is never loaded whole.

    Locking: the whole append runs under ``fcntl.flock`` *and* ``fcntl.lockf``
    (POSIX ``fcntl`` record lock) on the file, exclusive, so readers that
    use either (mutt, Dovecot, Python's ``mailbox``) never see a partial
    message; deliveries from this process also take a thread lock, because
    POSIX record locks do not exclude threads of one process. Dot-locking
    (``path.lock``) is not done. When the locks cannot be had within
    ``lock_timeout`` seconds the client gets a 451 and retries later.
    After the append the file is ``fsync``'d before the hook returns, so
    the 250 follows a durable write. On any ``OSError`` the file is
    truncated back to its size before the append, the error is logged and
    the client gets ``451 4.3.0``.

    Needs ``fcntl`` (POSIX): on other platforms construction raises
    ``ConfigError``. A path that is a directory, or whose directory does not
    exist, is refused at construction as well. ``on_message`` is a plain
    function: the server runs it in its thread pool, never on the event loop.
    """

    def __init__(self, path: str | os.PathLike[str], *, lock_timeout: float = 20.0) -> None:
        self.path = os.fspath(path)
        if not _HAVE_FCNTL:
            raise ConfigError(
                f"mbox {self.path!r}: appending to an mbox needs fcntl.flock to lock the "
                f"file, and this platform ({sys.platform}) has no fcntl; use maildir instead"
            )
        if os.path.isdir(self.path):
            raise ConfigError(
                f"mbox {self.path!r} is a directory; give the path of a file "
                "(created at the first message), or use maildir for a directory"
            )
        parent = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(parent):
            raise ConfigError(f"mbox {self.path!r}: directory {parent!r} does not exist")
        if lock_timeout < 0:
            raise ValueError(f"lock_timeout must be at least 0 seconds, not {lock_timeout}")
        self.lock_timeout = lock_timeout
        self._lock = threading.Lock()

    def on_message(self, session: Session, envelope: Envelope) -> Reply | None:
        """Append the message; return only once it is locked, written and fsync'd."""
        if not self._lock.acquire(timeout=self.lock_timeout):
            log.error(
                "%s: mbox %s still busy with other deliveries after %.1f s (451)",
                envelope.queue_id,
                self.path,
                self.lock_timeout,
            )
            return R.HANDLER_ERROR
        try:
            with envelope.open_content() as content:
                self._append(_entry(envelope.mail_from or "", content), envelope.queue_id)
        except OSError as exc:
            log.error(
                "%s: cannot deliver to mbox %s (451, the client will retry): %s",
                envelope.queue_id,
                self.path,
                exc,
            )
            return R.HANDLER_ERROR
        finally:
            self._lock.release()
        return None

    def _append(self, entry: Iterator[bytes], queue_id: str | None) -> None:
        fd = self._open_locked()
        try:  # closing the descriptor releases both locks
            start = os.fstat(fd).st_size
            try:
                write_all(fd, _separator(fd, start))
                for piece in entry:
                    write_all(fd, piece)
                os.fsync(fd)
            except OSError:
                _truncate(fd, start, self.path, queue_id)
                raise
        finally:
            os.close(fd)

    def _open_locked(self) -> int:
        """Open the file and lock it; the descriptor is of the file ``path`` names now."""
        deadline = time.monotonic() + self.lock_timeout
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        for _ in range(_MAX_REOPENS):
            fd = os.open(self.path, flags, 0o600)
            try:
                _lock(fd, deadline, self.path)
                # A reader may have replaced the file (rename) while we
                # waited: what was appended to the old one would be lost.
                if _is_current(fd, self.path):
                    return fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        raise OSError(errno.EAGAIN, "mbox file kept being replaced while locking", self.path)


def _entry(sender: str, content: BinaryIO) -> Iterator[bytes]:
    """The mboxrd form of one message, from its From line to its blank line, in blocks."""
    date = time.asctime(time.gmtime())
    yield b"From " + _from_line_sender(sender) + b" " + date.encode() + b"\n"
    # The parser refuses CR and LF in addresses; never let one split the header.
    clean = sender.replace("\r", "").replace("\n", "")
    last = b""
    for text in _mboxrd(content, f"Return-Path: <{clean}>\r\n".encode()):
        if text:
            last = text
            yield text
    yield b"\n" if last.endswith(b"\n") else b"\n\n"


def _mboxrd(content: BinaryIO, carry: bytes) -> Iterator[bytes]:
    """``carry`` then ``content``, CRLF made LF and ``>From `` quoted, block by block.

    Quoting looks at line starts, so each block is cut after its last LF
    and the rest carried into the next. A line longer than a block is let
    out in parts once its ``>*From `` prefix is decided (and without a
    trailing CR, whose LF may follow); the later parts are not line starts.
    """
    mid_line = False
    while True:
        block = content.read(_BLOCK)
        data = carry + block
        if not block:
            yield _quote(data, mid_line)
            return
        cut = data.rfind(b"\n") + 1
        if cut:
            carry, mid_line_next = data[cut:], False
        elif len(data) >= _BLOCK and len(data.lstrip(b">")) >= len(b"From "):
            cut = len(data) - data.endswith(b"\r")
            carry, mid_line_next = data[cut:], True
        else:
            carry = data
            continue
        yield _quote(data[:cut], mid_line)
        mid_line = mid_line_next


def _quote(text: bytes, mid_line: bool) -> bytes:
    """CRLF to LF and mboxrd quoting; ``mid_line``: ``text`` does not start a line."""
    text = text.replace(b"\r\n", b"\n")
    start = text.find(b"\n") + 1 if mid_line else 0
    if mid_line and not start:
        return text
    return text[:start] + _FROM_QUOTE.sub(rb">\g<0>", text[start:])


def _from_line_sender(sender: str) -> bytes:
    if not sender:
        return b"MAILER-DAEMON"
    # RFC 4155 §2: the separator's fields are separated by spaces.
    cleaned = "".join("_" if ch.isspace() or not ch.isprintable() else ch for ch in sender)
    return cleaned.encode("ascii", "backslashreplace")


def _separator(fd: int, size: int) -> bytes:
    """What makes the file end with a blank line before the next ``From`` line."""
    if size == 0:
        return b""
    tail = os.pread(fd, 2, max(0, size - 2))
    if tail.endswith(b"\n\n"):
        return b""
    return b"\n" if tail.endswith(b"\n") else b"\n\n"


def _lock(fd: int, deadline: float, path: str) -> None:
    """Take flock and lockf, exclusive; retry until ``deadline``, then raise."""
    delay = _FIRST_RETRY
    while not _try_lock(fd):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(errno.ETIMEDOUT, "mbox stayed locked by another program", path)
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, _LAST_RETRY)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            return False
        raise
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        fcntl.flock(fd, fcntl.LOCK_UN)
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            return False
        raise
    return True


def _is_current(fd: int, path: str) -> bool:
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (opened.st_dev, opened.st_ino) == (named.st_dev, named.st_ino)


def _truncate(fd: int, size: int, path: str, queue_id: str | None) -> None:
    """Undo a failed append, so no partial message stays in the file."""
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError as exc:
        log.error(
            "%s: cannot truncate mbox %s back to %d bytes, it may end with a partial message: %s",
            queue_id,
            path,
            size,
            exc,
        )
