"""The durable queue: what goes in comes out, state moves only forward, recovery."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastsmtp.delivery._spool import SCHEMA_VERSION
from fastsmtp.delivery.queue import Queue
from fastsmtp.session import RecipientDSN

CONTENT = b"Received: from x\r\nSubject: hello\r\n\r\nbody line\r\n"
T0 = 1_800_000_000.0


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[Queue]:
    q = Queue(tmp_path / "q")
    yield q
    q.close()


def test_enqueue_stores_content_and_envelope(queue: Queue) -> None:
    dsn = RecipientDSN(frozenset({"FAILURE", "DELAY"}), ("rfc822", "Bob@Example.org"))
    qid = queue.enqueue(
        "alice@example.com",
        ["bob@example.org", "carol@example.net", "bob@example.org"],
        CONTENT,
        rcpt_dsn=[dsn, RecipientDSN(), RecipientDSN(frozenset({"NEVER"}))],
        dsn_ret="HDRS",
        dsn_envid="env-1",
        smtputf8=True,
        body_type="8BITMIME",
        now=T0,
    )
    assert queue.content_path(qid).read_bytes() == CONTENT
    message = queue.get(qid)
    assert message is not None
    assert (message.mail_from, message.created, message.size) == (
        "alice@example.com",
        T0,
        len(CONTENT),
    )
    assert (message.dsn_ret, message.dsn_envid) == ("HDRS", "env-1")
    assert (message.smtputf8, message.body_type) == (True, "8BITMIME")
    # a duplicate recipient is queued once, with the first one's DSN
    assert [r.address for r in message.recipients] == ["bob@example.org", "carol@example.net"]
    bob, carol = message.recipients
    assert bob.dsn == dsn and carol.dsn == RecipientDSN()
    assert (bob.status, bob.attempts, bob.next_attempt) == ("pending", 0, T0)
    assert not bob.delay_notified and not bob.failure_notified
    assert not message.finished


def test_enqueue_copies_a_file_in_chunks(queue: Queue) -> None:
    big = b"X-Big: yes\r\n\r\n" + os.urandom(3 << 20)
    qid = queue.enqueue("", ["postmaster@example.org"], io.BytesIO(big), now=T0)
    assert queue.content_path(qid).read_bytes() == big
    message = queue.get(qid)
    assert message is not None and message.size == len(big) and message.mail_from == ""


class FailingFile(io.BytesIO):
    """Content whose reading fails half-way, as a full disk or a vanished client would."""

    def read(self, size: int | None = -1) -> bytes:
        if self.tell():
            raise OSError(28, "No space left on device")
        return super().read(1000)


def test_a_failed_enqueue_leaves_nothing_behind(queue: Queue) -> None:
    with pytest.raises(OSError, match="No space"):
        queue.enqueue("a@x.org", ["b@y.org"], FailingFile(b"x" * 5000))
    assert queue.list() == []
    assert os.listdir(queue.directory / "tmp") == os.listdir(queue.directory / "spool") == []


def test_ids_are_unique_and_a_given_id_is_used_once(queue: Queue) -> None:
    ids = {queue.enqueue("a@x.org", ["b@y.org"], CONTENT) for _ in range(50)}
    assert len(ids) == 50
    assert queue.enqueue("a@x.org", ["b@y.org"], CONTENT, queue_id="ABC123") == "ABC123"
    with pytest.raises(FileExistsError):
        queue.enqueue("a@x.org", ["b@y.org"], CONTENT, queue_id="ABC123")
    with pytest.raises(ValueError, match="letters and digits"):
        queue.enqueue("a@x.org", ["b@y.org"], CONTENT, queue_id="../etc")
    with pytest.raises(ValueError, match="at least one recipient"):
        queue.enqueue("a@x.org", [], CONTENT)
    assert len(queue.list()) == 51
    assert queue.content_path("ABC123").read_bytes() == CONTENT


def test_due_finished_and_limit(queue: Queue) -> None:
    assert queue.next_due() is None
    first = queue.enqueue("a@x.org", ["b@y.org", "c@z.org"], CONTENT, now=T0)
    second = queue.enqueue("a@x.org", ["d@y.org"], CONTENT, now=T0 + 1)
    assert queue.next_due() == T0
    assert queue.due(T0 - 1) == []
    assert [m.id for m in queue.due(T0)] == [first]
    assert [m.id for m in queue.due(T0 + 1)] == [first, second]
    assert [m.id for m in queue.due(T0 + 1, limit=1)] == [first]

    record = dict(remote_host="mx.y.org", now=T0 + 2)
    queue.record(first, "b@y.org", "delivered", code=250, enhanced="2.0.0", text="ok",
                 next_attempt=None, **record)  # fmt: skip
    queue.record(first, "c@z.org", "deferred", code=451, enhanced="4.3.0", text="later",
                 next_attempt=T0 + 600, **record)  # fmt: skip
    queue.record(second, "d@y.org", "failed", code=550, enhanced="5.1.1", text="no such user",
                 next_attempt=None, **record)  # fmt: skip
    # `second` is finished: due until the scheduler reports and removes it
    assert not queue.finished(first) and queue.finished(second)
    assert [m.id for m in queue.due(T0 + 10)] == [second]
    assert [m.id for m in queue.due(T0 + 600)] == [first, second]
    message = queue.get(first)
    assert message is not None
    b, c = message.recipients
    assert (b.status, b.attempts, b.last_code, b.remote_host) == ("delivered", 1, 250, "mx.y.org")
    assert (c.status, c.next_attempt, c.last_text, c.last_attempt) == (
        "deferred",
        T0 + 600,
        "later",
        T0 + 2,
    )
    assert queue.next_due() == 0.0  # `second` waits to be reported and removed
    queue.remove(second)
    assert queue.next_due() == T0 + 600
    queue.remove(second)  # already gone: no error
    assert queue.get(second) is None and not queue.content_path(second).exists()
    assert queue.finished(second)


def test_final_states_never_go_back(queue: Queue) -> None:
    qid = queue.enqueue("a@x.org", ["b@y.org", "c@y.org"], CONTENT, now=T0)
    args = dict(code=250, enhanced="2.0.0", text="ok", remote_host=None, next_attempt=None)
    assert queue.record(qid, "b@y.org", "delivered", now=T0, **args)
    assert not queue.record(qid, "b@y.org", "deferred", now=T0, **args)
    assert not queue.record(qid, "b@y.org", "failed", now=T0, **args)
    assert not queue.record(qid, "nobody@y.org", "delivered", now=T0, **args)
    assert not queue.record("NOSUCHID", "b@y.org", "delivered", now=T0, **args)
    queue.retry(qid, T0 + 5)
    queue.bounce(qid, T0 + 5)
    assert queue.flush(None, T0 + 5) == 0
    message = queue.get(qid)
    assert message is not None
    b, c = message.recipients
    assert (b.status, b.attempts, b.last_code) == ("delivered", 1, 250)
    assert (c.status, c.last_code, c.last_enhanced) == ("failed", 550, "5.0.0")
    assert "administrator" in c.last_text
    with pytest.raises(ValueError):
        queue.record(qid, "c@y.org", "pending", now=T0, **args)  # type: ignore[arg-type]


def test_admin_retry_flush_delete_and_unknown_ids(queue: Queue) -> None:
    one = queue.enqueue("a@x.org", ["b@y.org", "c@Z.org"], CONTENT, now=T0)
    two = queue.enqueue("a@x.org", ["d@z.org"], CONTENT, now=T0)
    later = dict(code=451, enhanced="4.4.1", text="timeout", remote_host=None, now=T0)
    for qid, rcpt in ((one, "b@y.org"), (one, "c@Z.org"), (two, "d@z.org")):
        queue.record(qid, rcpt, "deferred", next_attempt=T0 + 3600, **later)
    assert queue.due(T0 + 10) == []
    assert queue.flush("z.ORG.", T0 + 10) == 2  # domains compare without case
    due = queue.due(T0 + 10)
    assert [m.id for m in due] == [one, two]
    assert [r.next_attempt for r in due[0].recipients] == [T0 + 3600, T0 + 10]
    queue.retry(one, T0 + 20)
    assert all(r.next_attempt == T0 + 20 for r in queue.due(T0 + 20)[0].recipients)
    assert queue.flush(None, T0 + 30) == 3
    queue.delete(two)
    assert queue.get(two) is None and not queue.content_path(two).exists()
    # the domain is after the last "@", even with one in a quoted local part
    three = queue.enqueue("a@x.org", ['"d@y.org"@z.org'], CONTENT, now=T0)
    queue.record(three, '"d@y.org"@z.org', "deferred", next_attempt=T0 + 3600, **later)
    assert (queue.flush("y.org", T0), queue.flush("z.org", T0)) == (1, 2)
    for action in (queue.delete, lambda i: queue.retry(i, T0), lambda i: queue.bounce(i, T0)):
        with pytest.raises(KeyError):
            action("NOSUCHID")
    with pytest.raises(KeyError):
        queue.content_path("../../etc/passwd")


def test_report_once_in_the_same_commit(queue: Queue) -> None:
    qid = queue.enqueue("a@x.org", ["b@y.org", "c@y.org"], CONTENT, now=T0)
    queue.bounce(qid, T0 + 1)
    message = queue.get(qid)
    assert message is not None and message.finished
    report = queue.report(message, message.recipients, "failure", reporting_mta="mx.test", now=T0)
    assert report is not None
    sent = queue.get(report)
    assert sent is not None
    assert (sent.mail_from, [r.address for r in sent.recipients]) == ("", ["a@x.org"])
    assert b"report-type=delivery-status" in queue.content_path(report).read_bytes()
    again = queue.get(qid)
    assert again is not None and all(r.failure_notified for r in again.recipients)
    assert queue.report(again, again.recipients, "failure", reporting_mta="m", now=T0) is None
    # the bounce itself fails: never bounced, only marked
    queue.bounce(report, T0 + 2)
    bounced = queue.get(report)
    assert bounced is not None
    assert queue.report(bounced, bounced.recipients, "failure", reporting_mta="m", now=T0) is None
    assert (marked := queue.get(report)) is not None and marked.recipients[0].failure_notified
    assert len(queue.list()) == 2


def test_a_success_notice_is_owed_from_the_commit_that_records_the_delivery(
    queue: Queue,
) -> None:
    success = RecipientDSN(frozenset({"FAILURE", "SUCCESS"}))
    rcpts = ["b@y.org", "c@y.org", "d@y.org", "e@y.org"]
    dsns = [success, success, RecipientDSN(), success]
    qid = queue.enqueue("a@x.org", rcpts, CONTENT, rcpt_dsn=dsns, now=T0)
    ok = dict(code=250, enhanced="2.0.0", text="ok", remote_host="mx.y.org", next_attempt=None)
    queue.record(qid, "b@y.org", "delivered", now=T0, **ok)
    queue.record(qid, "c@y.org", "delivered", now=T0, dsn_relayed=True, **ok)  # c's MX reports
    queue.record(qid, "d@y.org", "delivered", now=T0, **ok)  # no NOTIFY=SUCCESS
    queue.record(qid, "e@y.org", "deferred", now=T0, **ok)
    message = queue.get(qid)
    assert message is not None
    assert [r.success_owed for r in message.recipients] == [True, False, False, False]
    assert not queue.record(qid, "b@y.org", "delivered", now=T0, **ok)  # closed: still owed once
    notice = queue.report(message, message.recipients, "success", reporting_mta="m", now=T0)
    assert notice is not None
    content = queue.content_path(notice).read_bytes()
    assert b"Final-Recipient: rfc822; b@y.org" in content and b"c@y.org" not in content
    settled = queue.get(qid)
    assert settled is not None and not any(r.success_owed for r in settled.recipients)
    # the notice's commit settled the debt: nothing is reported twice
    assert queue.report(settled, settled.recipients, "success", reporting_mta="m", now=T0) is None
    assert len(queue.list()) == 2


def test_report_honours_notify_and_survives_a_lost_file(queue: Queue) -> None:
    never = RecipientDSN(frozenset({"NEVER"}))
    delay = RecipientDSN(frozenset({"DELAY", "FAILURE"}))
    qid = queue.enqueue("a@x.org", ["b@y.org", "c@y.org"], CONTENT, rcpt_dsn=[never, delay])
    message = queue.get(qid)
    assert message is not None
    assert queue.report(message, message.recipients, "delay", reporting_mta="m", now=T0)
    b = message.recipients[0]
    assert queue.report(message, [b], "failure", reporting_mta="m", now=T0) is None
    queue.content_path(qid).unlink()
    c = message.recipients[1]
    report = queue.report(message, [c], "failure", reporting_mta="m", now=T0)
    assert report is not None
    body = queue.content_path(report).read_bytes()
    assert b"Final-Recipient: rfc822; c@y.org" in body and b"Content-Type: text/" not in body[-200:]


def test_recovery_on_open(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Queue(tmp_path) as queue:
        kept = queue.enqueue("a@x.org", ["b@y.org"], CONTENT)
        lost = queue.enqueue("a@x.org", ["c@y.org"], CONTENT)
    (tmp_path / "tmp" / "HALFWRITTEN").write_bytes(b"Subject: part")
    (tmp_path / "spool" / "NEVERACKED").write_bytes(CONTENT)
    (tmp_path / "spool" / lost).unlink()
    with caplog.at_level(logging.WARNING, "fastsmtp.queue"), Queue(tmp_path) as queue:
        assert os.listdir(tmp_path / "tmp") == []
        assert sorted(os.listdir(tmp_path / "spool")) == [kept]
        message = queue.get(lost)
        assert message is not None and message.finished
        assert message.recipients[0].status == "failed"
        assert "missing from the spool" in message.recipients[0].last_text
        assert [m.id for m in queue.list()] == [kept, lost]
    assert f"{lost}: message file missing" in caplog.text
    assert "NEVERACKED: removing a spool file that was never acknowledged" in caplog.text


def test_no_recovery_while_another_queue_is_open(tmp_path: Path) -> None:
    """A file without a row may be a message being queued by a running server."""
    with Queue(tmp_path):
        (tmp_path / "spool" / "INFLIGHT").write_bytes(CONTENT)
        with Queue(tmp_path):
            assert (tmp_path / "spool" / "INFLIGHT").exists()
    with Queue(tmp_path) as queue:
        assert not (tmp_path / "spool" / "INFLIGHT").exists()
        queue.close()  # closing twice is harmless


def test_index_is_wal_and_versioned(queue: Queue, tmp_path: Path) -> None:
    queue.close()
    db = sqlite3.connect(tmp_path / "q" / "queue.db")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")  # by a newer fastsmtp
    finally:
        db.close()
    with pytest.raises(sqlite3.DatabaseError, match="upgrade fastsmtp"):
        Queue(tmp_path / "q")


def test_safe_from_many_threads(queue: Queue) -> None:
    """The scheduler calls the queue from asyncio.to_thread: one lock, one connection."""

    async def main() -> list[str]:
        async def one(i: int) -> str:
            qid = await asyncio.to_thread(queue.enqueue, "a@x.org", [f"r{i}@y.org"], CONTENT)
            await asyncio.to_thread(
                queue.record, qid, f"r{i}@y.org", "delivered", code=250, enhanced="2.0.0",
                text="ok", remote_host=None, next_attempt=None, now=T0,
            )  # fmt: skip
            await asyncio.to_thread(queue.due, T0)
            return qid

        return await asyncio.gather(*(one(i) for i in range(40)))

    ids = asyncio.run(main())
    assert len(set(ids)) == 40
    assert all(m.finished for m in queue.list())
