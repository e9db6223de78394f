"""`fastsmtp queue ...` as an administrator runs it: a real process on a real queue directory."""

from __future__ import annotations

import email
import re
import smtplib
import subprocess
import sys
from pathlib import Path

import pytest

from cli.test_serve import serve
from fastsmtp.delivery.queue import Queue
from fastsmtp.handlers import Collect
from fastsmtp.protocol.replies import Reply
from fastsmtp.session import Address, Envelope, RecipientDSN, Session
from fastsmtp.testing import running

CONTENT = b"Subject: stuck\r\n\r\nstill here\r\n"
T0 = 1_800_000_000.0


def fastsmtp_queue(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastsmtp", "queue", "--queue-dir", str(directory), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def queued(tmp_path: Path) -> tuple[Path, str, str]:
    """A queue with one deferred and one fresh message."""
    with Queue(tmp_path) as queue:
        first = queue.enqueue(
            "alice@example.com",
            ["bob@example.org", "carol@example.net"],
            CONTENT,
            rcpt_dsn=[
                RecipientDSN(frozenset({"FAILURE"}), ("rfc822", "bob@example.org")),
                RecipientDSN(),
            ],
            dsn_envid="ENV1",
            now=T0,
        )
        reply = dict(code=451, enhanced="4.7.1", text="Greylisted, try\nlater")
        queue.record(first, "bob@example.org", "deferred", **reply,
                     remote_host="mx.example.org", next_attempt=T0 + 10**9, now=T0)  # fmt: skip
        reply = dict(code=250, enhanced="2.0.0", text="ok")
        queue.record(first, "carol@example.net", "delivered", **reply,
                     remote_host="mx.example.net", next_attempt=None, now=T0)  # fmt: skip
        second = queue.enqueue("", ["postmaster@example.org"], b"x" * 3000, now=T0 + 1)
    return tmp_path, first, second


def test_list_shows_like_mailq(queued: tuple[Path, str, str]) -> None:
    directory, first, second = queued
    result = fastsmtp_queue(directory, "list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("-Queue ID-")
    head = next(line for line in lines if line.startswith(first)).split()
    assert head[1] == str(len(CONTENT)) and head[-1] == "<alice@example.com>"
    assert any("bob@example.org  deferred, 1 attempt(s), next" in line for line in lines)
    assert any("(451 4.7.1 Greylisted, try later [mx.example.org])" in line for line in lines)
    assert any("carol@example.net  delivered" in line for line in lines)
    assert any(line.startswith(second) and line.endswith("<>") for line in lines)
    assert lines[-1] == "-- 3 Kbytes in 2 Request(s)."


def test_show_prints_envelope_state_and_content(queued: tuple[Path, str, str]) -> None:
    directory, first, _ = queued
    result = fastsmtp_queue(directory, "show", first)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"Queue-ID: {first}\n" in out and "Sender: <alice@example.com>\n" in out
    assert "ENVID: ENV1\n" in out
    assert "Recipient: <bob@example.org> deferred, 1 attempt(s)" in out
    assert "  NOTIFY=FAILURE\n  ORCPT=rfc822;bob@example.org\n" in out
    assert out.endswith("\n\n" + CONTENT.decode().replace("\r\n", "\n"))


def defer(queue: Queue, queue_id: str, until: float) -> None:
    queue.record(queue_id, "postmaster@example.org", "deferred", code=421, enhanced="4.4.2",
                 text="timeout", remote_host=None, next_attempt=until, now=T0)  # fmt: skip


def test_flush_and_retry_make_deferred_mail_due(queued: tuple[Path, str, str]) -> None:
    directory, _, second = queued
    with Queue(directory) as queue:
        assert [m.id for m in queue.due(T0 + 5)] == [second]  # only the pending one
        defer(queue, second, T0 + 10**9)
        assert queue.due(T0 + 5) == []
    result = fastsmtp_queue(directory, "flush", "EXAMPLE.org")
    assert (result.returncode, result.stdout) == (0, "2 deferred recipient(s) due now\n")
    with Queue(directory) as queue:
        assert len(queue.due(T0 + 10**8)) == 2
        defer(queue, second, T0 + 10**10)
    result = fastsmtp_queue(directory, "retry", second)
    assert (result.returncode, result.stdout) == (0, f"{second}: due now\n")
    with Queue(directory) as queue:
        message = queue.get(second)
        assert message is not None and message.recipients[0].next_attempt is not None
        assert message.recipients[0].next_attempt < T0 + 10**10


def test_bounce_and_delete(queued: tuple[Path, str, str]) -> None:
    directory, first, second = queued
    result = fastsmtp_queue(directory, "bounce", first)
    assert result.returncode == 0, result.stderr
    with Queue(directory) as queue:
        message = queue.get(first)
        assert message is not None and message.finished
        bob, carol = message.recipients
        assert (bob.status, bob.last_enhanced, carol.status) == ("failed", "5.0.0", "delivered")
        assert first in [m.id for m in queue.due(0)]  # the scheduler's signal
    result = fastsmtp_queue(directory, "delete", second)
    assert (result.returncode, result.stdout) == (0, f"{second}: deleted\n")
    assert not (directory / "spool" / second).exists()
    assert second not in fastsmtp_queue(directory, "list").stdout


@pytest.mark.parametrize("action", ["show", "retry", "delete", "bounce"])
def test_unknown_id_exits_1(queued: tuple[Path, str, str], action: str) -> None:
    directory, _, _ = queued
    result = fastsmtp_queue(directory, action, "NOSUCHID")
    assert result.returncode == 1
    assert result.stderr == "fastsmtp: no message NOSUCHID in the queue\n"


def test_empty_queue_and_config_file(tmp_path: Path) -> None:
    def run(config_text: str) -> subprocess.CompletedProcess[str]:
        config = tmp_path / "fastsmtp.toml"
        config.write_text(config_text)
        return subprocess.run(
            [sys.executable, "-m", "fastsmtp", "queue", "--config", str(config), "list"],
            capture_output=True,
            text=True,
            timeout=60,
        )

    server = 'local_domains = ["example.com"]\nsink = true\n'
    result = run(f'queue_dir = "{tmp_path / "q"}"\n' + server)
    assert (result.returncode, result.stdout) == (0, "Mail queue is empty\n"), result.stderr
    result = run(server)
    assert result.returncode == 2
    assert result.stderr == f"fastsmtp: {tmp_path / 'fastsmtp.toml'} sets no queue_dir\n"


class Greylist(Collect):
    """A smarthost that answers 451 to every RCPT until ``accepting`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.accepting = False

    async def on_rcpt(self, session: Session, envelope: Envelope, rcpt: Address) -> Reply | None:
        return None if self.accepting else Reply(451, "4.7.1", "Greylisted, come back later")


def test_a_running_server_sees_flush_and_bounce(tmp_path: Path) -> None:
    """Admin commands from another process reach the server's scheduler through the index."""
    smarthost = Greylist()
    with running(smarthost, hostname="smarthost.test") as (host, port):
        flags = [
            "--queue-dir", str(tmp_path), "--local-domain", "here.test", "--sink",
            "--smarthost", f"{host}:{port}", "--smarthost-tls", "none",
            "--hostname", "mx.here.test", "--relay-network", "127.0.0.0/8",
        ]  # fmt: skip
        with serve(*flags) as (_, log, address):
            with smtplib.SMTP(*address, timeout=10) as client:
                client.sendmail("alice@sender.test", ["bob@remote.test"], CONTENT)
            log.until(re.compile(r"to=<bob@remote.test> .*status=deferred"), 20)
            smarthost.accepting = True
            result = fastsmtp_queue(tmp_path, "flush", "remote.test")
            assert result.stdout == "1 deferred recipient(s) due now\n", result.stderr
            log.until(re.compile(r"to=<bob@remote.test> .*status=delivered"), 20)
            assert smarthost.wait_for(1)[0].rcpt_tos == ["bob@remote.test"]

            smarthost.accepting = False
            with smtplib.SMTP(*address, timeout=10) as client:
                client.sendmail("alice@sender.test", ["carol@remote.test"], CONTENT)
            line = log.until(re.compile(r"to=<carol@remote.test> .*status=deferred"), 20)
            match = re.search(r"(\w+): to=<carol@remote.test>", line)
            assert match is not None
            smarthost.accepting = True  # so the report to alice can go out
            result = fastsmtp_queue(tmp_path, "bounce", match.group(1))
            assert result.returncode == 0, result.stderr
            log.until(re.compile(r"to=<alice@sender.test> .*status=delivered"), 20)
    report = smarthost.wait_for(2)[1]
    assert (report.mail_from, report.rcpt_tos) == ("", ["alice@sender.test"])
    parsed = email.message_from_bytes(report.content or b"")
    assert parsed.get_content_type() == "multipart/report"
    status = parsed.get_payload()[1].get_payload()[1]
    assert status["Final-Recipient"] == "rfc822; carol@remote.test"
    assert (status["Action"], status["Status"]) == ("failed", "5.0.0")
    assert "administrator" in status["Diagnostic-Code"]
    assert parsed.get_payload()[2].get_payload()[0]["Subject"] == "stuck"


def test_a_directory_that_is_not_a_queue_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "queue.db").write_bytes(b"this is not an SQLite database" * 100)
    result = fastsmtp_queue(tmp_path, "list")
    assert result.returncode == 1
    assert result.stderr.startswith(f"fastsmtp: cannot open the queue in {tmp_path}: ")
    assert "Traceback" not in result.stderr
