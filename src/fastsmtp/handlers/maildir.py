"""``Maildir``: deliver each accepted message into a Maildir, durably.

The Maildir format is D. J. Bernstein's (https://cr.yp.to/proto/maildir.html):
a message is written under a unique name in ``tmp/``, made durable there,
and only then given a name in ``new/``, so a reader never sees a partial
message and a crash never leaves one in ``new/``.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import shutil
import socket
import time

from ..handler import Handler
from ..protocol import replies as R
from ..protocol.replies import Reply
from ..session import Envelope, Session

__all__ = ["Maildir"]

log = logging.getLogger(__name__)

# link() fails with these where the filesystem has no hard links (FAT, some
# FUSE and network filesystems); rename() is the spec's other way to move.
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})


class Maildir(Handler):
    """Deliver every accepted message into the Maildir at ``path``.

    ``path`` and its ``tmp/``, ``new/`` and ``cur/`` subdirectories are
    created (mode 0700) when missing; an ``OSError`` from that is raised
    here, at construction, not at the first message.

    Each message is stored once, in one file, whatever the number of
    recipients: this is a single-user mailbox. The file holds, in order:

    * ``Return-Path: <sender>`` (``<>`` for the null sender), as the final
      delivery MTA adds it (RFC 5321 §4.4) and as Postfix's local delivery
      does; mail readers take the bounce address from it.
    * the message as ``envelope.content`` has it: fastsmtp's ``Received:``
      header first, dot-unstuffed, CRLF line endings, 8-bit and UTF-8
      bytes untouched. The ``Return-Path:`` line ends in CRLF as well, so
      the file has one kind of line ending. The message is copied from
      ``envelope.open_content()`` in 1 MiB blocks, so a spooled message is
      never loaded whole.

    No ``Delivered-To:`` is added: one file serves every recipient of the
    transaction, and the ``Received:`` header already names the recipient
    when there is only one. Loop detection belongs to forwarding, not here.

    Delivery (the Maildir spec): the file is created in ``tmp/`` under a
    unique name (``seconds.M<usec>P<pid>Q<count>R<random>.<host>``, the
    host name with ``/`` and ``:`` written as ``\\057`` and ``\\072``),
    written, flushed and ``fsync``'d; then linked into ``new/`` (renamed
    where the filesystem has no hard links), ``new/`` itself is
    ``fsync``'d and the ``tmp/`` name removed. Only then does the hook
    return, so the 250 reply follows a durable delivery. On any
    ``OSError`` whatever was created is removed, the error is logged and
    the client gets ``451 4.3.0``: it keeps the message and retries later.

    ``on_message`` is a plain function: the server runs it in its thread
    pool, never on the event loop.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._tmp = os.path.join(self.path, "tmp")
        self._new = os.path.join(self.path, "new")
        self._host = _escape_host(socket.gethostname() or "localhost")
        made_root = not os.path.isdir(self.path)
        if made_root:
            os.makedirs(self.path, 0o700)  # FileExistsError if it is a file
        made_sub = False
        for directory in (self._tmp, self._new, os.path.join(self.path, "cur")):
            if not os.path.isdir(directory):
                os.mkdir(directory, 0o700)  # FileExistsError if it is a file
                made_sub = True
        # Make new directories durable, as the messages in them will be.
        if made_root or made_sub:
            _fsync_dir(self.path)
        if made_root:
            _fsync_dir(os.path.dirname(os.path.abspath(self.path)))

    def on_message(self, session: Session, envelope: Envelope) -> Reply | None:
        """Store the message in ``new/``; return only once it is durable."""
        name = self._unique_name()
        tmp = os.path.join(self._tmp, name)
        new = os.path.join(self._new, name)
        created = linked = renamed = False
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC | _O_BINARY, 0o600)
            created = True
            with open(fd, "wb") as f, envelope.open_content() as content:
                # Closing f closes fd; close() errors (NFS) count too.
                f.write(_return_path(envelope.mail_from or ""))
                shutil.copyfileobj(content, f, _COPY_BLOCK)
                f.flush()
                os.fsync(f.fileno())
            try:
                # link() never replaces an existing message, rename() would.
                os.link(tmp, new)
                linked = True
            except OSError as exc:
                if exc.errno not in _NO_HARD_LINKS:
                    raise
                os.rename(tmp, new)
                renamed = True
            _fsync_dir(self._new)
        except OSError as exc:
            # Undo everything, so that the client's retry neither duplicates
            # nor finds a partial message.
            if linked or renamed:
                _remove(new)
            if created and not renamed:
                _remove(tmp)
            log.error(
                "%s: cannot deliver to Maildir %s (451, the client will retry): %s",
                envelope.queue_id,
                self.path,
                exc,
            )
            return R.HANDLER_ERROR
        if linked:
            # Delivered already; a leftover in tmp/ is harmless (readers
            # clean tmp/), so a failure here only gets a warning.
            try:
                os.unlink(tmp)
            except OSError as exc:
                log.warning("%s: cannot remove %s: %s", envelope.queue_id, tmp, exc)
        return None

    def _unique_name(self) -> str:
        # The spec's seconds, M(icroseconds), P(id), Q(deliveries); R adds randomness
        # for PID namespaces (containers) sharing one Maildir and host name.
        now = time.time_ns()
        seconds, usec = divmod(now // 1000, 1_000_000)
        return (
            f"{seconds}.M{usec}P{os.getpid()}Q{next(_deliveries)}"
            f"R{os.urandom(4).hex()}.{self._host}"
        )


# Maildir spec "Qn": deliveries made by this process (next() is atomic).
_deliveries = itertools.count(1)
_O_CLOEXEC: int = getattr(os, "O_CLOEXEC", 0)
_O_BINARY: int = getattr(os, "O_BINARY", 0)  # Windows
_COPY_BLOCK = 1024 * 1024


def _escape_host(host: str) -> str:
    # The Maildir spec escapes these two in the host part, in octal.
    return host.replace("/", "\\057").replace(":", "\\072")


def _return_path(sender: str) -> bytes:
    # The parser refuses CR and LF in addresses; never let one split the header.
    sender = sender.replace("\r", "").replace("\n", "")
    return f"Return-Path: <{sender}>\r\n".encode()


def _fsync_dir(path: str) -> None:
    """Make the directory's entries durable (POSIX; Windows cannot open a directory)."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.error("cannot remove %s: %s", path, exc)
