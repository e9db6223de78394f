"""Mbox delivery over real SMTP sessions: mboxrd format, locking, durability, failures."""

from __future__ import annotations

import errno
import mailbox
import os
import re
import smtplib
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import fastsmtp.handlers.mbox as mbox_module
from fastsmtp import ConfigError
from fastsmtp.handlers import Mbox
from fastsmtp.testing import running

SendMail = Callable[..., str]
SplitTrace = Callable[..., tuple[str, bytes, bytes]]

MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: Bob <bob@example.com>\r\n"
    b"Subject: quoting\r\n"
    b"\r\n"
    b"From here the quoting starts\r\n"
    b">From once quoted\r\n"
    b">>From twice quoted\r\n"
    b"From\r\n"
    b"Fromage\r\n"
    b" From with a space before\r\n"
    b"from in lower case\r\n"
    b".a line that starts with a dot\r\n"
    b".\r\n"
    b"\r\n"
    b"From after a blank line\r\n"
    b"last line\r\n"
)

# What MESSAGE becomes in the mbox: LF line endings, one more ">" on "^>*From ".
MESSAGE_IN_MBOX = (
    b"From: Alice <alice@example.org>\n"
    b"To: Bob <bob@example.com>\n"
    b"Subject: quoting\n"
    b"\n"
    b">From here the quoting starts\n"
    b">>From once quoted\n"
    b">>>From twice quoted\n"
    b"From\n"
    b"Fromage\n"
    b" From with a space before\n"
    b"from in lower case\n"
    b".a line that starts with a dot\n"
    b".\n"
    b"\n"
    b">From after a blank line\n"
    b"last line\n"
)

FROM_LINE = re.compile(rb"From (\S+) (\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4})\n")


def unquote(body: bytes) -> bytes:
    """mboxrd reading: one ">" less on every "^>+From " line."""
    return re.sub(rb"(?m)^>(>*From )", rb"\1", body)


def entries(data: bytes) -> list[tuple[bytes, bytes]]:
    """Split an mbox into ``(From-line sender, text)``; check every separator."""
    assert data.endswith(b"\n\n")
    out = []
    # Drop the last blank line; split at the blank line before each "From ".
    for chunk in re.split(rb"(?<=\n)\n(?=From )", data[:-1]):
        match = FROM_LINE.match(chunk)
        assert match, chunk[:100]
        out.append((match[1], chunk[match.end() :]))
    return out


def assert_refused_451(exc: pytest.ExceptionInfo[smtplib.SMTPDataError]) -> None:
    assert exc.value.smtp_code == 451
    assert exc.value.smtp_error.startswith(b"4.3.0 ")


def test_message_is_stored_byte_exact(
    tmp_path: Path, send: SendMail, split_trace: SplitTrace
) -> None:
    path = tmp_path / "mbox"
    with running(Mbox(path), port=0) as addr, smtplib.SMTP(*addr, timeout=30) as client:
        queue_id = send(client, "alice@example.org", ["bob@example.com"], MESSAGE)
    data = path.read_bytes()
    match = FROM_LINE.match(data)
    assert match and match[1] == b"alice@example.org"
    assert data.endswith(b"last line\n\n")  # the blank line after the message
    sender, received, rest = split_trace(data[match.end() : -1], b"\n")
    assert sender == "alice@example.org"
    assert f" id {queue_id}".encode() in received
    assert b"\r" not in data
    assert rest == MESSAGE_IN_MBOX
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_python_mailbox_reads_the_messages_back(tmp_path: Path, send: SendMail) -> None:
    path = tmp_path / "mbox"
    messages = [MESSAGE.replace(b"quoting", b"number %d" % i) for i in range(3)]
    with running(Mbox(path), port=0) as addr, smtplib.SMTP(*addr, timeout=30) as client:
        for message in messages:
            send(client, "alice@example.org", ["bob@example.com"], message)
    box = mailbox.mbox(path, create=False)
    try:
        read = list(box)
    finally:
        box.close()
    assert [m["Subject"] for m in read] == [f"number {i}" for i in range(3)]
    for message, sent in zip(read, messages, strict=True):
        assert message.get_from().startswith("alice@example.org ")
        assert message["Return-Path"] == "<alice@example.org>"
        body = message.get_payload(decode=True)
        assert isinstance(body, bytes)
        assert unquote(body) == sent.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n")


def test_null_sender(tmp_path: Path, send: SendMail) -> None:
    path = tmp_path / "mbox"
    with running(Mbox(path), port=0) as addr, smtplib.SMTP(*addr, timeout=30) as client:
        send(client, "", ["bob@example.com"], MESSAGE)
    ((sender, text),) = entries(path.read_bytes())
    assert sender == b"MAILER-DAEMON"
    assert text.startswith(b"Return-Path: <>\nReceived: ")


def test_appends_to_an_existing_mbox(
    tmp_path: Path, send: SendMail, split_trace: SplitTrace
) -> None:
    path = tmp_path / "mbox"
    earlier = b"From someone@example.net Mon Jan  1 00:00:00 2024\nSubject: old\n\nold body"
    path.write_bytes(earlier)  # another writer left no final newline, nor a blank line
    with running(Mbox(path), port=0) as addr, smtplib.SMTP(*addr, timeout=30) as client:
        send(client, "alice@example.org", ["bob@example.com"], MESSAGE)
    data = path.read_bytes()
    assert data.startswith(earlier + b"\n\nFrom alice@example.org ")
    old, new = entries(data)
    assert old == (b"someone@example.net", b"Subject: old\n\nold body\n")
    assert split_trace(new[1], b"\n")[2] == MESSAGE_IN_MBOX


def test_several_messages_and_concurrent_clients(
    tmp_path: Path, send: SendMail, split_trace: SplitTrace
) -> None:
    path = tmp_path / "mbox"
    clients, per_client = 4, 5
    line = b"x" * 70 + b"\r\n"

    def one_client(n: int) -> list[bytes]:
        sent = []
        with smtplib.SMTP(*addr, timeout=30) as client:
            for i in range(per_client):
                body = b"Subject: %d/%d\r\n\r\nFrom client %d\r\n" % (n, i, n) + line * 70
                send(client, f"c{n}@example.org", ["b@example.com"], body)
                sent.append(body)
        return sent

    with running(Mbox(path), port=0) as addr, ThreadPoolExecutor(clients) as pool:
        sent = [body for bodies in pool.map(one_client, range(clients)) for body in bodies]
    stored = [split_trace(text, b"\n")[2] for _, text in entries(path.read_bytes())]
    assert len(stored) == clients * per_client
    # Each message whole, none interleaved with another.
    expected = [unquote(b).replace(b"\r\n", b"\n") for b in sent]
    assert sorted(unquote(s) for s in stored) == sorted(expected)
    box = mailbox.mbox(path, create=False)
    try:
        assert sorted(m["Subject"] for m in box) == sorted(
            f"{n}/{i}" for n in range(clients) for i in range(per_client)
        )
    finally:
        box.close()


def test_8bit_and_utf8(tmp_path: Path, send: SendMail, split_trace: SplitTrace) -> None:
    path = tmp_path / "mbox"
    message = (
        "From: Jörg <jörg@exämple.org>\r\nSubject: grüße\r\n\r\nÄ € 日本語\r\n".encode()
        + b"latin-1 byte: \xe9\r\nFrom J\xc3\xb6rg\r\n"
    )
    stored = message.replace(b"\r\n", b"\n").replace(b"\nFrom J", b"\n>From J")
    with running(Mbox(path), port=0) as addr, smtplib.SMTP(*addr, timeout=30) as client:
        send(
            client, "jörg@exämple.org", ["bob@example.com"], message, ["BODY=8BITMIME", "SMTPUTF8"]
        )
        send(client, '"john doe"@example.org', ["b@example.com"], message, ["BODY=8BITMIME"])
    (sender1, text1), (sender2, text2) = entries(path.read_bytes())
    # The From line stays ASCII, one field; Return-Path has the exact address.
    assert sender1 == rb"j\xf6rg@ex\xe4mple.org"
    assert split_trace(text1, b"\n")[::2] == ("jörg@exämple.org", stored)
    assert sender2 == b'"john_doe"@example.org'
    assert split_trace(text2, b"\n")[::2] == ('"john doe"@example.org', stored)
    box = mailbox.mbox(path, create=False)
    try:
        assert len(box) == 2
    finally:
        box.close()


def test_hook_runs_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, send: SendMail
) -> None:
    threads: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        threads.append(threading.current_thread().name)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with running(Mbox(tmp_path / "mbox"), port=0) as addr, smtplib.SMTP(*addr) as client:
        send(client, "a@example.org", ["b@example.com"], MESSAGE)
    assert len(threads) == 1
    assert "fastsmtp-test-server" not in threads  # the event loop's thread


# --- construction --------------------------------------------------------------


def test_refuses_a_directory_or_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        Mbox(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        Mbox(tmp_path / "missing" / "mbox")


def test_needs_fcntl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mbox_module, "_HAVE_FCNTL", False)
    with pytest.raises(ConfigError, match="no fcntl; use maildir"):
        Mbox(tmp_path / "mbox")


# --- failures: 451, the file as it was before, and the retry works ---------------


def test_path_replaced_by_a_directory(tmp_path: Path, send: SendMail) -> None:
    path = tmp_path / "mbox"
    handler = Mbox(path)
    path.mkdir()
    with running(handler, port=0) as addr, smtplib.SMTP(*addr, timeout=30) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(client, "a@example.org", ["b@example.com"], MESSAGE)
        assert_refused_451(refused)
        assert list(path.iterdir()) == []
        path.rmdir()
        send(client, "a@example.org", ["b@example.com"], MESSAGE)  # the retry
    assert len(entries(path.read_bytes())) == 1


def test_fsync_failure_truncates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, send: SendMail
) -> None:
    path = tmp_path / "mbox"
    with running(Mbox(path), port=0) as addr, smtplib.SMTP(*addr, timeout=30) as client:
        send(client, "a@example.org", ["b@example.com"], MESSAGE)
        before = path.read_bytes()

        def fsync(fd: int) -> None:
            raise OSError(errno.EIO, "injected I/O error")

        with monkeypatch.context() as patch:
            patch.setattr(os, "fsync", fsync)
            with pytest.raises(smtplib.SMTPDataError) as refused:
                send(client, "a@example.org", ["b@example.com"], MESSAGE)
        assert_refused_451(refused)
        assert path.read_bytes() == before
        send(client, "a@example.org", ["b@example.com"], MESSAGE)  # the retry
    assert len(entries(path.read_bytes())) == 2


def test_disk_full_midway_truncates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, send: SendMail
) -> None:
    path = tmp_path / "mbox"
    path.write_bytes(b"From x@example.net Mon Jan  1 00:00:00 2024\n\nold\n\n")
    before = path.read_bytes()
    real_write = os.write
    calls = 0

    def write(fd: int, data: bytes) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            return real_write(fd, data[:100])  # a short write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    handler = Mbox(path)
    monkeypatch.setattr(os, "write", write)
    with (
        running(handler, port=0) as addr,
        smtplib.SMTP(*addr, timeout=30) as client,
        pytest.raises(smtplib.SMTPDataError) as refused,
    ):
        send(client, "a@example.org", ["b@example.com"], MESSAGE)
    assert_refused_451(refused)
    assert calls == 2
    assert path.read_bytes() == before


HOLD_LOCK = """
import fcntl, sys
with open(sys.argv[1], "ab") as f:
    getattr(fcntl, sys.argv[2])(f, fcntl.LOCK_EX)
    print("locked", flush=True)
    sys.stdin.read()
"""


@pytest.mark.parametrize("kind", ["flock", "lockf"])
def test_locked_by_another_program(tmp_path: Path, send: SendMail, kind: str) -> None:
    """Another process holds the lock: 451 after lock_timeout, delivered once it is gone.

    A process of its own, because lockf locks do not exclude threads of one process.
    """
    path = tmp_path / "mbox"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path), kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert holder.stdin and holder.stdout
    try:
        assert holder.stdout.readline() == b"locked\n"
        with (
            running(Mbox(path, lock_timeout=0.2), port=0) as addr,
            smtplib.SMTP(*addr, timeout=30) as client,
        ):
            with pytest.raises(smtplib.SMTPDataError) as refused:
                send(client, "a@example.org", ["b@example.com"], MESSAGE)
            assert_refused_451(refused)
            assert path.read_bytes() == b""
            holder.stdin.close()
            assert holder.wait(timeout=30) == 0
            send(client, "a@example.org", ["b@example.com"], MESSAGE)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=30)
    assert len(entries(path.read_bytes())) == 1
