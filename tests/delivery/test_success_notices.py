"""NOTIFY=SUCCESS (RFC 3461, RFC 3464): success notices, or NOTIFY passed on to a DSN server.

A ``Relay`` with a Maildir for here.test (the sender alice's mailbox, where
notices arrive) delivers to test MX servers routed by ``smarthost_routes``:
a.test's server has no DSN, b.test's offers it. Notices are parsed with the
stdlib ``email`` package. A queue written by fastsmtp's index format 1 is
built by hand (``V1_SCHEMA``) to show it is migrated and keeps working.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from peers import Clock, MXServers, delivery_status

from fastsmtp.config import Settings
from fastsmtp.delivery._spool import SCHEMA_VERSION
from fastsmtp.handlers.maildir import Maildir
from fastsmtp.handlers.relay import Relay
from fastsmtp.session import RecipientDSN
from fastsmtp.testing import parse_message

StartMX = Callable[..., MXServers]
MESSAGE = b"From: alice@here.test\r\nSubject: hello\r\n\r\nThe body.\r\n"
SUCCESS = RecipientDSN(frozenset({"SUCCESS"}))


def deliver(
    tmp_path: Path, clock: Clock, port: int, *rcpts: str, b_port: int = 0, **kwargs: Any
) -> None:
    """Queue one message from alice and deliver it (and what that queues) fully.

    a.test is routed to ``port``, b.test to ``b_port`` (default: ``port``).
    """
    routes = (f"a.test=127.0.0.2:{port}", f"b.test=127.0.0.3:{b_port or port}")
    config = Settings(
        hostname="mta.here.test",
        queue_dir=str(tmp_path / "queue"),
        maildir=str(tmp_path / "Maildir"),
        local_domains=("here.test",),
        smarthost_routes=routes,
        smarthost_tls="none",
    )
    relay = Relay(config, Maildir(str(tmp_path / "Maildir")), now=clock)

    async def main() -> None:
        try:
            relay.queue.enqueue("alice@here.test", list(rcpts), MESSAGE, now=clock(), **kwargs)
            await asyncio.wait_for(relay.scheduler.run_pending(), 30)
            assert relay.queue.list() == []
        finally:
            await relay.server_stopping()

    asyncio.run(main())


def mailbox(tmp_path: Path) -> list[EmailMessage]:
    new = tmp_path / "Maildir" / "new"
    return [parse_message(p.read_bytes()) for p in sorted(new.iterdir())]


def notices(tmp_path: Path) -> list[EmailMessage]:
    return [m for m in mailbox(tmp_path) if m.get_content_type() == "multipart/report"]


def test_local_delivery_with_notify_success_gets_a_delivered_notice(
    tmp_path: Path, clock: Clock, mx_servers: StartMX
) -> None:
    orcpt = RecipientDSN(frozenset({"SUCCESS", "FAILURE"}), ("rfc822", "carol@old.test"))
    deliver(
        tmp_path,
        clock,
        1,
        "carol@here.test",
        "dave@here.test",  # no NOTIFY: failures only, no success notice
        rcpt_dsn=[orcpt, RecipientDSN()],
        dsn_envid="env-1",
    )
    [notice] = notices(tmp_path)
    assert notice["To"] == "alice@here.test"
    assert notice["From"] == "Mail Delivery System <MAILER-DAEMON@mta.here.test>"
    assert notice.get_param("report-type") == "delivery-status"
    head, rcpt = delivery_status(notice)
    assert head["Original-Envelope-Id"] == "env-1"
    assert rcpt["Final-Recipient"] == "rfc822; carol@here.test"
    assert rcpt["Original-Recipient"] == "rfc822; carol@old.test"
    assert rcpt["Action"] == "delivered"
    assert rcpt["Status"] == "2.0.0"
    assert "Remote-MTA" not in rcpt
    # RFC 3461 §4.3: a notice without a failure returns the header only.
    [returned] = [p for p in notice.walk() if p.get_content_type() == "text/rfc822-headers"]
    assert "Subject: hello" in returned.get_content() and "The body." not in notice.as_string()
    delivered = [m for m in mailbox(tmp_path) if m["Subject"] == "hello"]
    assert len(delivered) == 1  # one local delivery for carol and dave


def test_relayed_to_a_server_without_dsn_gets_a_relayed_notice(
    tmp_path: Path, clock: Clock, mx_servers: StartMX
) -> None:
    mx = mx_servers("127.0.0.2", dsn=False)
    deliver(tmp_path, clock, mx.port, "bob@a.test", rcpt_dsn=[SUCCESS], dsn_ret="FULL")
    [envelope] = mx["127.0.0.2"].envelopes
    assert envelope.rcpt_dsn == [RecipientDSN()]  # nothing to pass NOTIFY to
    [notice] = notices(tmp_path)
    _, rcpt = delivery_status(notice)
    assert rcpt["Action"] == "relayed"
    assert rcpt["Status"].startswith("2.")
    assert rcpt["Remote-MTA"] == "dns; 127.0.0.2"
    assert rcpt["Final-Recipient"] == "rfc822; bob@a.test"


def test_a_dsn_server_is_given_notify_orcpt_ret_envid_and_no_notice_is_sent(
    tmp_path: Path, clock: Clock, mx_servers: StartMX
) -> None:
    mx = mx_servers("127.0.0.3", dsn=True)
    dsn = RecipientDSN(frozenset({"SUCCESS", "DELAY"}), ("rfc822", "bob+x@b.test"))
    deliver(
        tmp_path,
        clock,
        mx.port,
        "bob@b.test",
        rcpt_dsn=[dsn],
        dsn_ret="HDRS",
        dsn_envid="env-2",
    )
    [envelope] = mx["127.0.0.3"].envelopes
    assert envelope.rcpt_dsn == [dsn]
    assert (envelope.dsn_ret, envelope.dsn_envid) == ("HDRS", "env-2")
    assert notices(tmp_path) == []  # b.test's server reports from here on (RFC 3461 §5.2.2)


def test_only_the_recipient_without_a_dsn_server_gets_a_notice_from_us(
    tmp_path: Path, clock: Clock, mx_servers: StartMX
) -> None:
    plain, dsn = mx_servers("127.0.0.2", dsn=False), mx_servers("127.0.0.3", dsn=True)
    rcpts = ("bob@a.test", "carol@b.test")
    deliver(tmp_path, clock, plain.port, *rcpts, b_port=dsn.port, rcpt_dsn=[SUCCESS, SUCCESS])
    assert dsn["127.0.0.3"].envelopes[0].rcpt_dsn == [SUCCESS]  # b.test's server reports carol
    [notice] = notices(tmp_path)
    _, *rcpts = delivery_status(notice)
    assert [(r["Final-Recipient"], r["Action"]) for r in rcpts] == [
        ("rfc822; bob@a.test", "relayed")
    ]


# The index as fastsmtp's queue format 1 created it (user_version 1): no success_owed.
V1_SCHEMA = """
CREATE TABLE messages (
    id TEXT PRIMARY KEY, mail_from TEXT NOT NULL, created REAL NOT NULL, dsn_ret TEXT,
    dsn_envid TEXT, smtputf8 INTEGER NOT NULL, body_type TEXT, size INTEGER NOT NULL,
    open_recipients INTEGER NOT NULL
);
CREATE INDEX messages_open ON messages (open_recipients, created);
CREATE TABLE recipients (
    queue_id TEXT NOT NULL, position INTEGER NOT NULL, address TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'deferred', 'delivered', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL, last_code INTEGER,
    last_enhanced TEXT, last_text TEXT NOT NULL DEFAULT '', remote_host TEXT,
    last_attempt REAL, notify TEXT NOT NULL, orcpt_type TEXT, orcpt TEXT,
    delay_notified INTEGER NOT NULL DEFAULT 0, failure_notified INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (queue_id, position)
);
CREATE INDEX recipients_due ON recipients (status, next_attempt);
CREATE INDEX recipients_address ON recipients (queue_id, address);
PRAGMA user_version = 1;
"""


def test_a_version_1_queue_is_migrated_and_keeps_delivering(
    tmp_path: Path, clock: Clock, mx_servers: StartMX
) -> None:
    """A v1 message half delivered: dave's notice was v1's business, carol's is owed on."""
    (tmp_path / "queue" / "spool").mkdir(parents=True)
    (tmp_path / "queue" / "spool" / "OLD1").write_bytes(MESSAGE)
    db = sqlite3.connect(tmp_path / "queue" / "queue.db")
    try:
        db.executescript(V1_SCHEMA)
        with db:
            db.execute(
                "INSERT INTO messages VALUES ('OLD1', 'alice@here.test', ?, NULL, NULL, 0,"
                " NULL, ?, 1)",
                (clock() - 60, len(MESSAGE)),
            )
            db.execute(
                "INSERT INTO recipients (queue_id, position, address, status, attempts,"
                " last_code, notify) VALUES ('OLD1', 0, 'dave@here.test', 'delivered', 1,"
                " 250, 'SUCCESS')"
            )
            db.execute(
                "INSERT INTO recipients (queue_id, position, address, status, next_attempt,"
                " notify) VALUES ('OLD1', 1, 'carol@here.test', 'pending', ?, 'SUCCESS')",
                (clock() - 60,),
            )
    finally:
        db.close()
    deliver(tmp_path, clock, 1, "erin@here.test", rcpt_dsn=[SUCCESS])  # a new message too
    told = sorted(delivery_status(n)[1]["Final-Recipient"] for n in notices(tmp_path))
    assert told == ["rfc822; carol@here.test", "rfc822; erin@here.test"]
    db = sqlite3.connect(tmp_path / "queue" / "queue.db")
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        db.close()
