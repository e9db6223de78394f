"""The queue's storage primitives: durable spool files and the SQLite index.

``store`` puts a message file in the spool in the one order that survives a
crash at any instant: written under ``tmp/``, ``fsync``'d, hard-linked into
``spool/`` (a link never replaces an existing file, unlike ``rename``),
``spool/`` ``fsync``'d. ``connect`` opens the index in WAL mode with
``synchronous=FULL``, so that a commit is on disk when it returns.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["VALID_ID", "begin", "connect", "domain_of", "fsync_dir", "store", "unlink"]

VALID_ID = re.compile(r"[0-9A-Za-z]{1,64}")
_CHUNK = 1 << 20
_O_BINARY = getattr(os, "O_BINARY", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# link() fails with these where the filesystem has no hard links (FAT, some
# FUSE and network filesystems); rename() is then the way in.
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})

# Column names are the QueuedMessage / QueuedRecipient field names, so that
# rows map onto them by name. messages.open_recipients is kept equal to the
# count of open recipients (in the same commit as any status change) so that
# finding finished messages needs no scan. recipients.success_owed is set in the
# commit that records a delivery whose success notice we must send, and cleared in
# the one that queues the notice, as the *_notified flags are set with theirs.
SCHEMA_VERSION = 2  # PRAGMA user_version: raise it, with a migration, when SCHEMA changes
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS messages (
        id TEXT PRIMARY KEY,
        mail_from TEXT NOT NULL,
        created REAL NOT NULL,
        dsn_ret TEXT,
        dsn_envid TEXT,
        smtputf8 INTEGER NOT NULL,
        body_type TEXT,
        size INTEGER NOT NULL,
        open_recipients INTEGER NOT NULL  -- pending or deferred: 0 means finished
    )""",
    "CREATE INDEX IF NOT EXISTS messages_open ON messages (open_recipients, created)",
    """CREATE TABLE IF NOT EXISTS recipients (
        queue_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        address TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'deferred', 'delivered', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL,
        last_code INTEGER,
        last_enhanced TEXT,
        last_text TEXT NOT NULL DEFAULT '',
        remote_host TEXT,
        last_attempt REAL,
        notify TEXT NOT NULL,
        orcpt_type TEXT,
        orcpt TEXT,
        delay_notified INTEGER NOT NULL DEFAULT 0,
        failure_notified INTEGER NOT NULL DEFAULT 0,
        success_owed INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (queue_id, position)
    )""",
    "CREATE INDEX IF NOT EXISTS recipients_due ON recipients (status, next_attempt)",
    "CREATE INDEX IF NOT EXISTS recipients_address ON recipients (queue_id, address)",
)
# MIGRATIONS[v] brings an index of version v to v + 1, in the transaction that opens
# it, so a queue written by an older fastsmtp keeps working. Version 1 queued a success
# notice just after the delivery's commit: its delivered recipients owe none.
MIGRATIONS = {
    1: ("ALTER TABLE recipients ADD COLUMN success_owed INTEGER NOT NULL DEFAULT 0",),
}


def connect(path: Path) -> sqlite3.Connection:
    """The index at ``path``: WAL, ``synchronous=FULL``, schema in place (migrated if older).

    ``check_same_thread=False``: the ``Queue`` serialises use with its own
    lock, so the connection may move between the scheduler's threads.
    """
    db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.row_factory = sqlite3.Row
        db.create_function("domain_of", 1, domain_of, deterministic=True)
        with begin(db):
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"{path} has queue format {version}; this fastsmtp reads up to "
                    f"{SCHEMA_VERSION}: upgrade fastsmtp"
                )
            for old in range(version or SCHEMA_VERSION, SCHEMA_VERSION):  # 0: a new index
                for statement in MIGRATIONS[old]:
                    db.execute(statement)
            for statement in SCHEMA:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        db.close()
        raise
    return db


@contextlib.contextmanager
def begin(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: the write lock first (no upgrade deadlock), then commit."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # the body failed, or COMMIT did (busy, disk full)
            db.execute("ROLLBACK")
        raise


def store(
    tmp: Path, spool: Path, content: bytes | BinaryIO, queue_id: str | None
) -> tuple[str, int]:
    """Put ``content`` durably at ``spool/<id>``; ``(id, size)``.

    ``queue_id`` is used if given (``FileExistsError`` if taken); otherwise
    a new id is made, and made again in the unlikely case it is taken.
    """
    for _ in range(5):
        new_id = queue_id or _new_id()
        temporary, final = tmp / new_id, spool / new_id
        try:
            size = _write_synced(temporary, content)
        except FileExistsError:
            if queue_id is not None:
                raise
            continue
        try:
            os.link(temporary, final)
        except FileExistsError:
            if queue_id is not None:
                raise
            continue
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS or final.exists():
                raise
            os.rename(temporary, final)
        finally:
            unlink(temporary)
        fsync_dir(spool)
        return new_id, size
    raise FileExistsError(errno.EEXIST, "no free queue id after 5 tries")


def domain_of(address: str) -> str:
    """The domain of an address, lowercased, without a trailing dot ("" if none)."""
    return address.rpartition("@")[2].lower().rstrip(".") if "@" in address else ""


def _new_id() -> str:
    """Microseconds since the epoch and 24 random bits, in hex: sortable and unique."""
    return f"{time.time_ns() // 1000:X}{secrets.token_hex(3).upper()}"


def _write_synced(path: Path, content: bytes | BinaryIO) -> int:
    """Write ``content`` (bytes, or a file read in chunks) to a new file; fsync; its size."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC | _O_BINARY, 0o600)
    try:
        with open(fd, "wb") as f:
            if isinstance(content, bytes | bytearray | memoryview):
                f.write(content)
            else:
                while chunk := content.read(_CHUNK):
                    f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
            return f.tell()
    except BaseException:
        unlink(path)
        raise


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a name added or removed) durable."""
    fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unlink(path: Path) -> None:
    """Remove a file that may already be gone."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
