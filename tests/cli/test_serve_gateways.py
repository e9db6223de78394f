"""`fastsmtp serve` with a gateway as its local handler: --pipe and --lmtp-forward, end to end."""

from __future__ import annotations

import re
import smtplib
import subprocess
import sys
from pathlib import Path

from cli.test_serve import serve
from fastsmtp.handlers import Collect
from fastsmtp.testing import running

CONTENT = b"Subject: gateway\r\n\r\nhello\r\n"


def test_queue_and_pipe_deliver_bounce_and_report(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    # gone@ is an unknown user (EX_NOUSER); everything else is stored under its queue id.
    script = f'case "$RECIPIENTS" in *gone@*) exit 67;; esac; cat > {out}/"$QUEUE_ID"'
    flags = [
        "--queue-dir", str(tmp_path / "queue"), "--local-domain", "here.test",
        "--hostname", "mx.here.test", "--pipe", f"sh -c '{script}'",
    ]  # fmt: skip
    with serve(*flags) as (_, log, address):
        with smtplib.SMTP(*address, timeout=10) as client:
            client.sendmail("alice@here.test", ["bob@here.test"], CONTENT)
            log.until(re.compile(r"to=<bob@here.test> .*status=delivered"), 20)
            client.sendmail("alice@here.test", ["gone@here.test"], CONTENT)
        log.until(re.compile(r"to=<gone@here.test> .*status=(failed|bounced)"), 20)
        # The report goes to alice, through the same command.
        log.until(re.compile(r"to=<alice@here.test> .*status=delivered"), 20)
    stored = sorted(p.read_bytes() for p in out.iterdir())
    assert len(stored) == 2
    report = next(m for m in stored if b"multipart/report" in m)
    assert b"gone@here.test" in report and b"5.1.1" in report
    assert any(m.endswith(b"\r\n" + CONTENT) for m in stored)


def test_lmtp_forward_from_the_command_line() -> None:
    back = Collect()
    with running(back, lmtp=True) as (host, port):
        flags = ("--lmtp-forward", f"{host}:{port}", "--hostname", "front.test")
        with serve(*flags) as (_, _, address), smtplib.SMTP(*address, timeout=10) as client:
            client.sendmail("a@example.org", ["b@example.com"], CONTENT)
        [envelope] = back.wait_for(1)
    assert envelope.rcpt_tos == ["b@example.com"]
    assert b"from front.test" in (envelope.content or b"")


def test_two_local_handlers_are_refused() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fastsmtp", "serve", "--sink", "--webhook", "http://127.0.0.1/"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "choose one local handler, not sink and webhook" in result.stderr
