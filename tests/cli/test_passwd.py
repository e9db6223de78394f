"""`fastsmtp passwd` writes users; `fastsmtp serve --auth-file` lets them in over TLS."""

from __future__ import annotations

import re
import smtplib
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
from test_serve import serve, stop


def passwd(auth_file: Path, user: str, password: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastsmtp", "passwd", "--auth-file", str(auth_file), user],
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def tls_files(tmp_path: Path, ca: trustme.CA) -> tuple[str, str]:
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    return str(cert), str(key)


def test_passwd_writes_a_private_file_and_refuses_an_empty_password(tmp_path: Path) -> None:
    auth_file = tmp_path / "users"
    assert passwd(auth_file, "alice", "correct horse").returncode == 0
    assert auth_file.stat().st_mode & 0o777 == 0o600
    [line] = auth_file.read_text().splitlines()
    assert re.fullmatch(r"alice:\$argon2id\$[^:]+:SCRAM-SHA-256\$4096:\S+", line)
    assert "correct horse" not in line
    empty = passwd(auth_file, "bob", "")
    assert empty.returncode == 2
    assert "empty password" in empty.stderr
    assert auth_file.read_text().splitlines() == [line]


def test_passwd_then_serve_with_auth_file_end_to_end(
    tmp_path: Path, tls_files: tuple[str, str], client_context: ssl.SSLContext
) -> None:
    auth_file, maildir = tmp_path / "users", tmp_path / "Maildir"
    assert passwd(auth_file, "alice", "correct horse").returncode == 0
    flags = (
        "--auth-file", str(auth_file),
        "--tls-cert", tls_files[0],
        "--tls-key", tls_files[1],
        "--maildir", str(maildir),
        "--local-domain", "example.com",
        "--hostname", "mx.test",
    )  # fmt: skip
    with serve(*flags) as (proc, log, address):
        with smtplib.SMTP(*address, timeout=10) as smtp:
            smtp.starttls(context=client_context)
            with pytest.raises(smtplib.SMTPAuthenticationError):
                smtp.login("alice", "wrong horse")
            smtp.login("alice", "correct horse")
            # Authenticated: relaying to a domain that is not local is allowed.
            smtp.sendmail("alice@example.com", ["friend@other.example"], b"Subject: e2e\r\n\r\n.")
        log.until(re.compile(r"AUTH PLAIN as alice"), 10)
        # A user added while the server runs is known at once (the file is reread).
        assert passwd(auth_file, "bob", "battery staple").returncode == 0
        with smtplib.SMTP(*address, timeout=10) as smtp:
            smtp.starttls(context=client_context)
            smtp.login("bob", "battery staple")
        log.until(re.compile(r"AUTH \S+ as bob"), 10)
        stop(proc, log)
    assert "correct horse" not in "\n".join(log.seen)
    [stored] = [p.read_bytes() for p in (maildir / "new").iterdir()]
    assert b"by mx.test (fastsmtp) with ESMTPSA id " in stored


def test_serve_with_auth_file_but_no_tls_says_why(tmp_path: Path) -> None:
    auth_file = tmp_path / "users"
    assert passwd(auth_file, "alice", "x").returncode == 0
    result = subprocess.run(
        [sys.executable, "-m", "fastsmtp", "serve", "--sink", "--auth-file", str(auth_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "AUTH needs TLS" in result.stderr
