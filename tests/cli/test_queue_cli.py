"""`fastsmtp queue ...` as an administrator runs it: a real process on a real queue directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fastsmtp.delivery.queue import Queue
from fastsmtp.session import RecipientDSN

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
