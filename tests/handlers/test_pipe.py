"""Pipe: real commands behind a real SMTP (and LMTP) session; exit statuses become replies."""

from __future__ import annotations

import logging
import os
import signal
import smtplib
import time
from pathlib import Path

import pytest

from fastsmtp.config import ConfigError
from fastsmtp.handlers.pipe import Pipe
from fastsmtp.testing import running

MESSAGE = b"Subject: piped\r\n\r\nbody line\r\n"
SH = "/bin/sh"


def sendmail(pipe: Pipe, rcpts: list[str], message: bytes = MESSAGE, **settings: object) -> None:
    with running(pipe, **settings) as (host, port), smtplib.SMTP(host, port, timeout=30) as smtp:
        smtp.sendmail("sender@example.org", rcpts, message)


def test_message_on_stdin_and_envelope_in_the_environment(tmp_path: Path) -> None:
    out = tmp_path / "out"
    fields = '"$SENDER" "$RECIPIENT" "$RECIPIENTS" "$QUEUE_ID"'
    script = f'cat > {out}; printf "%s|%s|%s|%s" {fields} > {out}.env'
    sendmail(Pipe([SH, "-c", script]), ["a@example.com", "b@example.com"])
    stored = out.read_bytes()
    assert stored.startswith(b"Received: ") and stored.endswith(b"\r\n" + MESSAGE)
    sender, recipient, recipients, queue_id = (tmp_path / "out.env").read_text().split("|")
    assert (sender, recipient, recipients) == (
        "sender@example.org",
        "",
        "a@example.com b@example.com",
    )
    assert queue_id and queue_id.encode() in stored  # the Received: header names it


def test_a_spooled_message_streams_from_its_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    big = b"Subject: big\r\n\r\n" + (b"y" * 78 + b"\r\n") * 40_000  # ~3 MiB
    sendmail(Pipe([SH, "-c", f"cat > {out}"]), ["a@example.com"], big, spool_threshold=64 * 1024)
    assert out.read_bytes().endswith(b"\r\n" + big)


@pytest.mark.parametrize(
    ("status", "code", "enhanced"),
    [
        (75, 451, b"4.3.0"),  # EX_TEMPFAIL
        (67, 550, b"5.1.1"),  # EX_NOUSER
        (68, 550, b"5.1.2"),  # EX_NOHOST
        (65, 554, b"5.6.0"),  # EX_DATAERR
        (78, 554, b"5.3.5"),  # EX_CONFIG
        (1, 451, b"4.3.0"),  # not a sysexits status: temporary
    ],
)
def test_exit_status_maps_like_sysexits(status: int, code: int, enhanced: bytes) -> None:
    pipe = Pipe([SH, "-c", f"cat >/dev/null; echo 'it went wrong' >&2; exit {status}"])
    with pytest.raises(smtplib.SMTPDataError) as refused:
        sendmail(pipe, ["a@example.com"])
    assert refused.value.smtp_code == code
    assert refused.value.smtp_error.startswith(enhanced + b" delivery command: ")
    assert refused.value.smtp_error.endswith(f"(exit status {status}): it went wrong".encode())


def test_a_command_that_outlives_its_timeout_is_killed_with_its_children(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="fastsmtp.handlers.pipe")
    # sh starts sleep: killing sh alone would leave sleep holding the output pipe.
    pipe = Pipe([SH, "-c", "echo started; sleep 30; echo never"], timeout=1)
    began = time.monotonic()
    with pytest.raises(smtplib.SMTPDataError) as refused:
        sendmail(pipe, ["a@example.com"])
    assert time.monotonic() - began < 15
    assert (refused.value.smtp_code, refused.value.smtp_error[:6]) == (451, b"4.3.0 ")
    assert any(
        "killed after 1s" in r.getMessage() and "started" in r.getMessage() for r in caplog.records
    )


def test_a_background_child_does_not_hold_up_the_answer(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    pipe = Pipe([SH, "-c", f"cat >/dev/null; sleep 60 & echo $! > {pidfile}; exit 0"], timeout=30)
    began = time.monotonic()
    try:
        sendmail(pipe, ["a@example.com"])  # 250: the command itself exited 0
        assert time.monotonic() - began < 20
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_a_missing_command_is_temporary(tmp_path: Path) -> None:
    with pytest.raises(smtplib.SMTPDataError) as refused:
        sendmail(Pipe([str(tmp_path / "no-such-command")]), ["a@example.com"])
    assert refused.value.smtp_code == 451


def test_per_recipient_runs_once_each_and_answers_each_over_lmtp(tmp_path: Path) -> None:
    script = 'case "$RECIPIENT" in gone@*) exit 67;; busy@*) exit 75;; esac; cat > "$RECIPIENT"'
    rcpts = ["a@example.com", "gone@example.com", "busy@example.com"]
    pipe = Pipe([SH, "-c", f"cd {tmp_path} && {{ {script}; }}"], per_recipient=True)
    with running(pipe, lmtp=True) as (host, port), smtplib.LMTP(host, port, timeout=30) as lmtp:
        lmtp.ehlo("client.test")
        lmtp.mail("sender@example.org")
        for rcpt in rcpts:
            assert lmtp.rcpt(rcpt)[0] == 250
        codes = [lmtp.data(MESSAGE)[0], lmtp.getreply()[0], lmtp.getreply()[0]]
    assert codes == [250, 550, 451]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a@example.com"]
    assert (tmp_path / "a@example.com").read_bytes().endswith(b"\r\n" + MESSAGE)


def test_empty_command_is_refused() -> None:
    with pytest.raises(ConfigError, match="non-empty argv"):
        Pipe([])
