"""Maildir delivery over real SMTP sessions: layout, exact content, durability, failures."""

from __future__ import annotations

import errno
import mailbox
import os
import re
import smtplib
import stat
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fastsmtp.handlers import Maildir
from fastsmtp.testing import running

MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: Bob <bob@example.com>\r\n"
    b"Subject: dots\r\n"
    b"\r\n"
    b".a line that starts with a dot\r\n"
    b"..two dots\r\n"
    b".\r\n"
    b"From the start of a line\r\n"
    b"last line\r\n"
)

SendMail = Callable[..., str]
SplitTrace = Callable[..., tuple[str, bytes, bytes]]

# Maildir spec: "time.M<usec>P<pid>Q<n>R<random>.host"
UNIQUE = re.compile(r"(\d+)\.M(\d{1,6})P(\d+)Q(\d+)R([0-9a-f]{8})\.(.+)")


def files(directory: Path) -> list[Path]:
    return sorted(directory.iterdir())


def only_message(maildir: Path) -> bytes:
    """The one message in new/, checking that tmp/ and cur/ are empty."""
    assert files(maildir / "tmp") == []
    assert files(maildir / "cur") == []
    (path,) = files(maildir / "new")
    return path.read_bytes()


def test_creates_the_maildir_with_mode_0700(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "Maildir"
    Maildir(root)
    for sub in ("", "tmp", "new", "cur"):
        assert stat.S_IMODE((root / sub).stat().st_mode) == 0o700
    Maildir(str(root))  # an existing Maildir is used as it is


def test_refuses_a_path_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "Maildir").write_bytes(b"")
    with pytest.raises(FileExistsError):
        Maildir(tmp_path / "Maildir")
    (tmp_path / "Other").mkdir()
    (tmp_path / "Other" / "new").write_bytes(b"")
    with pytest.raises(FileExistsError):
        Maildir(tmp_path / "Other")


def test_hook_is_sync_and_runs_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, send: SendMail
) -> None:
    handler = Maildir(tmp_path)
    threads: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        threads.append(threading.current_thread().name)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with running(handler, port=0) as addr, smtplib.SMTP(*addr, timeout=30) as client:
        send(client, "a@example.org", ["b@example.com"], MESSAGE)
    assert len(threads) == 2  # the file, then new/
    assert "fastsmtp-test-server" not in threads  # the event loop's thread


def test_message_is_stored_byte_exact(
    tmp_path: Path, send: SendMail, split_trace: SplitTrace
) -> None:
    with running(Maildir(tmp_path), port=0) as addr, smtplib.SMTP(*addr, timeout=30) as client:
        queue_id = send(client, "alice@example.org", ["bob@example.com"], MESSAGE)
    data = only_message(tmp_path)
    sender, received, rest = split_trace(data)
    assert sender == "alice@example.org"
    assert data.startswith(b"Return-Path: <alice@example.org>\r\nReceived: ")
    assert f" id {queue_id}".encode() in received
    assert b"for <bob@example.com>" in received
    assert rest == MESSAGE  # dot-unstuffed, CRLF kept, nothing else added


def test_file_name_and_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, send: SendMail
) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "mx/1:2.example")
    with running(Maildir(tmp_path), port=0) as addr, smtplib.SMTP(*addr, timeout=30) as client:
        send(client, "a@example.org", ["b@example.com"], MESSAGE)
    (path,) = files(tmp_path / "new")
    match = UNIQUE.fullmatch(path.name)
    assert match, path.name
    assert int(match[3]) == os.getpid()
    assert match[6] == r"mx\0571\0722.example"  # "/" and ":" escaped as the spec says
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_null_sender(tmp_path: Path, send: SendMail, split_trace: SplitTrace) -> None:
    with running(Maildir(tmp_path), port=0) as addr, smtplib.SMTP(*addr, timeout=30) as client:
        send(client, "", ["bob@example.com"], MESSAGE)
    sender, _, rest = split_trace(only_message(tmp_path))
    assert sender == ""
    assert rest == MESSAGE


def test_several_messages_in_one_session(
    tmp_path: Path, send: SendMail, split_trace: SplitTrace
) -> None:
    bodies = [b"Subject: number %d\r\n\r\nbody %d\r\n" % (i, i) for i in range(6)]
    with running(Maildir(tmp_path), port=0) as addr, smtplib.SMTP(*addr, timeout=30) as client:
        ids = [send(client, "a@example.org", ["b@example.com", "c@example.com"], b) for b in bodies]
    assert len(set(ids)) == len(bodies)
    assert files(tmp_path / "tmp") == []
    stored = files(tmp_path / "new")
    assert len(stored) == len(bodies)  # one file per message, not per recipient
    assert sorted(split_trace(p.read_bytes())[2] for p in stored) == sorted(bodies)
    # A Maildir reader agrees.
    subjects = sorted(str(m["Subject"]) for m in mailbox.Maildir(tmp_path, create=False))
    assert subjects == [f"number {i}" for i in range(6)]


def test_concurrent_clients(tmp_path: Path, send: SendMail, split_trace: SplitTrace) -> None:
    clients, per_client = 4, 5

    def one_client(n: int) -> list[bytes]:
        sent = []
        with smtplib.SMTP(*addr, timeout=30) as client:
            for i in range(per_client):
                body = (
                    b"Subject: client %d message %d\r\n\r\n" % (n, i) + (b"x" * 70 + b"\r\n") * 70
                )
                send(client, f"c{n}@example.org", ["b@example.com"], body)
                sent.append(body)
        return sent

    with running(Maildir(tmp_path), port=0) as addr, ThreadPoolExecutor(clients) as pool:
        sent = [body for bodies in pool.map(one_client, range(clients)) for body in bodies]
    assert files(tmp_path / "tmp") == []
    stored = [split_trace(p.read_bytes())[2] for p in files(tmp_path / "new")]
    assert sorted(stored) == sorted(sent)
    assert len(stored) == clients * per_client


def test_8bit_and_utf8(tmp_path: Path, send: SendMail, split_trace: SplitTrace) -> None:
    message = (
        "From: Jörg <jörg@exämple.org>\r\nSubject: grüße\r\n\r\nÄ € 日本語\r\n".encode()
        + b"latin-1 byte: \xe9\r\n"
    )
    with running(Maildir(tmp_path), port=0) as addr, smtplib.SMTP(*addr, timeout=30) as client:
        send(
            client, "jörg@exämple.org", ["bob@example.com"], message, ["BODY=8BITMIME", "SMTPUTF8"]
        )
        send(client, "a@example.org", ["b@example.com"], message, ["BODY=8BITMIME"])
    contents = sorted(p.read_bytes() for p in files(tmp_path / "new"))
    assert len(contents) == 2
    traces = sorted(split_trace(c)[::2] for c in contents)
    assert traces == [("a@example.org", message), ("jörg@exämple.org", message)]
    assert any(c.startswith("Return-Path: <jörg@exämple.org>\r\n".encode()) for c in contents)


# --- failures: 451, nothing half-written, and the retry works ----------------


def assert_refused_451(exc: pytest.ExceptionInfo[smtplib.SMTPDataError]) -> None:
    assert exc.value.smtp_code == 451
    assert exc.value.smtp_error.startswith(b"4.3.0 ")


def test_new_replaced_by_a_file(tmp_path: Path, send: SendMail, split_trace: SplitTrace) -> None:
    handler = Maildir(tmp_path)
    (tmp_path / "new").rmdir()
    (tmp_path / "new").write_bytes(b"not a directory")  # works as root too, unlike chmod
    with running(handler, port=0) as addr, smtplib.SMTP(*addr, timeout=30) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(client, "a@example.org", ["b@example.com"], MESSAGE)
        assert_refused_451(refused)
        assert files(tmp_path / "tmp") == []
        assert (tmp_path / "new").read_bytes() == b"not a directory"
        # The client retries once the problem is fixed; the session goes on.
        (tmp_path / "new").unlink()
        (tmp_path / "new").mkdir()
        send(client, "a@example.org", ["b@example.com"], MESSAGE)
    assert split_trace(only_message(tmp_path))[2] == MESSAGE


@pytest.mark.parametrize("failing_call", [1, 2], ids=["file", "directory"])
def test_fsync_failure(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    send: SendMail,
    split_trace: SplitTrace,
    failing_call: int,
) -> None:
    """fsync of the file (1st call) or of new/ (2nd): nothing stays in tmp/ or new/."""
    handler = Maildir(tmp_path)
    calls = 0
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        nonlocal calls
        calls += 1
        if calls == failing_call:
            raise OSError(errno.EIO, "injected I/O error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with running(handler, port=0) as addr, smtplib.SMTP(*addr, timeout=30) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(client, "a@example.org", ["b@example.com"], MESSAGE)
        assert_refused_451(refused)
        assert files(tmp_path / "tmp") == []
        assert files(tmp_path / "new") == []
        send(client, "a@example.org", ["b@example.com"], MESSAGE)  # the retry
    assert split_trace(only_message(tmp_path))[2] == MESSAGE


def test_write_failure(tmp_path: Path, send: SendMail) -> None:
    handler = Maildir(tmp_path)
    (tmp_path / "tmp").rmdir()  # the tmp file cannot even be created
    with (
        running(handler, port=0) as addr,
        smtplib.SMTP(*addr, timeout=30) as client,
        pytest.raises(smtplib.SMTPDataError) as refused,
    ):
        send(client, "a@example.org", ["b@example.com"], MESSAGE)
    assert_refused_451(refused)
    assert files(tmp_path / "new") == []


def test_filesystem_without_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, send: SendMail, split_trace: SplitTrace
) -> None:
    def link(src: str, dst: str) -> None:
        raise OSError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(os, "link", link)
    with running(Maildir(tmp_path), port=0) as addr, smtplib.SMTP(*addr, timeout=30) as client:
        send(client, "a@example.org", ["b@example.com"], MESSAGE)
    assert split_trace(only_message(tmp_path))[2] == MESSAGE


def test_existing_message_is_never_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, send: SendMail
) -> None:
    """If the unique name were taken in new/, delivery fails rather than overwrite."""
    handler = Maildir(tmp_path)
    monkeypatch.setattr(handler, "_unique_name", lambda: "taken")
    (tmp_path / "new" / "taken").write_bytes(b"an earlier message")
    with (
        running(handler, port=0) as addr,
        smtplib.SMTP(*addr, timeout=30) as client,
        pytest.raises(smtplib.SMTPDataError) as refused,
    ):
        send(client, "a@example.org", ["b@example.com"], MESSAGE)
    assert_refused_451(refused)
    assert (tmp_path / "new" / "taken").read_bytes() == b"an earlier message"
    assert files(tmp_path / "tmp") == []
