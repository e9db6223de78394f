"""The SASL exchange, SCRAM secrets, the auth file and the failure limiter, without sockets."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from fastsmtp import ConfigError
from fastsmtp.auth import (
    FailureLimiter,
    FileAuthenticator,
    SASLServer,
    ScramSecrets,
    _Scram,
    set_password,
)
from fastsmtp.config import Settings
from fastsmtp.protocol.events import NEED_DATA, Authenticate, AuthResult, StartTLS
from fastsmtp.protocol.replies import Reply
from fastsmtp.protocol.server import ServerConnection
from fastsmtp.session import Session
from scram_client import ScramClient

ALL = ("SCRAM-SHA-256", "PLAIN", "LOGIN")


def b64(text: str) -> bytes:
    return base64.b64encode(text.encode())


def unb64(reply: Reply) -> str:
    assert reply.code == 334, reply
    return base64.b64decode(reply.text).decode()


# --- RFC 7677 §3: the SCRAM-SHA-256 test vector, server side ----------------
RFC7677_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC7677_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")


def test_rfc7677_vector() -> None:
    secrets = ScramSecrets.from_password("pencil", RFC7677_SALT, 4096)
    scram = _Scram(nonce=lambda: RFC7677_SERVER_NONCE)
    asked = scram.start(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    assert (asked.username, asked.password) == ("user", None)  # type: ignore[union-attr]
    first = scram.secrets(secrets)
    assert first.data == (  # type: ignore[union-attr]
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    final = scram.step(
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    assert final.data == b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="  # type: ignore[union-attr]
    assert scram.step(b"").identity == "user"  # type: ignore[union-attr]


# --- the exchange as ServerConnection sees it -------------------------------
def test_plain_with_initial_response() -> None:
    sasl = SASLServer(ALL)
    asked = sasl.begin(b"PLAIN " + b64("\0alice\0pw"))
    assert asked == Authenticate("PLAIN", "alice", "pw")
    assert "pw" not in repr(asked)  # passwords never reach a log through repr
    assert sasl.answer("alice") == AuthResult("PLAIN", "alice", "alice")


def test_plain_without_initial_response_gets_an_empty_challenge() -> None:
    sasl = SASLServer(ALL)
    challenge = sasl.begin(b"plain")
    assert isinstance(challenge, Reply) and (challenge.code, challenge.text) == (334, "")
    assert sasl.line(b64("alice\0alice\0pw")) == Authenticate("PLAIN", "alice", "pw")
    assert sasl.answer(None) == AuthResult("PLAIN", "alice", None)


def test_plain_zero_length_initial_response_is_malformed() -> None:
    reply = SASLServer(ALL).begin(b"PLAIN =")
    assert isinstance(reply, Reply) and (reply.code, reply.enhanced) == (501, "5.5.2")


def test_plain_for_another_identity_fails() -> None:
    result = SASLServer(ALL).begin(b"PLAIN " + b64("root\0alice\0pw"))
    assert result == AuthResult("PLAIN", "alice", None)


def test_login_prompts_for_username_and_password() -> None:
    sasl = SASLServer(ALL)
    assert unb64(sasl.begin(b"LOGIN")) == "Username:"  # type: ignore[arg-type]
    assert unb64(sasl.line(b64("bob"))) == "Password:"  # type: ignore[arg-type]
    assert sasl.line(b64("pw")) == Authenticate("LOGIN", "bob", "pw")


@pytest.mark.parametrize(
    ("line", "code", "enhanced"),
    [(b"*", 501, "5.0.0"), (b"!!notbase64", 501, "5.5.2"), (b"YQ", 501, "5.5.2")],
)
def test_cancel_and_bad_base64(line: bytes, code: int, enhanced: str) -> None:
    sasl = SASLServer(ALL)
    sasl.begin(b"LOGIN")
    reply = sasl.line(line)
    assert isinstance(reply, Reply) and (reply.code, reply.enhanced) == (code, enhanced)


@pytest.mark.parametrize(
    ("args", "code"), [(b"CRAM-MD5", 504), (b"", 501), (b"PLAIN a b", 501), (b"PLAIN %%", 501)]
)
def test_bad_auth_commands(args: bytes, code: int) -> None:
    reply = SASLServer(("PLAIN", "LOGIN")).begin(args)
    assert isinstance(reply, Reply) and reply.code == code


def test_scram_is_not_available_unless_offered() -> None:
    reply = SASLServer(("PLAIN", "LOGIN")).begin(b"SCRAM-SHA-256")
    assert isinstance(reply, Reply) and (reply.code, reply.enhanced) == (504, "5.5.4")


def scram_exchange(secrets: ScramSecrets | None, password: str) -> tuple[object, ScramClient]:
    client = ScramClient("zoë", password)
    sasl = SASLServer(ALL)
    assert sasl.begin(b"SCRAM-SHA-256 " + b64(client.first())) == Authenticate(
        "SCRAM-SHA-256", "zoë", None
    )
    server_first = unb64(sasl.answer(secrets))  # type: ignore[arg-type]
    outcome = sasl.line(b64(client.final(server_first)))
    if isinstance(outcome, Reply) and outcome.code == 334:
        assert client.verify(unb64(outcome))
        outcome = sasl.line(b"")
    return outcome, client


def test_scram_with_an_independent_client() -> None:
    outcome, _ = scram_exchange(ScramSecrets.from_password("pässword"), "pässword")
    assert outcome == AuthResult("SCRAM-SHA-256", "zoë", "zoë")


def test_scram_wrong_password_fails() -> None:
    outcome, _ = scram_exchange(ScramSecrets.from_password("right"), "wrong")
    assert outcome == AuthResult("SCRAM-SHA-256", "zoë", None)


def test_scram_unknown_user_gets_a_stable_fake_salt_and_fails() -> None:
    salts = set()
    for _ in range(2):
        client = ScramClient("nobody", "x")
        sasl = SASLServer(ALL)
        sasl.begin(b"SCRAM-SHA-256 " + b64(client.first()))
        server_first = unb64(sasl.answer(None))  # type: ignore[arg-type]
        salts.add(server_first.split(",s=")[1])
        assert sasl.line(b64(client.final(server_first))) == AuthResult(
            "SCRAM-SHA-256", "nobody", None
        )
    assert len(salts) == 1


@pytest.mark.parametrize(
    "client_first",
    [b"p=tls-unique,,n=u,r=abc", b"n,,n=u", b"n,,r=abc,n=u", b"x,,n=u,r=abc", b"n,,m=ext,n=u,r=a"],
)
def test_scram_bad_client_first(client_first: bytes) -> None:
    outcome = SASLServer(ALL).begin(b"SCRAM-SHA-256 " + base64.b64encode(client_first))
    refused = isinstance(outcome, Reply) and outcome.code == 501
    assert refused or outcome == AuthResult("SCRAM-SHA-256", "", None)


def test_scram_secrets_text_round_trip() -> None:
    secrets = ScramSecrets.from_password("pencil", RFC7677_SALT, 4096)
    text = str(secrets)
    assert text.startswith("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$")
    assert ScramSecrets.parse(text) == secrets
    with pytest.raises(ValueError, match="SCRAM-SHA-256"):
        ScramSecrets.parse("SCRAM-SHA-256$4096:abc")


# --- ServerConnection: AUTH resets with STARTTLS ------------------------------
def pump(conn: ServerConnection, data: bytes) -> list[object]:
    conn.receive_data(data)
    events = []
    for _ in range(100):
        event = conn.next_event()
        if event is NEED_DATA:
            return events
        events.append(event)
        if isinstance(event, Authenticate):
            conn.respond_auth(event.username)
        elif conn.pending_decision is not None:
            conn.respond()
    raise AssertionError("no end of events")


def test_starttls_forgets_the_authentication() -> None:
    settings = Settings(hostname="mx.test", auth_without_tls=True)
    conn = ServerConnection(
        settings, Session(id="T"), starttls=True, auth_mechanisms=("PLAIN", "LOGIN")
    )
    conn.greet()
    pump(conn, b"EHLO c\r\nAUTH PLAIN " + b64("\0alice\0pw") + b"\r\n")
    assert conn.session.auth == "alice"
    assert isinstance(pump(conn, b"STARTTLS\r\n")[-1], StartTLS)
    conn.tls_started()
    assert conn.session.auth is None


# --- the auth file ---------------------------------------------------------------
def test_set_password_writes_mode_0600_and_keeps_other_lines(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text("# comment\n")
    set_password(str(path), "alice", "one")
    set_password(str(path), "bob", "two")
    set_password(str(path), "alice", "three")
    assert path.stat().st_mode & 0o777 == 0o600
    lines = path.read_text().splitlines()
    assert lines[0] == "# comment"
    assert [line.split(":")[0] for line in lines[1:]] == ["alice", "bob"]
    assert lines[1].split(":")[1].startswith("$argon2id$")
    assert ":SCRAM-SHA-256$4096:" in lines[1]
    assert "three" not in path.read_text()
    check = FileAuthenticator(str(path))
    session = Session(id="T")
    assert check(session, "PLAIN", "alice", "three")
    assert not check(session, "PLAIN", "alice", "one")
    assert not check(session, "PLAIN", "nobody", "three")
    assert check.scram_secrets("bob") is not None
    assert check.scram_secrets("nobody") is None
    assert not list(tmp_path.glob(".users.*")), "temporary file left behind"


def test_file_authenticator_reads_a_changed_file(tmp_path: Path) -> None:
    path = tmp_path / "users"
    set_password(str(path), "alice", "one")
    check = FileAuthenticator(str(path))
    set_password(str(path), "carol", "two")  # a rename: another inode
    assert check(Session(id="T"), "LOGIN", "carol", "two")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("alice:secret\n", "line 1"),
        ("# ok\nbob:$argon2id$x:SCRAM-SHA-256$1:bad\n", "line 2"),
        (":$argon2id$x\n", "line 1"),
    ],
)
def test_bad_auth_file_lines_are_named(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "users"
    path.write_text(content)
    with pytest.raises(ConfigError, match=problem):
        FileAuthenticator(str(path))


def test_missing_auth_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read auth_file"):
        FileAuthenticator(str(tmp_path / "absent"))


@pytest.mark.parametrize(("user", "password"), [("a b", "x"), ("a:b", "x"), ("", "x"), ("a", "")])
def test_set_password_refuses_bad_input(tmp_path: Path, user: str, password: str) -> None:
    with pytest.raises(ConfigError):
        set_password(str(tmp_path / "users"), user, password)
    assert not os.listdir(tmp_path)


# --- the failure limiter -----------------------------------------------------------
def test_failure_limiter_blocks_within_the_window_then_forgets() -> None:
    limiter = FailureLimiter(max_failures=2, window=60)
    limiter.failed("192.0.2.1", 0)
    assert not limiter.blocked("192.0.2.1", 1)
    limiter.failed("192.0.2.1", 10)
    assert limiter.blocked("192.0.2.1", 11)
    assert not limiter.blocked("192.0.2.2", 11)
    assert limiter.blocked("192.0.2.1", 59)
    assert not limiter.blocked("192.0.2.1", 71)  # both failures are older than the window


def test_failure_limiter_memory_is_bounded() -> None:
    limiter = FailureLimiter(max_failures=1, window=60, max_clients=3)
    for i in range(10):
        limiter.failed(f"client{i}", 0)
    assert [limiter.blocked(f"client{i}", 1) for i in (0, 9)] == [False, True]


def auth_connection(**settings: object) -> ServerConnection:
    conn = ServerConnection(
        Settings(hostname="mx.test", auth_without_tls=True, **settings),  # type: ignore[arg-type]
        Session(id="T"),
        auth_mechanisms=("PLAIN", "LOGIN"),
    )
    conn.greet()
    conn.data_to_send()
    return conn


def test_a_bad_line_during_auth_ends_the_exchange() -> None:
    conn = auth_connection()
    pump(conn, b"EHLO c\r\nAUTH LOGIN\r\n")
    assert conn.data_to_send().endswith(b"334 VXNlcm5hbWU6\r\n")
    # A bare LF is refused, and what follows is a command again, not a SASL response.
    pump(conn, b"YWxpY2U=\nNOOP\r\n")
    assert conn.data_to_send() == (
        b"500 5.5.2 Error: bare CR or LF received; lines must end with CRLF\r\n250 2.0.0 OK\r\n"
    )


def test_auth_after_helo_needs_ehlo() -> None:
    conn = auth_connection()
    pump(conn, b"HELO c\r\nAUTH PLAIN\r\n")
    assert conn.data_to_send().endswith(b"503 5.5.1 Error: send EHLO first\r\n")
    assert conn.session.auth is None
