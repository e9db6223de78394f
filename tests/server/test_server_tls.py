"""STARTTLS (RFC 3207) and require_tls over real sockets, with real certificates."""

from __future__ import annotations

import smtplib

import pytest

from fastsmtp import Collect
from fastsmtp.session import Envelope, Session


class Recorder(Collect):
    """Collect, plus what the session looked like when each message arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.tls: list[bool] = []

    async def on_message(self, session: Session, envelope: Envelope) -> None:
        self.tls.append(session.tls)
        await super().on_message(session, envelope)


def test_starttls_is_offered_only_when_configured(serve, client, server_context):
    plain = client(serve(Collect()))
    assert "STARTTLS" not in plain.ehlo().lines
    refused = plain.cmd("STARTTLS")
    assert (refused.code, refused.enhanced) == (502, "5.5.1")
    secure = client(serve(Collect(), tls_context=server_context))
    assert "STARTTLS" in secure.ehlo().lines


def test_smtplib_starttls_delivers_and_the_session_knows(serve, server_context, client_context):
    handler = Recorder()
    host, port = serve(handler, tls_context=server_context)
    with smtplib.SMTP(host, port, timeout=10) as smtp:
        smtp.starttls(context=client_context)
        code, features = smtp.ehlo()
        assert code == 250
        assert b"STARTTLS" not in features  # not offered twice (RFC 3207 §4.2)
        assert smtp.docmd("STARTTLS")[0] == 503
        smtp.sendmail("a@example.com", ["b@example.com"], b"Subject: tls\r\n\r\nsecret\r\n")
    envelope = handler.wait_for(1)[0]
    assert handler.tls == [True]
    assert envelope.content is not None
    assert b" with ESMTPS id " in envelope.content.split(b"\r\n\r\n", 1)[0]


def test_require_tls_refuses_mail_until_starttls(serve, server_context, client_context):
    handler = Collect()
    host, port = serve(handler, tls_context=server_context, require_tls=True)
    with smtplib.SMTP(host, port, timeout=10) as smtp:
        smtp.ehlo()
        code, text = smtp.docmd("MAIL FROM:<a@example.com>")
        assert (code, text[:5]) == (530, b"5.7.0")
        smtp.starttls(context=client_context)
        smtp.sendmail("a@example.com", ["b@example.com"], b"Subject: ok\r\n\r\nok\r\n")
    assert len(handler.wait_for(1)) == 1


def test_commands_pipelined_after_starttls_are_never_executed(
    serve, client, server_context, client_context
):
    # CVE-2011-0411: plaintext injected after STARTTLS must not run inside TLS.
    handler = Collect()
    raw = client(serve(handler, tls_context=server_context))
    raw.ehlo()
    raw.send(b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\nRCPT TO:<victim@example.com>\r\n")
    reply = raw.reply()
    assert (reply.code, reply.enhanced) == (220, "2.0.0")
    raw.sock = client_context.wrap_socket(raw.sock, server_hostname="localhost")
    # The first reply inside TLS answers our EHLO: nothing injected was answered.
    ehlo = raw.cmd("EHLO client.example")
    assert ehlo.code == 250
    assert ehlo.lines[0] == "mx.test"
    # ...and nothing injected took effect: there is no transaction to add to.
    rcpt = raw.cmd("RCPT TO:<victim@example.com>")
    assert (rcpt.code, rcpt.enhanced) == (503, "5.5.1")


def test_tls_forgets_the_plaintext_session(serve, client, server_context, client_context):
    raw = client(serve(Collect(), tls_context=server_context))
    raw.ehlo()
    assert raw.cmd("MAIL FROM:<a@example.com>").code == 250
    assert raw.cmd("STARTTLS").code == 220
    raw.sock = client_context.wrap_socket(raw.sock, server_hostname="localhost")
    # RFC 3207 §4.2: the client must EHLO again; the transaction is gone.
    reply = raw.cmd("MAIL FROM:<a@example.com>")
    assert (reply.code, reply.enhanced) == (503, "5.5.1")


def test_failed_handshake_closes_cleanly_and_the_server_keeps_serving(
    serve, client, server_context, tracebacks
):
    handler = Collect()
    addr = serve(handler, tls_context=server_context)
    raw = client(addr)
    raw.ehlo()
    assert raw.cmd("STARTTLS").code == 220
    raw.send(b"this is not a TLS ClientHello\r\n" * 4)
    raw.expect_closed()
    with smtplib.SMTP(*addr, timeout=10) as smtp:
        smtp.sendmail("a@example.com", ["b@example.com"], b"Subject: after\r\n\r\nok\r\n")
    assert len(handler.wait_for(1)) == 1
    serve.stop()
    assert tracebacks() == []


def test_starttls_with_arguments_is_a_syntax_error(serve, client, server_context):
    raw = client(serve(Collect(), tls_context=server_context))
    raw.ehlo()
    reply = raw.cmd("STARTTLS now")
    assert (reply.code, reply.enhanced) == (501, "5.5.4")


def test_require_tls_without_a_certificate_is_a_config_error():
    from fastsmtp import ConfigError, Server

    with pytest.raises(ConfigError, match="tls_cert and tls_key"):
        Server(Collect(), require_tls=True)
    with pytest.raises(ConfigError, match="tls_cert and tls_key go together"):
        Server(Collect(), tls_cert="/nonexistent.pem")
    with pytest.raises(ConfigError, match="cannot load tls_cert"):
        Server(Collect(), tls_cert="/nonexistent.pem", tls_key="/nonexistent.key")
