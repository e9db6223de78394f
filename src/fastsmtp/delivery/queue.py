"""The durable outbound queue: message files in a spool directory, state in SQLite.

Theory of operation. A queue directory holds::

    DIR/tmp/<id>     a message being written (never read; removed on open)
    DIR/spool/<id>   a message's content, exactly as received; never rewritten
    DIR/queue.db     SQLite in WAL mode: one row per message (the envelope),
                     one per recipient (its delivery state)
    DIR/lock         flock()ed: shared by every open Queue, exclusive for recovery

``enqueue`` makes a message durable in this order, and returns (so that the
server may answer ``250`` to DATA) only at the end: the content is written
to ``tmp/<id>`` and ``fsync``'d; it is hard-linked to ``spool/<id>`` (which
never replaces an existing file) and ``spool/`` is ``fsync``'d; then the
index rows are committed (``synchronous=FULL``: the commit is on disk). A
``kill -9`` before the commit leaves at most a spool file without a row: it
was never acknowledged, and the next ``Queue`` that opens the directory
alone removes it. After the commit the message survives anything short of
a disk failure.

Recipient state only moves forward: ``pending`` (never tried) and
``deferred`` (tried, will retry at ``next_attempt``) may become
``delivered`` or ``failed``; those two are final, and nothing (``record``,
``retry``, ``flush``, ``bounce``) takes a recipient out of them. Each
change is one SQLite transaction, so a kill leaves every recipient either
as it was or as recorded, and a delivered recipient is never due again.
Only the unavoidable window remains (RFC 1047; RFC 5321 §4.1.1.4 asks to
keep it short): a peer's ``250`` received, the process killed before
``record`` commits it; that recipient is tried again.

Reports (bounces, delay notices) are queued by ``report`` in the same
commit that marks their recipients as reported: never lost, never twice.
A success notice (NOTIFY=SUCCESS) is a debt: ``record`` sets
``success_owed`` in the commit that records the delivery, and ``report``
clears it in the one that queues the notice.

Several processes may open one queue: the server's scheduler and the
``fastsmtp queue`` admin commands. SQLite serialises their writes
(``BEGIN IMMEDIATE``, a busy timeout); a running scheduler sees an admin's
``retry``, ``flush`` or ``bounce`` because it polls ``due``.

Threads: one SQLite connection per ``Queue``, opened with
``check_same_thread=False`` and used under a lock, so the scheduler may call
any method from ``asyncio.to_thread``. The methods block (disk I/O,
``fsync``): call them from a thread, never on the event loop.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from ..session import RecipientDSN
from . import _spool
from ._spool import begin
from .bounce import ReportKind, make_bounce, needs_utf8, report_envelope, wants_bounce

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock(), so recovery on every open
    fcntl = None  # type: ignore[assignment]

__all__ = ["Queue", "QueuedMessage", "QueuedRecipient", "RecipientStatus"]

log = logging.getLogger("fastsmtp.queue")

RecipientStatus = Literal["pending", "deferred", "delivered", "failed"]
_OPEN = ("pending", "deferred")
_IS_OPEN = "status IN ('pending', 'deferred')"
_MESSAGE_COLUMNS = "id, mail_from, created, dsn_ret, dsn_envid, smtputf8, body_type, size"
# What an admin's `bounce` and a lost spool file record as the last reply:
# states kept in the index for mailq and bounces, not replies sent on the wire.
_ADMIN_BOUNCE = (550, "5.0.0", "bounced by the administrator")
_LOST = (None, "5.3.0", "message file missing from the spool; the content is lost")
# The recipient column that a report of each kind settles, and its settled value:
# failure and delay reports set a "reported" flag; a success notice clears the
# debt that ``record`` left. ``report`` writes it in the commit that queues it.
_SETTLED: dict[ReportKind, tuple[str, bool]] = {
    "failure": ("failure_notified", True),
    "delay": ("delay_notified", True),
    "success": ("success_owed", False),
}


@dataclass(slots=True)
class QueuedRecipient:
    """One recipient of a queued message and where its delivery stands.

    ``status`` is ``pending`` (not tried yet), ``deferred`` (a temporary
    failure; tried again at ``next_attempt``), ``delivered`` or ``failed``.
    ``last_code``/``last_enhanced``/``last_text``/``remote_host`` are the
    last reply and who gave it, ``last_attempt`` when (for ``mailq`` and
    for bounces). ``dsn`` is the NOTIFY/ORCPT of its RCPT.
    ``delay_notified``/``failure_notified``: a delay notice or failure
    report about it is already queued, so neither is sent twice.
    ``success_owed``: it is delivered and its success notice is not queued
    yet (the scheduler queues it, and clears this, in one commit).
    """

    address: str
    status: RecipientStatus
    attempts: int = 0
    next_attempt: float | None = None
    last_code: int | None = None
    last_enhanced: str | None = None
    last_text: str = ""
    remote_host: str | None = None
    last_attempt: float | None = None
    dsn: RecipientDSN = field(default_factory=RecipientDSN)
    delay_notified: bool = False
    failure_notified: bool = False
    success_owed: bool = False

    @property
    def open(self) -> bool:
        """Still to be delivered: ``pending`` or ``deferred``."""
        return self.status in _OPEN


@dataclass(slots=True)
class QueuedMessage:
    """A queued message's envelope (the content is in ``Queue.content_path``).

    ``created`` is the arrival time (seconds since the epoch), ``size`` the
    content's length in octets. ``dsn_ret``/``dsn_envid`` are MAIL's RET and
    ENVID (RFC 3461), ``smtputf8``/``body_type`` its SMTPUTF8 and BODY,
    which the onward delivery repeats.
    """

    id: str
    mail_from: str
    created: float
    dsn_ret: str | None
    dsn_envid: str | None
    smtputf8: bool
    body_type: str | None
    size: int
    recipients: list[QueuedRecipient]

    @property
    def finished(self) -> bool:
        """No recipient is left to deliver."""
        return not any(r.open for r in self.recipients)


class Queue:
    """The durable queue in ``directory`` (created, with its index, if missing).

    Opening the queue while no other process has it open recovers from a
    crash: temporary files are removed, spool files without an index row
    (never acknowledged) are removed, and index rows without a spool file
    are logged and their open recipients marked failed. While another
    process has it open (a running server, say) that is skipped: a file
    without a row may then be a message being queued right now.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._spool = self.directory / "spool"
        self._tmp = self.directory / "tmp"
        for path in (self.directory, self._spool, self._tmp):
            if not path.is_dir():
                path.mkdir(mode=0o700, parents=True, exist_ok=True)
                _spool.fsync_dir(path.parent)
        self._lock = threading.Lock()
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        self._lock_fd = os.open(self.directory / "lock", flags, 0o600)
        try:
            self._db = _spool.connect(self.directory / "queue.db")
            if fcntl is None:
                self._recover()
                return
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # another process has the queue open: no recovery now
            else:
                self._recover()
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH)  # held until close()
        except BaseException:
            with contextlib.suppress(AttributeError):
                self._db.close()
            os.close(self._lock_fd)
            raise

    # --- writing a message --------------------------------------------------

    def enqueue(
        self,
        mail_from: str,
        recipients: Sequence[str],
        content: bytes | BinaryIO,
        *,
        rcpt_dsn: Sequence[RecipientDSN] | None = None,
        dsn_ret: str | None = None,
        dsn_envid: str | None = None,
        smtputf8: bool = False,
        body_type: str | None = None,
        now: float | None = None,
        queue_id: str | None = None,
    ) -> str:
        """Store a message durably and return its queue id.

        When this returns, the content is ``fsync``'d in the spool and the
        index rows are committed: the caller may acknowledge the message.
        ``content`` is bytes or a binary file (read in chunks from its
        current position). ``rcpt_dsn`` is parallel to ``recipients``; a
        recipient given twice is queued once (with the first one's DSN).
        ``queue_id`` reuses an id already given out (the server's, from the
        ``250`` reply); it must be 1-64 letters and digits and not in the
        queue (``FileExistsError``). By default a new unique id is made.
        """
        dsns = [RecipientDSN()] * len(recipients) if rcpt_dsn is None else builtins.list(rcpt_dsn)
        if len(dsns) != len(recipients):
            raise ValueError("rcpt_dsn must have one entry per recipient")
        unique: dict[str, RecipientDSN] = {}
        for address, dsn in zip(recipients, dsns, strict=True):
            unique.setdefault(address, dsn)
        if not unique:
            raise ValueError("a message needs at least one recipient")
        if queue_id is not None and not _spool.VALID_ID.fullmatch(queue_id):
            raise ValueError(f"queue id {queue_id!r} must be 1-64 letters and digits")
        now = time.time() if now is None else now
        envelope = (mail_from, now, dsn_ret, dsn_envid, smtputf8, body_type)
        return self._commit(content, queue_id, envelope, unique, None)

    def _commit(
        self,
        content: bytes | BinaryIO,
        queue_id: str | None,
        envelope: tuple[object, ...],
        recipients: dict[str, RecipientDSN],
        mark: tuple[str, Sequence[str], ReportKind] | None,
    ) -> str:
        """Spool file first, then the index rows (and ``mark``) in one commit."""
        new_id, size = _spool.store(self._tmp, self._spool, content, queue_id)
        now = envelope[1]
        try:
            with self._locked() as db, begin(db):
                db.execute(
                    f"INSERT INTO messages ({_MESSAGE_COLUMNS}, open_recipients)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (new_id, *envelope, size, len(recipients)),
                )
                db.executemany(
                    "INSERT INTO recipients (queue_id, position, address, status, next_attempt,"
                    " notify, orcpt_type, orcpt) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?)",
                    [
                        (new_id, i, address, now, ",".join(sorted(dsn.notify)), *orcpt)
                        for i, (address, dsn) in enumerate(recipients.items())
                        for orcpt in [dsn.orcpt or (None, None)]
                    ],
                )
                if mark is not None:
                    _mark(db, *mark)
        except BaseException as exc:
            _spool.unlink(self._spool / new_id)  # never acknowledged
            if isinstance(exc, sqlite3.IntegrityError):
                raise FileExistsError(f"queue id {new_id} is already in the queue") from None
            raise
        return new_id

    def report(
        self,
        message: QueuedMessage,
        recipients: Sequence[QueuedRecipient],
        kind: ReportKind,
        *,
        reporting_mta: str,
        now: float,
        retry_until: float | None = None,
        size_limit: int = 0,
    ) -> str | None:
        """Queue the failure report (bounce) or delay notice about ``recipients``.

        The report (``bounce.make_bounce``) is queued from ``<>`` to the
        sender, and the recipients are marked as reported in the same
        commit, so a crash neither loses the report nor sends it twice.
        Recipients already reported (for this ``kind``) are skipped; those
        whose NOTIFY or null sender wants no report (``wants_bounce``) are
        only marked, with a log line for failures. Returns the report's
        queue id, or ``None`` when no report was due. A message whose
        content is lost is reported without it. A ``success`` notice is
        only for recipients that ``record`` left ``success_owed``; this
        commit clears the debt, so a crash on either side of it neither
        loses the notice nor sends it twice.
        """
        column, settled = _SETTLED[kind]
        todo = [r for r in recipients if getattr(r, column) != settled]
        wanted = [r for r in todo if wants_bounce(message, r, kind)]
        for r in todo:
            if kind == "failure" and r not in wanted:
                notify = ",".join(sorted(r.dsn.notify))
                why = "the sender is <>" if message.mail_from == "" else f"NOTIFY={notify}"
                log.warning("%s: <%s> failed; no report (%s)", message.id, r.address, why)
        mark = (message.id, [r.address for r in todo], kind)
        if not wanted:
            if todo:
                with self._locked() as db, begin(db):
                    _mark(db, *mark)
            return None
        try:
            original: BinaryIO = open(self.content_path(message.id), "rb")  # noqa: SIM115
        except FileNotFoundError:
            original = io.BytesIO()
        with original:
            content = make_bounce(
                message,
                wanted,
                original,
                reporting_mta=reporting_mta,
                kind=kind,
                now=now,
                retry_until=retry_until,
                size_limit=size_limit,
            )
        smtputf8, body_type = report_envelope(content, needs_utf8(message, wanted))
        envelope = ("", now, None, None, smtputf8, body_type)
        return self._commit(content, None, envelope, {message.mail_from: RecipientDSN()}, mark)

    # --- reading -------------------------------------------------------------

    def due(self, now: float, limit: int | None = None) -> builtins.list[QueuedMessage]:
        """Messages that need the scheduler, oldest first, at most ``limit``.

        That is: a ``pending`` or ``deferred`` recipient whose
        ``next_attempt`` is ``<= now``, or no open recipient left
        (``finished``: the scheduler reports its failed recipients, then
        removes it; an admin's ``bounce`` and a crash after the last
        ``record`` leave messages so).
        """
        # Both halves are index lookups (recipients_due, messages_open).
        sql = (
            "SELECT id FROM messages WHERE id IN (SELECT queue_id FROM recipients"
            " WHERE status = 'pending' AND next_attempt <= ?1 UNION SELECT queue_id"
            " FROM recipients WHERE status = 'deferred' AND next_attempt <= ?1"
            " UNION SELECT id FROM messages WHERE open_recipients = 0)"
            " ORDER BY created, id LIMIT ?2"
        )
        with self._locked() as db:
            rows = db.execute(sql, (now, -1 if limit is None else limit)).fetchall()
            return _load(db, [row[0] for row in rows])

    def next_due(self) -> float | None:
        """When ``due`` will next return something (``None``: the queue is idle).

        The earliest ``next_attempt`` of an open recipient, or ``0.0`` when a
        finished message waits to be reported and removed. Changes made by
        another process (``fastsmtp queue flush``) are not signalled: sleep
        until this, but no longer than a short poll interval.
        """
        sql = (
            "SELECT min(next_attempt) FROM recipients WHERE status = 'pending'"
            " UNION ALL SELECT min(next_attempt) FROM recipients WHERE status = 'deferred'"
            " UNION ALL SELECT 0.0 FROM (SELECT 1 FROM messages WHERE open_recipients = 0 LIMIT 1)"
        )
        with self._locked() as db:
            times = [row[0] for row in db.execute(sql) if row[0] is not None]
        return min(times, default=None)

    def get(self, queue_id: str) -> QueuedMessage | None:
        """The message with this id, or ``None``."""
        with self._locked() as db:
            found = _load(db, [queue_id])
        return found[0] if found else None

    def list(self) -> builtins.list[QueuedMessage]:
        """Every queued message, oldest first."""
        with self._locked() as db:
            rows = db.execute("SELECT id FROM messages ORDER BY created, id").fetchall()
            return _load(db, [row[0] for row in rows])

    def holds(self, domains: Sequence[str]) -> bool:
        """Whether an open recipient of one of ``domains`` (lowercase) is queued (ATRN)."""
        marks = ",".join("?" * len(domains))
        sql = f"SELECT 1 FROM recipients WHERE {_IS_OPEN} AND domain_of(address) IN ({marks})"
        with self._locked() as db:
            return db.execute(sql + " LIMIT 1", tuple(domains)).fetchone() is not None

    def content_path(self, queue_id: str) -> Path:
        """The spool file holding the message's content: read it, never write it."""
        if not _spool.VALID_ID.fullmatch(queue_id):
            raise KeyError(queue_id)
        return self._spool / queue_id

    def finished(self, queue_id: str) -> bool:
        """No recipient is pending or deferred (true for an id not in the queue)."""
        sql = "SELECT open_recipients FROM messages WHERE id = ?"
        with self._locked() as db:
            row = db.execute(sql, (queue_id,)).fetchone()
        return row is None or row[0] == 0

    # --- delivery results ----------------------------------------------------

    def record(
        self,
        queue_id: str,
        recipient: str,
        status: Literal["delivered", "deferred", "failed"],
        *,
        code: int | None,
        enhanced: str | None,
        text: str,
        remote_host: str | None,
        next_attempt: float | None,
        now: float,
        dsn_relayed: bool = False,
    ) -> bool:
        """Record one delivery attempt for ``recipient`` (committed on return).

        ``next_attempt`` is when a ``deferred`` recipient is due again
        (``now`` if ``None``). Only an open recipient changes: one already
        delivered or failed keeps its state (an admin may have bounced it
        meanwhile), and a message deleted meanwhile is ignored; both return
        ``False`` with a log line. A recipient delivered with NOTIFY=SUCCESS
        is left ``success_owed`` in the same commit, unless ``dsn_relayed``:
        the next server offers DSN and was given NOTIFY, so it reports
        (RFC 3461 §5.2.2).
        """
        if status not in ("delivered", "deferred", "failed"):
            raise ValueError(f"cannot record status {status!r}")
        due = (now if next_attempt is None else next_attempt) if status == "deferred" else None
        owes = status == "delivered" and not dsn_relayed
        with self._locked() as db, begin(db):
            changed = db.execute(
                "UPDATE recipients SET status = ?, attempts = attempts + 1, next_attempt = ?,"
                " last_code = ?, last_enhanced = ?, last_text = ?, remote_host = ?,"
                " last_attempt = ?, success_owed = ? AND instr(',' || notify || ',', ',SUCCESS,')"
                f" WHERE queue_id = ? AND address = ? AND {_IS_OPEN}",
                (status, due, code, enhanced, text, remote_host, now, owes, queue_id, recipient),
            ).rowcount
            if changed and status != "deferred":
                _count_open(db, queue_id)
        if not changed:
            log.info("%s: <%s> not open in the queue; %s not recorded", queue_id, recipient, status)
        return bool(changed)

    # --- administration (postqueue / postsuper) ------------------------------

    def retry(self, queue_id: str, now: float) -> None:
        """Make every open recipient of the message due now (``KeyError`` if unknown)."""
        with self._locked() as db, begin(db):
            _require(db, queue_id)
            sql = f"UPDATE recipients SET next_attempt = ? WHERE queue_id = ? AND {_IS_OPEN}"
            db.execute(sql, (now, queue_id))

    def flush(self, domain: str | None, now: float, *, subdomains: bool = False) -> int:
        """Make deferred recipients (of ``domain`` only, if given) due now; how many.

        ``subdomains``: also those of every subdomain of ``domain`` (ETRN ``@domain``).
        """
        sql = "UPDATE recipients SET next_attempt = ? WHERE status = 'deferred'"
        args: tuple[object, ...] = (now,)
        if domain:
            name = _spool.domain_of(f"@{domain}")
            sql += " AND (domain_of(address) = ?"
            args += (name,)
            if subdomains:  # a suffix test, not LIKE: "_" in a name is no wildcard
                sql += " OR substr(domain_of(address), -?) = ?"
                args += (len(name) + 1, f".{name}")
            sql += ")"
        with self._locked() as db, begin(db):
            return db.execute(sql, args).rowcount

    def bounce(self, queue_id: str, now: float) -> None:
        """Fail every open recipient ("5.0.0 bounced by the administrator").

        The message is then ``finished``: the scheduler's next ``due`` poll
        returns it, and it reports the failures to the sender and removes
        it. ``KeyError`` if the id is not in the queue.
        """
        with self._locked() as db, begin(db):
            _require(db, queue_id)
            _fail_open(db, queue_id, _ADMIN_BOUNCE, now)

    def delete(self, queue_id: str) -> None:
        """Remove the message without any report (``KeyError`` if unknown)."""
        if not self._remove(queue_id):
            raise KeyError(queue_id)

    def remove(self, queue_id: str) -> None:
        """Remove a finished message (no error if it is already gone)."""
        self._remove(queue_id)

    def _remove(self, queue_id: str) -> bool:
        # Rows first: a crash in between leaves a file without a row, which
        # recovery removes; the other order would leave a row without content.
        with self._locked() as db, begin(db):
            db.execute("DELETE FROM recipients WHERE queue_id = ?", (queue_id,))
            found = db.execute("DELETE FROM messages WHERE id = ?", (queue_id,)).rowcount
        if found:
            _spool.unlink(self.content_path(queue_id))
        return bool(found)

    def close(self) -> None:
        """Close the index and release the directory (again: nothing happens)."""
        with self._lock:
            if self._lock_fd < 0:
                return
            self._db.close()
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._db

    def _recover(self) -> None:
        """Undo what a crash left half-done (only while no other process has the queue)."""
        for name in os.listdir(self._tmp):
            _spool.unlink(self._tmp / name)
        on_disk = set(os.listdir(self._spool))
        with self._locked() as db, begin(db):
            indexed = {row[0] for row in db.execute("SELECT id FROM messages")}
            for queue_id in sorted(indexed - on_disk):
                log.error("%s: %s; open recipients marked failed", queue_id, _LOST[2])
                _fail_open(db, queue_id, _LOST, time.time())
        for name in sorted(on_disk - indexed):
            log.warning("%s: removing a spool file that was never acknowledged", name)
            _spool.unlink(self._spool / name)
        if on_disk - indexed:
            _spool.fsync_dir(self._spool)


def _load(db: sqlite3.Connection, ids: Sequence[str]) -> list[QueuedMessage]:
    """Messages (with their recipients) by id, skipping ids not in the index."""
    messages = []
    for queue_id in ids:
        row = db.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?", (queue_id,)
        ).fetchone()
        if row is None:
            continue
        sql = "SELECT * FROM recipients WHERE queue_id = ? ORDER BY position"
        recipients = [_recipient(r) for r in db.execute(sql, (queue_id,))]
        messages.append(
            QueuedMessage(**{**dict(row), "smtputf8": bool(row["smtputf8"])}, recipients=recipients)
        )
    return messages


def _recipient(row: sqlite3.Row) -> QueuedRecipient:
    fields = dict(row)
    notify, orcpt_type, orcpt = fields.pop("notify"), fields.pop("orcpt_type"), fields.pop("orcpt")
    del fields["queue_id"], fields["position"]
    for flag in ("delay_notified", "failure_notified", "success_owed"):
        fields[flag] = bool(fields[flag])
    return QueuedRecipient(
        **fields,
        dsn=RecipientDSN(
            notify=frozenset(notify.split(",")) if notify else frozenset(),
            orcpt=(orcpt_type, orcpt) if orcpt_type is not None else None,
        ),
    )


def _mark(
    db: sqlite3.Connection, queue_id: str, recipients: Sequence[str], kind: ReportKind
) -> None:
    column, settled = _SETTLED[kind]
    db.executemany(
        f"UPDATE recipients SET {column} = ? WHERE queue_id = ? AND address = ?",
        [(settled, queue_id, address) for address in recipients],
    )


def _fail_open(
    db: sqlite3.Connection, queue_id: str, reply: tuple[int | None, str, str], now: float
) -> None:
    """Mark every open recipient of ``queue_id`` failed with ``reply`` as the reason."""
    db.execute(
        "UPDATE recipients SET status = 'failed', next_attempt = NULL, last_code = ?,"
        " last_enhanced = ?, last_text = ?, remote_host = NULL, last_attempt = ?"
        f" WHERE queue_id = ? AND {_IS_OPEN}",
        (*reply, now, queue_id),
    )
    _count_open(db, queue_id)


def _count_open(db: sqlite3.Connection, queue_id: str) -> None:
    """Bring ``messages.open_recipients`` up to date after a status change."""
    db.execute(
        "UPDATE messages SET open_recipients = (SELECT count(*) FROM recipients"
        f" WHERE queue_id = ?1 AND {_IS_OPEN}) WHERE id = ?1",
        (queue_id,),
    )


def _require(db: sqlite3.Connection, queue_id: str) -> None:
    if db.execute("SELECT 1 FROM messages WHERE id = ?", (queue_id,)).fetchone() is None:
        raise KeyError(queue_id)
