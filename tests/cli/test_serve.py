"""`fastsmtp serve` as a user runs it: a real process, real signals, real sockets."""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

LISTENING = re.compile(r"listening on (\S+):(\d+)")


class LogReader:
    """Lines of a process's stderr, read without Python's buffering so select() tells truth."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        self.fd = proc.stderr.fileno()
        self.buf = b""
        self.seen: list[str] = []

    def until(self, pattern: re.Pattern[str], timeout: float) -> str:
        """The first line from now on matching ``pattern``; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.fd, selectors.EVENT_READ)
            while True:
                while b"\n" in self.buf:
                    raw, self.buf = self.buf.split(b"\n", 1)
                    line = raw.decode("utf-8", "replace")
                    self.seen.append(line)
                    if pattern.search(line):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    break
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    break
                self.buf += chunk
        log = "\n".join(self.seen)
        raise AssertionError(f"server never logged {pattern.pattern!r}; log:\n{log}")

    def rest(self, timeout: float) -> str:
        """Every line seen, and whatever else comes within ``timeout`` or until EOF."""
        with contextlib.suppress(AssertionError):
            self.until(re.compile(r"(?!)"), timeout)  # a pattern that never matches
        return "\n".join([*self.seen, self.buf.decode("utf-8", "replace")])


def stop(proc: subprocess.Popen[bytes], log: LogReader, timeout: float = 20) -> None:
    """SIGTERM; the server must exit 0 within ``timeout``, or the failure shows why not.

    ``serve`` runs it with PYTHONFAULTHANDLER=1: a server that hangs is sent
    SIGABRT, which writes every thread's stack to its log.
    """
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        pytest.fail(f"fastsmtp serve still ran {timeout} s after SIGTERM; its log:\n{log.rest(10)}")
    assert code == 0, log.rest(5)


@contextmanager
def serve(*flags: str) -> Iterator[tuple[subprocess.Popen[bytes], LogReader, tuple[str, int]]]:
    """Run ``python -m fastsmtp serve`` on a free loopback port; stop it after."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastsmtp", "serve", "--listen", "127.0.0.1:0", *flags],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},  # see stop()
    )
    try:
        log = LogReader(proc)
        match = LISTENING.search(log.until(LISTENING, 20))
        assert match is not None
        yield proc, log, (match.group(1), int(match.group(2)))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=20)


def test_serve_delivers_to_maildir_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    with serve("--maildir", str(maildir), "--hostname", "mx.test") as (proc, log, address):
        with smtplib.SMTP(*address, timeout=10) as client:
            client.sendmail("a@example.com", ["b@example.com"], b"Subject: cli\r\n\r\nhi\r\n")
        line = log.until(re.compile(r"from=<a@example.com> to=<b@example.com>"), 10)
        assert "size=" in line
        stop(proc, log)
    files = list((maildir / "new").iterdir())
    assert len(files) == 1
    assert files[0].read_bytes().endswith(b"Subject: cli\n\nhi\n") or files[
        0
    ].read_bytes().endswith(b"Subject: cli\r\n\r\nhi\r\n")


def test_sigint_sends_421_to_connected_clients(tmp_path: Path) -> None:
    with serve("--sink") as (proc, _, address):
        client = smtplib.SMTP(*address, timeout=10)
        client.ehlo()
        proc.send_signal(signal.SIGINT)
        code, message = client.getreply()
        assert (code, message[:5]) == (421, b"4.3.2")
        assert proc.wait(timeout=20) == 0
        client.close()


def test_serve_without_a_handler_says_what_to_choose() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fastsmtp", "serve", "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--maildir DIR, --mbox FILE, --sink or --print" in result.stderr


def test_config_file_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "fastsmtp.toml"
    config.write_text('sink = true\nhostname = "from-config.test"\nmax_message_size = 1000\n')
    with serve("--config", str(config), "--max-message-size", "2000") as (proc, log, address):
        with smtplib.SMTP(*address, timeout=10) as client:
            code, text = client.ehlo()
        stop(proc, log)
    assert code == 250
    assert text.startswith(b"from-config.test")
    assert b"SIZE 2000" in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("sink = true\nmax_mesage_size = 5\n", "unknown setting 'max_mesage_size'"),
        ("sink = true\nmax_message_size = 'big'\n", "max_message_size must be int"),
        ("sink = true\nmaildir = '/tmp/x'\n", "choose one local handler"),
        ("sink = [", "is not valid TOML"),
        ("sink = true\nlisten = ['unix:']\n", "listen needs a path after 'unix:'"),
        ("sink = true\nlisten = ['unix:/tmp/x.sock']\nworkers = 2\n", "cannot share a Unix"),
        ("sink = true\nspool_dir = '/nonexistent/spool'\n", "spool_dir '/nonexistent/spool'"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, content: str, message: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(content)
    result = subprocess.run(
        [sys.executable, "-m", "fastsmtp", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_port_in_use_is_an_error_not_a_traceback() -> None:
    with serve("--sink") as (_, _, (host, port)):
        result = subprocess.run(
            [sys.executable, "-m", "fastsmtp", "serve", "--sink", "--listen", f"{host}:{port}"],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "address already in use" in result.stderr.lower()


def test_settings_and_version_commands() -> None:
    table = subprocess.run(
        [sys.executable, "-m", "fastsmtp", "settings"], capture_output=True, text=True, timeout=30
    )
    assert table.returncode == 0
    assert "| `max_message_size` | `--max-message-size` | `33554432` |" in table.stdout
    version = subprocess.run(
        [sys.executable, "-m", "fastsmtp", "--version"], capture_output=True, text=True, timeout=30
    )
    import fastsmtp

    assert version.stdout.strip() == f"fastsmtp {fastsmtp.__version__}"


def test_tls_flags_starttls_and_implicit_tls(
    tmp_path: Path, ca: Any, client_context: ssl.SSLContext
) -> None:
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    flags = ("--sink", "--tls-cert", str(cert_file), "--tls-key", str(key_file))
    implicit = ("--implicit-tls-listen", "127.0.0.1:0", "--require-tls")
    with serve(*flags, *implicit) as (proc, log, address):
        line = log.until(re.compile(r"listening with implicit TLS on (\S+):(\d+)"), 10)
        match = re.search(r"on (\S+):(\d+)", line)
        assert match is not None
        with smtplib.SMTP_SSL(match.group(1), int(match.group(2)), context=client_context) as s:
            assert (
                s.sendmail("a@example.com", ["b@example.com"], b"Subject: 465\r\n\r\nx\r\n") == {}
            )
        with smtplib.SMTP(*address, timeout=10) as plain:
            plain.ehlo()
            assert plain.docmd("MAIL FROM:<a@example.com>")[0] == 530
            plain.starttls(context=client_context)
            assert plain.sendmail("a@example.com", ["b@example.com"], b"Subject: tls\r\n\r\n") == {}
        stop(proc, log)


def test_serve_with_a_local_domain_is_not_an_open_relay(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    with serve("--maildir", str(maildir), "--local-domain", "example.com") as (proc, log, address):
        with smtplib.SMTP(*address, timeout=10) as client:
            client.ehlo()
            client.mail("outsider@elsewhere.example")
            code, text = client.rcpt("victim@other.example")
            assert (code, text) == (554, b"5.7.1 Relay access denied")
            assert client.rcpt("user@example.com")[0] == 250
        stop(proc, log)


def test_workers_share_one_port_and_stop_together(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    with serve("--maildir", str(maildir), "--workers", "2") as (proc, log, address):
        # Both workers listen on the one port the parent reserved.
        second = LISTENING.search(log.until(LISTENING, 20))
        assert second is not None
        assert (second.group(1), int(second.group(2))) == address
        for i in range(40):  # new connections: the kernel spreads them over both
            with smtplib.SMTP(*address, timeout=10) as client:
                client.sendmail(
                    "a@example.com", ["b@example.com"], f"Subject: {i}\r\n\r\n".encode()
                )
        stop(proc, log, 30)
    messages = [p.read_bytes() for p in (maildir / "new").iterdir()]
    assert len(messages) == 40
    # Queue ids start with a per-process prefix: both workers took mail.
    ids = {re.search(rb" id ([0-9A-F]{8})", m).group(1) for m in messages}  # type: ignore[union-attr]
    assert len(ids) == 2


def test_proxy_protocol_and_limits_from_the_command_line() -> None:
    flags = ("--sink", "--hostname", "mx.test", "--proxy-protocol", "--max-connections-per-ip", "1")
    with serve(*flags) as (_, log, address):
        with socket.create_connection(address, timeout=10) as first:
            first.sendall(b"PROXY TCP4 203.0.113.9 192.0.2.1 40000 25\r\n")
            assert first.recv(1024).startswith(b"220 mx.test")
            with socket.create_connection(address, timeout=10) as second:
                second.sendall(b"PROXY TCP4 203.0.113.9 192.0.2.1 40001 25\r\n")
                assert second.recv(1024).startswith(b"421 4.7.0 mx.test ")
        log.until(re.compile(r"refused \('203\.0\.113\.9', 40001\)"), 10)


def test_serve_lmtp_on_a_unix_socket_into_maildir(tmp_path: Path) -> None:
    import tempfile

    maildir = tmp_path / "Maildir"
    with tempfile.TemporaryDirectory(prefix="fsmtp") as directory:
        sock = os.path.join(directory, "lmtp.sock")
        flags = ("--lmtp", "--listen", f"unix:{sock}", "--maildir", str(maildir))
        with serve(*flags, "--hostname", "mx.test") as (proc, log, _):
            assert any(f"listening on {sock} as mx.test" in line for line in log.seen)
            with smtplib.LMTP(sock, timeout=10) as client:
                client.sendmail("a@example.com", ["b@example.com"], b"Subject: lmtp\r\n\r\nhi\r\n")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
        assert not os.path.exists(sock)
    [stored] = (maildir / "new").iterdir()
    assert b"(fastsmtp) with LMTP id" in stored.read_bytes()


def _uvloop_installed() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("loop", ["auto", "asyncio", "uvloop"])
def test_serve_runs_on_the_event_loop_it_was_given(loop: str) -> None:
    if loop == "uvloop" and not _uvloop_installed():
        pytest.skip("uvloop is not installed")
    expected = "uvloop" if loop == "uvloop" or (loop == "auto" and _uvloop_installed()) else loop
    with serve("--sink", "--loop", loop) as (proc, log, address):
        assert f"event loop: {expected}" in "\n".join(log.seen)
        with smtplib.SMTP(*address, timeout=10) as client:
            assert client.noop()[0] == 250
        stop(proc, log)


def test_auto_falls_back_to_asyncio_and_uvloop_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fastsmtp import ConfigError
    from fastsmtp.server import new_event_loop

    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if not installed
    loop = new_event_loop("auto")
    try:
        assert type(loop).__module__.startswith("asyncio.")
    finally:
        loop.close()
    with pytest.raises(ConfigError, match=r"pip install 'fastsmtp-engine\[uvloop\]'"):
        new_event_loop("uvloop")
