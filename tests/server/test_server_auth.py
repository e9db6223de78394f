"""SMTP AUTH (RFC 4954) over real sockets: smtplib, raw lines and a SCRAM client."""

from __future__ import annotations

import base64
import logging
import smtplib
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import fastsmtp
from fastsmtp import Collect, ConfigError, Server
from fastsmtp.auth import ScramSecrets
from fastsmtp.session import Session
from proxy_headers import v1, v2_tcp6
from scram_client import ScramClient

USERS = {"alice": "wonderland", "bob": "builder"}
SCRAM_USERS = {name: ScramSecrets.from_password(pw) for name, pw in USERS.items()}
MESSAGE = b"Subject: auth\r\n\r\nhello\r\n"


def check_password(session: Session, mechanism: str, username: str, password: str) -> bool:
    return USERS.get(username) == password


class Users:
    """An authenticator object that also does SCRAM, as a custom one would."""

    def __call__(self, session: Session, mechanism: str, username: str, password: str) -> bool:
        return check_password(session, mechanism, username, password)

    async def scram_secrets(self, username: str) -> ScramSecrets | None:
        return SCRAM_USERS.get(username)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@contextmanager
def tls_client(addr: tuple[str, int], context: ssl.SSLContext) -> Iterator[smtplib.SMTP]:
    with smtplib.SMTP(*addr, timeout=10) as smtp:
        smtp.ehlo()
        assert not smtp.has_extn("auth"), "AUTH must not be offered before TLS"
        smtp.starttls(context=context)
        smtp.ehlo()
        yield smtp


def plain_auth(raw: Any, user: str = "alice", password: str = "wonderland") -> Any:
    return raw.cmd("AUTH PLAIN " + b64("\0".join(("", user, password))))


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_smtplib_login_under_starttls(serve, server_context, client_context, mechanism):
    handler = Collect()
    addr = serve(handler, tls_context=server_context, authenticator=check_password)
    with tls_client(addr, client_context) as smtp:
        assert smtp.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        smtp.user, smtp.password = "alice", "wonderland"
        method = smtp.auth_plain if mechanism == "PLAIN" else smtp.auth_login
        assert smtp.auth(mechanism, method)[0] == 235
        smtp.sendmail("alice@example.com", ["x@example.com"], MESSAGE)
    [envelope] = handler.wait_for(1)
    assert handler.sessions[0].auth == "alice"
    assert b"with ESMTPSA id " in envelope.content.split(b"\r\n\r\n")[0]


def test_bad_password_is_535_and_logged_without_the_password(
    serve, server_context, client_context, caplog
):
    caplog.set_level(logging.INFO, logger="fastsmtp")
    addr = serve(Collect(), tls_context=server_context, authenticator=check_password)
    with tls_client(addr, client_context) as smtp:
        with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
            smtp.login("alice", "guess-me-not")
        assert failed.value.smtp_code == 535
        assert failed.value.smtp_error.startswith(b"5.7.8 ")
    serve.stop()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "AUTH PLAIN failed for 'alice'" in logged
    assert "guess-me-not" not in logged


def scram_login(smtp: smtplib.SMTP, user: str, password: str) -> tuple[int, bytes]:
    """SCRAM-SHA-256 with the test's own client, through smtplib's docmd."""
    client = ScramClient(user, password)
    code, text = smtp.docmd("AUTH", f"SCRAM-SHA-256 {b64(client.first())}")
    assert code == 334, text
    code, text = smtp.docmd(b64(client.final(base64.b64decode(text).decode())))
    if code != 334:
        return code, text
    assert client.verify(base64.b64decode(text).decode()), "bad server signature"
    return smtp.docmd("")


def test_scram_sha_256_with_an_independent_client(serve, server_context, client_context):
    handler = Collect()
    addr = serve(handler, tls_context=server_context, authenticator=Users())
    with tls_client(addr, client_context) as smtp:
        assert smtp.esmtp_features["auth"].split() == ["SCRAM-SHA-256", "PLAIN", "LOGIN"]
        assert scram_login(smtp, "bob", "builder") == (235, b"2.7.0 Authentication successful")
        smtp.sendmail("bob@example.com", ["x@example.com"], MESSAGE)
    handler.wait_for(1)
    assert handler.sessions[0].auth == "bob"


@pytest.mark.parametrize(("user", "password"), [("bob", "wrong"), ("nobody", "builder")])
def test_scram_failures_are_535(serve, server_context, client_context, user, password):
    addr = serve(Collect(), tls_context=server_context, authenticator=Users())
    with tls_client(addr, client_context) as smtp:
        code, text = scram_login(smtp, user, password)
        assert (code, text[:5]) == (535, b"5.7.8")


def test_sequence_and_syntax_errors(serve, client):
    raw = client(serve(Collect(), authenticator=check_password, auth_without_tls=True))
    before = plain_auth(raw)
    assert (before.code, before.enhanced) == (503, "5.5.1")
    raw.ehlo()
    assert raw.cmd("AUTH CRAM-MD5").code == 504
    assert raw.cmd("AUTH PLAIN !!!").enhanced == "5.5.2"
    assert raw.cmd("AUTH LOGIN").code == 334
    cancelled = raw.cmd("*")
    assert (cancelled.code, cancelled.enhanced) == (501, "5.0.0")
    assert raw.cmd("AUTH LOGIN").code == 334
    bad = raw.cmd("not base64!")
    assert (bad.code, bad.enhanced) == (501, "5.5.2")
    assert raw.cmd("MAIL FROM:<a@example.com>").code == 250
    during = plain_auth(raw)
    assert (during.code, during.enhanced, during.text) == (
        503,
        "5.5.1",
        "Error: AUTH not permitted during a mail transaction",
    )
    assert raw.cmd("RSET").code == 250
    assert plain_auth(raw).code == 235
    twice = plain_auth(raw)
    assert (twice.code, twice.text) == (503, "Error: already authenticated")


def test_auth_is_not_offered_without_tls(serve, client, server_context):
    raw = client(serve(Collect(), tls_context=server_context, authenticator=check_password))
    assert not [line for line in raw.ehlo().lines if line.startswith("AUTH")]
    refused = plain_auth(raw)
    assert (refused.code, refused.enhanced) == (538, "5.7.11")


def test_auth_in_plain_text_when_allowed(serve, client):
    handler = Collect()
    raw = client(serve(handler, authenticator=check_password, auth_without_tls=True))
    assert "AUTH PLAIN LOGIN" in raw.ehlo().lines
    assert plain_auth(raw).code == 235
    raw.begin()
    assert raw.send_message(MESSAGE).code == 250
    [envelope] = handler.wait_for(1)
    assert b"with ESMTPA id " in envelope.content


def test_without_an_authenticator_auth_is_unknown(serve, client):
    raw = client(serve(Collect(), auth_without_tls=True))
    assert not [line for line in raw.ehlo().lines if line.startswith("AUTH")]
    assert plain_auth(raw).code == 500


def test_mail_takes_the_auth_parameter_when_auth_is_offered(serve, client):
    handler = Collect()
    raw = client(serve(handler, authenticator=check_password, auth_without_tls=True))
    raw.ehlo()
    assert plain_auth(raw).code == 235
    # RFC 4954 §5: a server that offers AUTH must take MAIL's AUTH parameter.
    assert raw.cmd("MAIL FROM:<alice@example.com> AUTH=<>").code == 250
    assert raw.cmd("RCPT TO:<x@example.com>").code == 250
    assert raw.send_message(MESSAGE).code == 250
    assert handler.wait_for(1)[0].mail_options == {"AUTH": "<>"}
    unoffered = client(serve(Collect()))
    unoffered.ehlo()
    assert unoffered.cmd("MAIL FROM:<alice@example.com> AUTH=<>").code == 555


def test_require_auth_refuses_mail_until_authenticated(serve, client):
    raw = client(
        serve(Collect(), authenticator=check_password, auth_without_tls=True, require_auth=True)
    )
    raw.ehlo()
    refused = raw.cmd("MAIL FROM:<a@example.com>")
    assert (refused.code, refused.enhanced) == (530, "5.7.0")
    assert plain_auth(raw).code == 235
    assert raw.cmd("MAIL FROM:<a@example.com>").code == 250


def test_authenticated_clients_relay_and_outsiders_do_not(serve, client):
    handler = Collect()
    addr = serve(
        handler,
        authenticator=check_password,
        auth_without_tls=True,
        local_domains=["example.com"],
    )
    outsider = client(addr)
    outsider.ehlo()
    assert outsider.cmd("MAIL FROM:<spam@elsewhere.example>").code == 250
    denied = outsider.cmd("RCPT TO:<victim@other.example>")
    assert (denied.code, denied.enhanced) == (554, "5.7.1")
    member = client(addr)
    member.ehlo()
    assert plain_auth(member).code == 235
    assert member.cmd("MAIL FROM:<alice@example.com>").code == 250
    assert member.cmd("RCPT TO:<friend@other.example>").code == 250
    assert member.send_message(MESSAGE).code == 250
    assert handler.wait_for(1)[0].rcpt_tos == ["friend@other.example"]


def test_failed_attempts_are_rate_limited_per_client(serve, client):
    addr = serve(
        Collect(), authenticator=check_password, auth_without_tls=True, auth_max_failures=2
    )
    raw = client(addr)
    raw.ehlo()
    assert [plain_auth(raw, password="x").code for _ in range(2)] == [535, 535]
    limited = plain_auth(raw)  # even the right password: the client is locked out
    assert (limited.code, limited.enhanced) == (421, "4.7.0")
    raw.expect_closed()
    again = client(addr)
    again.ehlo()
    assert plain_auth(again).code == 421
    # Another client address is not locked out.
    with smtplib.SMTP(*addr, timeout=10, source_address=("127.0.0.2", 0)) as other:
        other.ehlo()
        assert other.docmd("AUTH", "PLAIN " + b64("\0alice\0wonderland"))[0] == 235


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (v2_tcp6("::ffff:203.0.113.9", "2001:db8::1", 40000, 25), v1(("203.0.113.9", 40001))),
        (v1(("203.0.113.9", 40000)), v2_tcp6("::ffff:203.0.113.9", "2001:db8::1", 40001, 25)),
    ],
    ids=["mapped-then-v4", "v4-then-mapped"],
)
def test_failures_count_per_client_address_as_the_connection_limits_see_it(
    serve, client, first, second
):
    # Behind a dual-stack balancer one client may come as 203.0.113.9 and as
    # ::ffff:203.0.113.9: one address for the limits, so one for AUTH failures.
    addr = serve(
        Collect(),
        authenticator=check_password,
        auth_without_tls=True,
        auth_max_failures=2,
        proxy_protocol=True,
    )
    raw = client(addr, greeting=False)
    raw.send(first)
    assert raw.reply().code == 220
    raw.ehlo()
    assert [plain_auth(raw, password="x").code for _ in range(2)] == [535, 535]
    again = client(addr, greeting=False)
    again.send(second)
    assert again.reply().code == 220
    again.ehlo()
    limited = plain_auth(again)
    assert (limited.code, limited.enhanced) == (421, "4.7.0")


def test_authenticator_may_be_async_and_name_the_identity(serve, client):
    async def check(session: Session, mechanism: str, username: str, password: str) -> str | None:
        return f"{username}@example.com" if USERS.get(username) == password else None

    handler = Collect()
    raw = client(serve(handler, authenticator=check, auth_without_tls=True))
    raw.ehlo()
    assert plain_auth(raw, "bob", "builder").code == 235
    raw.begin()
    assert raw.send_message(MESSAGE).code == 250
    handler.wait_for(1)
    assert handler.sessions[0].auth == "bob@example.com"


def test_a_sync_authenticator_runs_off_the_event_loop_thread(serve, client):
    threads: list[str] = []

    def check(session: Session, mechanism: str, username: str, password: str) -> bool:
        threads.append(threading.current_thread().name)
        return check_password(session, mechanism, username, password)

    raw = client(serve(Collect(), authenticator=check, auth_without_tls=True))
    raw.ehlo()
    assert plain_auth(raw).code == 235
    assert len(threads) == 1
    assert threads[0] not in ("fastsmtp-test-server", threading.current_thread().name)


def test_a_failing_authenticator_is_454_and_a_logged_traceback(serve, client, tracebacks):
    def broken(session: Session, mechanism: str, username: str, password: str) -> bool:
        raise RuntimeError("database down")

    raw = client(serve(Collect(), authenticator=broken, auth_without_tls=True))
    raw.ehlo()
    reply = plain_auth(raw)
    assert (reply.code, reply.enhanced) == (454, "4.7.0")
    assert raw.cmd("NOOP").code == 250
    serve.stop()
    assert [r.exc_info[1] for r in tracebacks() if r.exc_info]  # logged with its traceback


def test_auth_without_tls_is_a_config_error():
    with pytest.raises(ConfigError, match="AUTH needs TLS"):
        Server(Collect(), authenticator=check_password)
    with pytest.raises(ConfigError, match="require_auth needs users"):
        Server(Collect(), require_auth=True)
    # Forked workers build their own servers from settings: a callable cannot follow.
    with pytest.raises(ConfigError, match="auth_file, not authenticator="):
        fastsmtp.run(Collect(), workers=2, authenticator=check_password, auth_without_tls=True)
