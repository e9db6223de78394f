"""aiosmtpd's AUTH keywords on ``fastsmtp.compat.aiosmtpd``, over real sockets.

The authenticators follow the shape aiosmtpd's documentation gives
(``authenticator(server, session, envelope, mechanism, auth_data)``
returning ``AuthResult``, and the older ``auth_callback(mechanism, login,
password)``), written afresh. The comparison test runs one under the real
aiosmtpd and under the compat Controller with the same smtplib session.
"""

from __future__ import annotations

import smtplib
from typing import Any

import pytest

from fastsmtp.compat.aiosmtpd import AuthResult, LoginPassword

MESSAGE = b"Subject: hi\r\n\r\nbody\r\n"
USERS = {b"anne": b"secret"}


class Recorder:
    """A handler that keeps what AUTH left on the session for each message."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def handle_DATA(self, server, session, envelope):
        self.seen.append(
            {
                "authenticated": session.authenticated,
                "login": getattr(session.auth_data, "login", None),
            }
        )
        return "250 OK"


def make_authenticator(result_class: type) -> Any:
    """An aiosmtpd-style authenticator answering with ``result_class`` objects."""
    calls: list[tuple[str, bytes]] = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        calls.append((mechanism, auth_data.login))
        if USERS.get(auth_data.login) != auth_data.password:
            return result_class(success=False, handled=False)
        return result_class(success=True, auth_data=auth_data)

    authenticator.calls = calls  # type: ignore[attr-defined]
    return authenticator


def login(address, client_context, user: str, password: str, mechanism: str) -> tuple[int, Any]:
    """STARTTLS, AUTH and (when it worked) one message; the AUTH reply code."""
    with smtplib.SMTP(*address, timeout=5) as client:
        client.starttls(context=client_context)
        client.ehlo()
        advertised = client.esmtp_features.get("auth", "")
        client.user, client.password = user, password
        try:
            code, _ = client.auth(mechanism, getattr(client, f"auth_{mechanism.lower()}"))
        except smtplib.SMTPAuthenticationError as refused:
            return refused.smtp_code, advertised
        client.sendmail("anne@example.com", ["bob@example.com"], MESSAGE)
        return code, advertised


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_authenticator_matches_aiosmtpd(
    mechanism, fastsmtp_controller, aiosmtpd_controller, server_context, client_context
):
    smtp = pytest.importorskip("aiosmtpd.smtp")
    results = {}
    for name, start in (("aiosmtpd", aiosmtpd_controller), ("fastsmtp", fastsmtp_controller)):
        handler = Recorder()
        authenticator = make_authenticator(smtp.AuthResult)
        address = start(handler, tls_context=server_context, authenticator=authenticator)
        bad = login(address, client_context, "anne", "wrong", mechanism)[0]
        good = login(address, client_context, "anne", "secret", mechanism)[0]
        results[name] = (bad, good, handler.seen, authenticator.calls)
    assert results["fastsmtp"] == results["aiosmtpd"]
    bad, good, seen, calls = results["fastsmtp"]
    assert (bad, good) == (535, 235)
    assert seen == [{"authenticated": True, "login": b"anne"}]
    assert calls == [(mechanism, b"anne"), (mechanism, b"anne")]


def test_compat_result_classes_work_without_aiosmtpd(
    fastsmtp_controller, server_context, client_context
):
    handler = Recorder()
    authenticator = make_authenticator(AuthResult)
    address = fastsmtp_controller(handler, tls_context=server_context, authenticator=authenticator)
    assert login(address, client_context, "anne", "secret", "PLAIN")[0] == 235
    assert handler.seen == [{"authenticated": True, "login": b"anne"}]
    assert LoginPassword(b"a", b"b").password == b"b"


def test_auth_callback(fastsmtp_controller, server_context, client_context):
    calls = []

    def auth_callback(mechanism, login, password):
        calls.append((mechanism, login, password))
        return USERS.get(login) == password

    handler = Recorder()
    address = fastsmtp_controller(handler, tls_context=server_context, auth_callback=auth_callback)
    assert login(address, client_context, "anne", "nope", "LOGIN")[0] == 535
    assert login(address, client_context, "anne", "secret", "LOGIN")[0] == 235
    assert calls == [("LOGIN", b"anne", b"nope"), ("LOGIN", b"anne", b"secret")]
    # As aiosmtpd: auth_callback's success keeps the LoginPassword as auth_data.
    assert handler.seen == [{"authenticated": True, "login": b"anne"}]


def test_auth_required_and_exclude_mechanism(fastsmtp_controller, server_context, client_context):
    address = fastsmtp_controller(
        Recorder(),
        tls_context=server_context,
        authenticator=make_authenticator(AuthResult),
        auth_required=True,
        auth_exclude_mechanism=["LOGIN"],
    )
    with smtplib.SMTP(*address, timeout=5) as client:
        client.starttls(context=client_context)
        client.ehlo()
        assert client.esmtp_features["auth"].split() == ["PLAIN"]
        assert client.mail("anne@example.com")[0] == 530
        assert client.docmd("AUTH", "LOGIN")[0] == 504
        client.login("anne", "secret")
        assert client.mail("anne@example.com")[0] == 250


def test_auth_require_tls_false_offers_auth_in_plain_text(fastsmtp_controller):
    address = fastsmtp_controller(
        Recorder(), authenticator=make_authenticator(AuthResult), auth_require_tls=False
    )
    with smtplib.SMTP(*address, timeout=5) as client:
        client.ehlo()
        assert "PLAIN" in client.esmtp_features["auth"]
        assert client.login("anne", "secret")[0] == 235


def test_auth_is_not_offered_in_plain_text_by_default(fastsmtp_controller, server_context):
    address = fastsmtp_controller(
        Recorder(), tls_context=server_context, authenticator=make_authenticator(AuthResult)
    )
    with smtplib.SMTP(*address, timeout=5) as client:
        client.ehlo()
        assert not client.has_extn("auth")
