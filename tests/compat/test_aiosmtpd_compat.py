"""aiosmtpd handlers run unchanged on ``fastsmtp.compat.aiosmtpd``, over real sockets.

The handlers here follow the examples in aiosmtpd's documentation (the
controller page's "mail for one domain, printed on arrival" handler, the
built-in Mailbox/Debugging/Sink handlers) and the hook contract of its
handlers page. The comparison tests run the same handler under the real
aiosmtpd and under the compat Controller, drive both with the same
smtplib session, and demand the same reply codes, the same texts wherever
the handler wrote the reply, and the same envelopes seen by handle_DATA.
fastsmtp adds an enhanced status code to every reply (it advertises
ENHANCEDSTATUSCODES), so texts are compared without it.
"""

from __future__ import annotations

import asyncio
import io
import logging
import mailbox
import re
import smtplib
import socket
import subprocess
import sys
import threading
from typing import Any

import pytest

from fastsmtp.compat.aiosmtpd import (
    Controller,
    Envelope,
    HandlerAdapter,
    Session,
    StatusError,
    UnsupportedError,
    UnsupportedHookWarning,
    get_localhost,
    parse_status,
)
from fastsmtp.protocol.replies import Reply

MESSAGE = (
    b"From: Anne Person <anne@example.com>\r\n"
    b"To: Bart Person <bart@example.com>\r\n"
    b"Subject: A test\r\n"
    b"Message-ID: <ant>\r\n"
    b"\r\n"
    b"Hi Bart, this is Anne.\r\n"
)
_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3} ")


def snapshot(session: Any, envelope: Any) -> dict[str, Any]:
    """What a handler saw, copied (the objects are reused by the server)."""
    return {
        "tls": session.ssl is not None,
        "host_name": session.host_name,
        "extended_smtp": session.extended_smtp,
        "mail_from": envelope.mail_from,
        "mail_options": list(envelope.mail_options),
        "rcpt_tos": list(envelope.rcpt_tos),
        "rcpt_options": list(envelope.rcpt_options),
        "smtp_utf8": envelope.smtp_utf8,
        "content": envelope.content,
        "original_content": envelope.original_content,
    }


# --- handlers, in the style of aiosmtpd's documentation ------------------------
class LocalDomainOnly:
    """Accepts mail for example.com only and prints each message (aiosmtpd's controller docs)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if not address.endswith("@example.com"):
            return "550 not relaying to that domain"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        print(f"Message from {envelope.mail_from}")
        print(f"Message for {envelope.rcpt_tos}")
        for line in envelope.content.decode("utf8", errors="replace").splitlines():
            print(f"> {line}".strip())
        print("End of message")
        self.seen.append(snapshot(session, envelope))
        return "250 Message accepted for delivery"


class SyncLocalDomainOnly:
    """The same decisions with plain (sync) methods, which fastsmtp runs in a thread."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.threads: set[threading.Thread] = set()

    def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.threads.add(threading.current_thread())
        if not address.endswith("@example.com"):
            return "550 not relaying to that domain"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    def handle_DATA(self, server, session, envelope):
        self.threads.add(threading.current_thread())
        self.seen.append(snapshot(session, envelope))
        return "250 Message accepted for delivery"


class SenderPolicy:
    """handle_MAIL refuses one domain and, as the contract says, records the sender itself."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if address.endswith("@blocked.example"):
            return "553 5.7.1 Sender address rejected"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 Sender and options noted"

    async def handle_DATA(self, server, session, envelope):
        self.seen.append(snapshot(session, envelope))
        return "250 2.6.0 Queued"


class ForgetfulRecipients:
    """handle_RCPT says 250 but never appends: aiosmtpd then has no recipient at DATA."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # never reached
        self.seen.append(snapshot(session, envelope))
        return "250 OK"


class Explosive:
    """handle_RCPT raises for boom@; handle_exception turns that into a 451."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.errors: list[Exception] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("boom@"):
            raise ValueError("recipient database is down")
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.seen.append(snapshot(session, envelope))
        return "250 OK"

    async def handle_exception(self, error):
        self.errors.append(error)
        return "451 4.3.0 Temporary trouble, try again later"


class ResetCounter:
    """Counts handle_RSET calls: RSET only, never the reset an EHLO implies."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.resets = 0

    async def handle_RSET(self, server, session, envelope):
        assert envelope.mail_from is None and envelope.rcpt_tos == []
        self.resets += 1
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.seen.append(snapshot(session, envelope))
        return "250 OK"


# --- the documented example on fastsmtp ------------------------------------------
def test_documented_example_delivers_local_mail_and_refuses_relaying(fastsmtp_controller, capsys):
    handler = LocalDomainOnly()
    host, port = fastsmtp_controller(handler)
    with smtplib.SMTP(host, port, timeout=5) as client:
        assert client.sendmail("a@example.com", ["b@example.com"], MESSAGE) == {}
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.sendmail("aperson@example.com", ["cperson@example.net"], MESSAGE)
    assert refused.value.recipients == {
        "cperson@example.net": (550, b"5.0.0 not relaying to that domain")
    }
    printed = capsys.readouterr().out
    assert printed == (
        "Message from a@example.com\n"
        "Message for ['b@example.com']\n"
        "> From: Anne Person <anne@example.com>\n"
        "> To: Bart Person <bart@example.com>\n"
        "> Subject: A test\n"
        "> Message-ID: <ant>\n"
        ">\n"
        "> Hi Bart, this is Anne.\n"
        "End of message\n"
    )
    [seen] = handler.seen
    assert seen["rcpt_tos"] == ["b@example.com"]
    assert seen["content"] == seen["original_content"] == MESSAGE


def test_handler_replies_keep_their_text_and_get_an_enhanced_code(fastsmtp_controller):
    host, port = fastsmtp_controller(SenderPolicy())
    with smtplib.SMTP(host, port, timeout=5) as client:
        client.ehlo("client.example")
        assert client.mail("spam@blocked.example") == (553, b"5.7.1 Sender address rejected")
        assert client.mail("ok@example.org") == (250, b"2.1.0 Sender and options noted")
        assert client.rcpt("b@example.com") == (250, b"2.1.5 Recipient OK")
        assert client.data(MESSAGE) == (250, b"2.6.0 Queued")


def test_sync_hooks_run_in_worker_threads(fastsmtp_controller):
    handler = SyncLocalDomainOnly()
    host, port = fastsmtp_controller(handler)
    with smtplib.SMTP(host, port, timeout=5) as client:
        assert client.sendmail("a@example.com", ["b@example.com", "c@example.net"], MESSAGE) == {
            "c@example.net": (550, b"5.0.0 not relaying to that domain")
        }
    [seen] = handler.seen
    assert seen["rcpt_tos"] == ["b@example.com"]
    assert threading.main_thread() not in handler.threads
    assert all(t.name != "fastsmtp-controller" for t in handler.threads)


def test_session_and_envelope_have_aiosmtpd_attributes(fastsmtp_controller):
    seen: list[tuple[Any, Any, Any]] = []

    class Recorder:
        async def handle_DATA(self, server, session, envelope):
            seen.append((server, session, envelope))
            return "250 OK"

    host, port = fastsmtp_controller(Recorder())
    with smtplib.SMTP(host, port, local_hostname="client.example", timeout=5) as client:
        client.sendmail("a@example.com", ["b@example.com"], MESSAGE, mail_options=["BODY=8BITMIME"])
        client_address = client.sock.getsockname()[:2]
    [(server, session, envelope)] = seen
    assert isinstance(session, Session) and isinstance(envelope, Envelope)
    assert session.peer == client_address
    assert session.host_name == "client.example"
    assert session.extended_smtp is True
    assert session.ssl is None and session.authenticated is None
    assert isinstance(session.loop, asyncio.AbstractEventLoop)
    assert envelope.mail_from == "a@example.com"
    assert envelope.mail_options == [f"SIZE={len(MESSAGE)}", "BODY=8BITMIME"]
    assert envelope.rcpt_tos == ["b@example.com"]
    assert envelope.rcpt_options == []
    assert envelope.smtp_utf8 is False
    # aiosmtpd adds no trace header: the content is what the client sent.
    assert envelope.content == envelope.original_content == MESSAGE
    assert server.hostname == "mx.test"
    assert server.data_size_limit == 33554432
    assert server.enable_SMTPUTF8 is True
    assert server.session is session


def test_received_header_is_kept_on_request(fastsmtp_controller):
    handler = LocalDomainOnly()
    host, port = fastsmtp_controller(handler, received_header=True)
    with smtplib.SMTP(host, port, timeout=5) as client:
        client.sendmail("a@example.com", ["b@example.com"], MESSAGE)
    [seen] = handler.seen
    assert seen["content"].startswith(b"Received: from ")
    assert seen["content"].endswith(b"\r\n" + MESSAGE)


def test_decode_data_gives_text_content(fastsmtp_controller):
    handler = SenderPolicy()
    host, port = fastsmtp_controller(handler, decode_data=True)
    with smtplib.SMTP(host, port, timeout=5) as client:
        _, text = client.ehlo()
        # aiosmtpd does not offer 8BITMIME when it decodes.
        assert b"8BITMIME" not in text
        client.sendmail("a@example.com", ["b@example.com"], "Subject: é\r\n\r\nçà\r\n".encode())
    [seen] = handler.seen
    assert seen["content"] == "Subject: é\r\n\r\nçà\r\n"
    assert seen["original_content"] == "Subject: é\r\n\r\nçà\r\n".encode()


def test_smtputf8_transaction(fastsmtp_controller):
    handler = SenderPolicy()
    host, port = fastsmtp_controller(handler)
    body = "Subject: Grüße\r\n\r\nÄpfel\r\n".encode()
    with smtplib.SMTP(host, port, timeout=5) as client:
        client.sendmail("jörg@example.org", ["zoë@example.com"], body, mail_options=["SMTPUTF8"])
    [seen] = handler.seen
    assert seen["mail_from"] == "jörg@example.org"
    assert seen["rcpt_tos"] == ["zoë@example.com"]
    assert seen["smtp_utf8"] is True
    assert "SMTPUTF8" in seen["mail_options"]
    assert seen["content"] == body


# --- errors ---------------------------------------------------------------------
def test_hook_exception_is_451_logged_and_the_session_goes_on(fastsmtp_controller, caplog):
    class Broken:
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            if address.startswith("boom@"):
                raise RuntimeError("disk on fire")
            envelope.rcpt_tos.append(address)
            return "250 OK"

    caplog.set_level(logging.INFO)
    host, port = fastsmtp_controller(Broken())
    with smtplib.SMTP(host, port, timeout=5) as client:
        client.ehlo()
        client.mail("a@example.com")
        code, text = client.rcpt("boom@example.com")
        assert (code, text) == (451, b"4.3.0 Error: local error in processing, try again later")
        assert client.rcpt("b@example.com")[0] == 250
        assert client.data(MESSAGE)[0] == 250
    [record] = [r for r in caplog.records if r.exc_info]
    assert "disk on fire" in str(record.exc_info[1])
    assert record.name == "fastsmtp.compat"


def test_handle_exception_chooses_the_reply(fastsmtp_controller):
    handler = Explosive()
    host, port = fastsmtp_controller(handler)
    with smtplib.SMTP(host, port, timeout=5) as client:
        client.ehlo()
        client.mail("a@example.com")
        assert client.rcpt("boom@example.com") == (
            451,
            b"4.3.0 Temporary trouble, try again later",
        )
    [error] = handler.errors
    assert isinstance(error, ValueError)


@pytest.mark.parametrize("returned", [None, 250, "OK", "354 go ahead", "250-a\r\n550 b"])
def test_a_hook_must_return_a_status_string(fastsmtp_controller, caplog, returned):
    class Sloppy:
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            envelope.rcpt_tos.append(address)
            return returned

    host, port = fastsmtp_controller(Sloppy())
    with smtplib.SMTP(host, port, timeout=5) as client:
        client.ehlo()
        client.mail("a@example.com")
        assert client.rcpt("b@example.com")[0] == 451
    assert any("handle_RCPT" in r.getMessage() for r in caplog.records if r.exc_info)


def test_failing_handle_exception_is_451(fastsmtp_controller):
    class DoublyBroken:
        async def handle_DATA(self, server, session, envelope):
            raise RuntimeError("first")

        async def handle_exception(self, error):
            raise RuntimeError("second")

    host, port = fastsmtp_controller(DoublyBroken())
    with (
        smtplib.SMTP(host, port, timeout=5) as client,
        pytest.raises(smtplib.SMTPDataError) as refused,
    ):
        client.sendmail("a@example.com", ["b@example.com"], MESSAGE)
    assert refused.value.smtp_code == 451


def test_rcpt_hook_that_appends_nobody_gets_no_message(fastsmtp_controller):
    handler = ForgetfulRecipients()
    host, port = fastsmtp_controller(handler)
    with (
        smtplib.SMTP(host, port, timeout=5) as client,
        pytest.raises(smtplib.SMTPDataError) as refused,
    ):
        client.sendmail("a@example.com", ["b@example.com"], MESSAGE)
    assert (refused.value.smtp_code, refused.value.smtp_error) == (
        503,
        b"5.5.1 Error: need RCPT command",
    )
    assert handler.seen == []


def test_a_message_fastsmtp_refuses_by_itself_ends_the_hooks_transaction(fastsmtp_controller):
    # fastsmtp refuses an oversized message without calling a hook; the next
    # transaction must not inherit that one's recipients.
    handler = LocalDomainOnly()
    host, port = fastsmtp_controller(handler, data_size_limit=300)
    with smtplib.SMTP(host, port, timeout=5) as client:
        client.ehlo()
        client.mail("a@example.com")  # no SIZE parameter: refused after the data
        client.rcpt("first@example.com")
        assert client.data(b"x" * 400 + b"\r\n")[0] == 552
        assert client.sendmail("a@example.com", ["second@example.com"], MESSAGE[:200]) == {}
    [seen] = handler.seen
    assert seen["rcpt_tos"] == ["second@example.com"]


def test_handle_rset_runs_for_rset_only(fastsmtp_controller):
    handler = ResetCounter()
    host, port = fastsmtp_controller(handler)
    with smtplib.SMTP(host, port, timeout=5) as client:
        client.ehlo()
        assert client.rset() == (250, b"2.0.0 OK")
        client.mail("a@example.com")
        client.ehlo()  # resets the transaction without RSET
        client.mail("a@example.com")
        client.rcpt("b@example.com")
        assert client.rset()[0] == 250
        assert client.sendmail("a@example.com", ["b@example.com"], MESSAGE) == {}
    assert handler.resets == 2
    [seen] = handler.seen
    assert (seen["mail_from"], seen["rcpt_tos"]) == ("a@example.com", ["b@example.com"])


# --- TLS ---------------------------------------------------------------------------
def test_starttls_with_tls_context(fastsmtp_controller, server_context, client_context):
    handler = LocalDomainOnly()
    host, port = fastsmtp_controller(handler, tls_context=server_context)
    with smtplib.SMTP(host, port, local_hostname="before.example", timeout=5) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        assert client.starttls(context=client_context)[0] == 220
        client.ehlo("after.example")
        assert client.sendmail("a@example.com", ["b@example.com"], MESSAGE) == {}
    [seen] = handler.seen
    assert seen["tls"] is True
    assert seen["host_name"] == "after.example"


def test_require_starttls_refuses_mail_until_tls(
    fastsmtp_controller, server_context, client_context
):
    host, port = fastsmtp_controller(
        LocalDomainOnly(), tls_context=server_context, require_starttls=True
    )
    with smtplib.SMTP(host, port, timeout=5) as client:
        client.ehlo()
        assert client.mail("a@example.com")[0] == 530
        client.starttls(context=client_context)
        client.ehlo()
        assert client.mail("a@example.com")[0] == 250


def test_require_starttls_without_a_context_means_nothing(fastsmtp_controller):
    # As in aiosmtpd: without tls_context there is no STARTTLS to require.
    host, port = fastsmtp_controller(LocalDomainOnly(), require_starttls=True)
    with smtplib.SMTP(host, port, timeout=5) as client:
        client.ehlo()
        assert not client.has_extn("starttls")
        assert client.mail("a@example.com")[0] == 250


def test_ssl_context_makes_an_smtps_listener(server_context, client_context):
    handler = LocalDomainOnly()
    controller = Controller(handler, hostname="127.0.0.1", port=0, ssl_context=server_context)
    controller.start()
    try:
        with smtplib.SMTP_SSL(
            controller.hostname, controller.port, context=client_context, timeout=5
        ) as client:
            assert client.sendmail("a@example.com", ["b@example.com"], MESSAGE) == {}
    finally:
        controller.stop()
    [seen] = handler.seen
    assert seen["tls"] is True


def test_starttls_session_matches_aiosmtpd(
    fastsmtp_controller, aiosmtpd_controller, server_context, client_context
):
    steps: list[Step] = [
        ("ehlo", ("client.example",), False),
        ("mail", ("a@example.com",), False),
        ("starttls", (None, None, client_context), False),
        ("ehlo", ("secure.example",), False),
        ("mail", ("a@example.com",), False),
        ("rcpt", ("b@example.com",), True),
        ("rcpt", ("c@example.net",), True),
        ("data", (MESSAGE,), True),
        ("quit", (), False),
    ]
    theirs_handler, ours_handler = LocalDomainOnly(), LocalDomainOnly()
    theirs = _run(aiosmtpd_controller(theirs_handler, tls_context=server_context), steps)
    ours = _run(fastsmtp_controller(ours_handler, tls_context=server_context), steps)
    _compare(steps, theirs, ours)
    assert ours_handler.seen == theirs_handler.seen
    assert ours_handler.seen[0]["tls"] is True


# --- what fastsmtp cannot honour is refused at construction -------------------
@pytest.mark.parametrize("hook", ["handle_AUTH", "handle_STARTTLS", "handle_PROXY"])
def test_hooks_fastsmtp_cannot_honour_raise(hook):
    async def anything(*args):
        return "250 OK"

    handler = type("Handler", (), {hook: anything})()
    with pytest.raises(UnsupportedError, match=hook):
        Controller(handler)


def test_auth_mechanisms_raise():
    class CustomAuth:
        async def auth_CRAM__MD5(self, server, args):
            return None

    with pytest.raises(UnsupportedError, match="AUTH"):
        HandlerAdapter(CustomAuth())


@pytest.mark.parametrize(
    "keyword",
    [
        {"proxy_protocol_timeout": 5},
        {"command_call_limit": 20},
    ],
    ids=lambda kw: next(iter(kw)),
)
def test_controller_keywords_fastsmtp_cannot_honour_raise(keyword):
    with pytest.raises(UnsupportedError, match=next(iter(keyword))):
        Controller(LocalDomainOnly(), **keyword)


def test_a_controller_subclass_with_factory_is_refused():
    class LMTPController(Controller):
        def factory(self):
            return None

    with pytest.raises(UnsupportedError, match="factory"):
        LMTPController(LocalDomainOnly())


def test_legacy_process_message_is_called(fastsmtp_controller):
    received: list[tuple[Any, ...]] = []

    class Legacy:
        async def process_message(self, peer, mail_from, rcpt_tos, data):
            received.append((peer, mail_from, rcpt_tos, data))
            return "250 Stored the old way"

    with pytest.warns(DeprecationWarning, match="process_message"):
        host, port = fastsmtp_controller(Legacy())
    with smtplib.SMTP(host, port, timeout=5) as client:
        client.sendmail("a@example.com", ["b@example.com"], MESSAGE)
        client_address = client.sock.getsockname()[:2]
    assert received == [(client_address, "a@example.com", ["b@example.com"], MESSAGE)]


def test_unknown_keyword_is_a_clear_error():
    with pytest.raises(TypeError, match="no_such_option"):
        Controller(LocalDomainOnly(), no_such_option=1)


@pytest.mark.parametrize("hook", ["handle_NOOP", "handle_QUIT", "handle_VRFY"])
def test_hooks_fastsmtp_never_calls_warn_and_the_command_is_answered(fastsmtp_controller, hook):
    calls: list[str] = []

    async def record(*args):
        calls.append(hook)
        return "550 no"

    handler = type("Handler", (), {hook: record})()
    with pytest.warns(UnsupportedHookWarning, match=hook):
        host, port = fastsmtp_controller(handler)
    with smtplib.SMTP(host, port, timeout=5) as client:
        client.ehlo()
        assert client.noop()[0] == 250
        assert client.verify("b@example.com")[0] == 252
        assert client.quit()[0] == 221
    assert calls == []


def test_server_push_is_refused_with_an_explanation(fastsmtp_controller):
    class Pusher:
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            await server.push("250-extra")
            return "250 OK"

        async def handle_exception(self, error):
            return f"451 4.3.0 {error}"

    host, port = fastsmtp_controller(Pusher())
    with smtplib.SMTP(host, port, timeout=5) as client:
        client.ehlo()
        client.mail("a@example.com")
        code, text = client.rcpt("b@example.com")
    assert code == 451 and b"return the status string instead" in text


# --- the controller ---------------------------------------------------------------
def test_controller_start_stop_and_start_again():
    handler = LocalDomainOnly()
    controller = Controller(handler, hostname="127.0.0.1", port=0)
    controller.start()
    first_port = controller.port
    assert first_port != 0
    with smtplib.SMTP(controller.hostname, controller.port, timeout=5) as client:
        assert client.noop()[0] == 250
    controller.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", first_port), timeout=5).close()
    controller.start()
    try:
        with smtplib.SMTP(controller.hostname, controller.port, timeout=5) as client:
            assert client.sendmail("a@example.com", ["b@example.com"], MESSAGE) == {}
    finally:
        controller.stop()
    assert len(handler.seen) == 1


def test_controller_defaults_to_the_loopback_address():
    controller = Controller(LocalDomainOnly(), port=0)
    assert controller.hostname == get_localhost()
    controller.start()
    try:
        with smtplib.SMTP(controller.hostname, controller.port, timeout=5) as client:
            assert client.noop()[0] == 250
    finally:
        controller.stop()


def test_controller_runs_on_a_given_loop_and_on_every_interface():
    loop = asyncio.new_event_loop()
    controller = Controller(LocalDomainOnly(), hostname="", port=0, loop=loop)
    controller.start()
    try:
        assert controller.loop is loop and loop.is_running()
        with smtplib.SMTP("127.0.0.1", controller.port, timeout=5) as client:
            assert client.noop()[0] == 250
    finally:
        controller.stop()
    assert not loop.is_running() and not loop.is_closed()  # the caller's loop stays usable
    loop.close()


def test_stop_closes_an_idle_client_with_421():
    controller = Controller(LocalDomainOnly(), hostname="127.0.0.1", port=0)
    controller.start()
    client = smtplib.SMTP(controller.hostname, controller.port, timeout=5)
    client.ehlo()
    controller.stop()
    # The 421 was sent when the server stopped; smtplib reads it as the reply to NOOP.
    code, text = client.noop()
    assert (code, text[:6]) == (421, b"4.3.2 ")
    client.close()


def test_start_failure_is_raised_and_stop_still_cleans_up():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        controller = Controller(LocalDomainOnly(), hostname="127.0.0.1", port=port)
        with pytest.raises(OSError):
            controller.start()
        controller.stop()


def test_stop_before_start_asserts_unless_told_not_to():
    controller = Controller(LocalDomainOnly(), hostname="127.0.0.1", port=0)
    with pytest.raises(AssertionError):
        controller.stop()
    controller.stop(no_assert=True)


def test_start_twice_is_an_error(fastsmtp_controller):
    controller = Controller(LocalDomainOnly(), hostname="127.0.0.1", port=0)
    controller.start()
    try:
        with pytest.raises(RuntimeError, match="already running"):
            controller.start()
    finally:
        controller.stop()


def test_smtp_keywords_map_to_fastsmtp_settings(fastsmtp_controller):
    host, port = fastsmtp_controller(
        LocalDomainOnly(), data_size_limit=2048, ident="Example ESMTP", max_recipients=1
    )
    with smtplib.SMTP(timeout=5) as client:
        assert client.connect(host, port) == (220, b"mx.test Example ESMTP")
        assert client.ehlo()[0] == 250
        assert client.esmtp_features["size"] == "2048"
        refused = client.sendmail("a@example.com", ["b@example.com", "c@example.com"], MESSAGE)
        assert refused == {"c@example.com": (452, b"4.5.3 Error: too many recipients")}
        with pytest.raises(smtplib.SMTPSenderRefused) as too_big:
            client.sendmail("a@example.com", ["b@example.com"], b"x" * 4096 + b"\r\n")
        assert too_big.value.smtp_code == 552


# --- aiosmtpd's own handlers, unchanged ------------------------------------------
def test_aiosmtpd_mailbox_handler_runs_unchanged(fastsmtp_controller, tmp_path):
    handlers = pytest.importorskip("aiosmtpd.handlers")
    maildir = tmp_path / "maildir"
    host, port = fastsmtp_controller(handlers.Mailbox(maildir))
    with smtplib.SMTP(host, port, timeout=5) as client:
        for who in ("ant", "bee"):
            message = MESSAGE.replace(b"<ant>", f"<{who}>".encode())
            assert client.sendmail("a@example.com", [f"{who}@example.com"], message) == {}
    stored = sorted(mailbox.Maildir(maildir), key=lambda m: m["Message-ID"])
    assert [m["Message-ID"] for m in stored] == ["<ant>", "<bee>"]
    assert [m["X-RcptTo"] for m in stored] == ["ant@example.com", "bee@example.com"]
    assert stored[0]["X-MailFrom"] == "a@example.com"
    assert "Received" not in stored[0]


def _debugging_output(start, stream: io.StringIO) -> str:
    pytest.importorskip("aiosmtpd.handlers")
    from aiosmtpd.handlers import Debugging

    host, port = start(Debugging(stream))
    with smtplib.SMTP(host, port, timeout=5) as client:
        client.sendmail("a@example.com", ["b@example.com"], MESSAGE, mail_options=["BODY=8BITMIME"])
    # The peer's port differs from run to run.
    return re.sub(r"X-Peer: .*", "X-Peer: <peer>", stream.getvalue())


def test_aiosmtpd_debugging_handler_prints_the_same(fastsmtp_controller, aiosmtpd_controller):
    ours = _debugging_output(fastsmtp_controller, io.StringIO())
    theirs = _debugging_output(aiosmtpd_controller, io.StringIO())
    assert ours == theirs
    assert "mail options: ['SIZE=" in ours and "X-Peer: <peer>" in ours


def test_aiosmtpd_sink_handler_runs_unchanged(fastsmtp_controller):
    handlers = pytest.importorskip("aiosmtpd.handlers")
    host, port = fastsmtp_controller(handlers.Sink())
    with smtplib.SMTP(host, port, timeout=5) as client:
        assert client.sendmail("a@example.com", ["b@example.com"], MESSAGE) == {}


# --- the same handler and session under aiosmtpd and fastsmtp -----------------------
# A step is (method of smtplib.SMTP, arguments, whether to compare the reply text):
# texts are compared where the handler wrote the reply; built-in replies differ
# in wording (and the greeting and EHLO keywords differ), their codes may not.
Step = tuple[str, tuple[Any, ...], bool]

DOTTED_MESSAGE = MESSAGE + b".a line that starts with a dot\r\n"
UTF8_MESSAGE = "Subject: Grüße\r\nFrom: jörg@example.com\r\n\r\nÄpfel und Birnen\r\n".encode()


class GreetingPolicy(LocalDomainOnly):
    """handle_HELO/handle_EHLO refuse one name and, as the contract says, record the others."""

    def __init__(self) -> None:
        super().__init__()
        self.greetings: list[tuple[str, str, bool]] = []

    async def handle_HELO(self, server, session, envelope, hostname):
        self.greetings.append(("HELO", hostname, session.extended_smtp))
        if hostname == "spammer.example":
            return "550 Go away"
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.greetings.append(("EHLO", hostname, session.extended_smtp))
        if hostname == "spammer.example":
            return ["550 Go away"]
        session.host_name = hostname
        return responses


class ForgetfulGreeting(LocalDomainOnly):
    """An EHLO hook that accepts but forgets session.host_name: MAIL is refused."""

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        return responses


SESSIONS: dict[str, tuple[type, list[Step]]] = {
    "documented-example": (
        LocalDomainOnly,
        [
            ("ehlo", ("client.example",), False),
            ("mail", ("a@example.com",), False),
            ("rcpt", ("b@example.com",), True),
            ("rcpt", ("c@example.net",), True),
            ("rcpt", ("d@example.com",), True),
            ("data", (MESSAGE,), True),
            ("mail", ("x@example.org", ["BODY=8BITMIME"]), False),
            ("rcpt", ("y@example.net",), True),
            ("data", (MESSAGE,), False),  # no recipient: 503 from both
            ("rset", (), False),
            ("mail", ("x@example.org",), False),
            ("rcpt", ("y@example.com",), True),
            ("data", (DOTTED_MESSAGE,), True),
            ("noop", (), False),
            ("quit", (), False),
        ],
    ),
    "sender-policy": (
        SenderPolicy,
        [
            ("ehlo", ("client.example",), False),
            ("mail", ("spam@blocked.example",), True),
            ("rcpt", ("b@example.com",), True),  # 503 need MAIL from both
            ("mail", ("ok@example.org", ["SIZE=200", "BODY=8BITMIME"]), True),
            ("mail", ("again@example.org",), True),  # 503 nested MAIL from both
            ("rcpt", ("b@example.com",), False),
            ("data", (MESSAGE,), True),
            ("quit", (), False),
        ],
    ),
    "rcpt-hook-appends-nobody": (
        ForgetfulRecipients,
        [
            ("ehlo", ("client.example",), False),
            ("mail", ("a@example.com",), False),
            ("rcpt", ("b@example.com",), True),
            ("data", (MESSAGE,), True),  # 503 need RCPT (aiosmtpd: at DATA; fastsmtp: after it)
            ("rset", (), False),
            ("quit", (), False),
        ],
    ),
    "handle-exception": (
        Explosive,
        [
            ("ehlo", ("client.example",), False),
            ("mail", ("a@example.com",), False),
            ("rcpt", ("boom@example.com",), True),
            ("rcpt", ("ok@example.com",), True),
            ("data", (MESSAGE,), True),
            ("quit", (), False),
        ],
    ),
    "rset-hook": (
        ResetCounter,
        [
            ("ehlo", ("client.example",), False),
            ("rset", (), False),
            ("mail", ("a@example.com",), False),
            ("rcpt", ("b@example.com",), False),
            ("ehlo", ("client.example",), False),  # resets without calling handle_RSET
            ("mail", ("a@example.com",), False),
            ("rcpt", ("c@example.com",), False),
            ("data", (MESSAGE,), False),
            ("rset", (), False),
            ("quit", (), False),
        ],
    ),
    "smtputf8": (
        SenderPolicy,
        [
            ("ehlo", ("client.example",), False),
            ("mail", ("jörg@example.org", ["SMTPUTF8", "BODY=8BITMIME"]), True),
            ("rcpt", ("zoë@example.com",), False),
            ("data", (UTF8_MESSAGE,), True),
            ("quit", (), False),
        ],
    ),
    "helo-hooks": (
        GreetingPolicy,
        [
            ("helo", ("spammer.example",), True),
            ("mail", ("a@example.com",), False),
            ("helo", ("client.example",), True),
            ("mail", ("a@example.com",), False),
            ("rcpt", ("b@example.com",), True),
            ("data", (MESSAGE,), True),
            ("quit", (), False),
        ],
    ),
    "ehlo-hooks": (
        GreetingPolicy,
        [
            ("ehlo", ("spammer.example",), True),
            ("ehlo", ("client.example",), False),
            ("mail", ("a@example.com",), False),
            ("rcpt", ("b@example.com",), True),
            ("data", (MESSAGE,), True),
            ("quit", (), False),
        ],
    ),
    "ehlo-hook-without-host-name": (
        ForgetfulGreeting,
        [
            ("ehlo", ("client.example",), False),
            ("mail", ("a@example.com",), False),
            ("quit", (), False),
        ],
    ),
    "helo-session": (
        LocalDomainOnly,
        [
            ("helo", ("client.example",), False),
            ("mail", ("a@example.com",), False),
            ("rcpt", ("b@example.com",), True),
            ("data", (MESSAGE,), True),
            ("quit", (), False),
        ],
    ),
}


def _run(address: tuple[str, int], steps: list[Step]) -> list[tuple[int, str]]:
    """Play ``steps`` with smtplib; each reply as ``(code, text without enhanced code)``."""
    replies = []
    with smtplib.SMTP(*address, timeout=5) as client:
        for method, args, _ in steps:
            try:
                code, text = getattr(client, method)(*args)
            except smtplib.SMTPDataError as refused:
                code, text = refused.smtp_code, refused.smtp_error
            replies.append((code, _ENHANCED.sub("", text.decode("utf-8"))))
    return replies


def _compare(steps: list[Step], theirs: list[Any], ours: list[Any]) -> None:
    for (method, args, compare_text), their, our in zip(steps, theirs, ours, strict=True):
        assert our[0] == their[0], f"{method}{args}: fastsmtp {our} vs aiosmtpd {their}"
        if compare_text:
            assert our == their, f"{method}{args}: fastsmtp {our} vs aiosmtpd {their}"


@pytest.mark.parametrize("name", list(SESSIONS))
def test_same_replies_and_envelopes_as_aiosmtpd(name, fastsmtp_controller, aiosmtpd_controller):
    handler_class, steps = SESSIONS[name]
    theirs_handler, ours_handler = handler_class(), handler_class()
    theirs = _run(aiosmtpd_controller(theirs_handler), steps)
    ours = _run(fastsmtp_controller(ours_handler), steps)
    _compare(steps, theirs, ours)
    assert ours_handler.seen == theirs_handler.seen
    for attribute in ("resets", "errors", "greetings"):
        if hasattr(theirs_handler, attribute):
            assert repr(getattr(ours_handler, attribute)) == repr(
                getattr(theirs_handler, attribute)
            )


def test_the_sessions_deliver_what_they_should(fastsmtp_controller):
    """The comparison is not vacuous: these sessions do deliver and refuse."""
    handler = LocalDomainOnly()
    replies = _run(fastsmtp_controller(handler), SESSIONS["documented-example"][1])
    codes = [code for code, _ in replies]
    assert codes == [250, 250, 250, 550, 250, 250, 250, 550, 503, 250, 250, 250, 250, 250, 221]
    assert [s["rcpt_tos"] for s in handler.seen] == [
        ["b@example.com", "d@example.com"],
        ["y@example.com"],
    ]
    # smtplib dot-stuffed the last line; the handler sees it as written.
    assert handler.seen[1]["content"] == DOTTED_MESSAGE


# --- status strings ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "success", "reply"),
    [
        ("250 OK", "2.1.5", Reply(250, "2.1.5", "OK")),
        ("250 2.6.0 Queued", "2.0.0", Reply(250, "2.6.0", "Queued")),
        ("550 5.1.1 Unknown user", "2.0.0", Reply(550, "5.1.1", "Unknown user")),
        ("550 not relaying", "2.0.0", Reply(550, "5.0.0", "not relaying")),
        ("451 Try later", "2.0.0", Reply(451, "4.0.0", "Try later")),
        ("503 Error: need RCPT command", "2.0.0", Reply(503, "5.5.1", "Error: need RCPT command")),
        ("250", "2.0.0", Reply(250, "2.0.0", "")),
        (b"554 5.7.1 Rejected\r\n", "2.0.0", Reply(554, "5.7.1", "Rejected")),
        ("250-first\r\n250 second", "2.0.0", Reply(250, "2.0.0", "first\nsecond")),
        ("550-5.7.1 one\r\n550 5.7.1 two", "2.0.0", Reply(550, "5.7.1", "one\ntwo")),
    ],
)
def test_parse_status(status, success, reply):
    assert parse_status(status, success=success) == reply


@pytest.mark.parametrize("status", [None, 250, "", "OK", "354 go", "250 x\r\n550 y", "99 x"])
def test_parse_status_refuses_what_is_not_a_status(status):
    with pytest.raises(StatusError):
        parse_status(status)


def test_the_compat_module_does_not_import_aiosmtpd():
    # aiosmtpd is only the tests' reference; the compat layer stands alone.
    code = "import sys, fastsmtp.compat.aiosmtpd; sys.exit('aiosmtpd' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
