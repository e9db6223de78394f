"""The handler API through a real server: hooks, their replies, errors, threads.

See ``fastsmtp.handler``: hooks may be async or sync (sync ones run in a
thread pool), return ``None`` to accept or a ``Reply`` to answer; an
exception becomes ``451 4.3.0`` and the server keeps serving.
"""

from __future__ import annotations

import logging
import smtplib
import threading

import pytest

from fastsmtp import Collect, Handler, Reply, Sink


def _codes(replies):
    return [(r.code, r.enhanced) for r in replies]


class Gatekeeper(Collect):
    """Refuses some senders, recipients and messages, the way users write hooks."""

    async def on_mail(self, session, envelope, sender):
        if sender.address.startswith("greylisted@"):
            return Reply(451, "4.7.1", "Greylisted, try again later")
        return None

    async def on_rcpt(self, session, envelope, rcpt):
        if not rcpt.address.endswith("@example.com"):
            return Reply(550, "5.1.1", "No such user here")
        return None

    async def on_message(self, session, envelope):
        if b"SPAM" in envelope.content:
            return Reply(554, "5.7.1", "Message rejected as spam")
        return await super().on_message(session, envelope)


def test_hook_replies_are_sent_as_is_and_the_state_follows(serve, client):
    handler = Gatekeeper()
    raw = client(serve(handler))
    raw.ehlo()
    reply = raw.cmd("MAIL FROM:<greylisted@example.org>")
    assert (reply.code, reply.enhanced, reply.text) == (451, "4.7.1", "Greylisted, try again later")
    assert raw.cmd("RCPT TO:<bob@example.com>").code == 503  # no transaction
    assert raw.cmd("MAIL FROM:<alice@example.org>").code == 250
    reply = raw.cmd("RCPT TO:<eve@elsewhere.example>")
    assert (reply.code, reply.enhanced, reply.text) == (550, "5.1.1", "No such user here")
    assert raw.cmd("RCPT TO:<bob@example.com>").code == 250
    reply = raw.send_message(b"Subject: SPAM\r\n\r\nbuy now\r\n")
    assert (reply.code, reply.enhanced, reply.text) == (554, "5.7.1", "Message rejected as spam")
    # A refused message ends the transaction: a new one is delivered.
    assert raw.cmd("MAIL FROM:<alice@example.org>").code == 250
    raw.cmd("RCPT TO:<eve@elsewhere.example>")
    raw.cmd("RCPT TO:<bob@example.com>")
    assert raw.send_message(b"Subject: ham\r\n\r\nhello\r\n").code == 250
    [envelope] = handler.wait_for(1)
    # The refused recipient never made it into the envelope.
    assert envelope.rcpt_tos == ["bob@example.com"]
    assert envelope.content.endswith(b"Subject: ham\r\n\r\nhello\r\n")


def test_data_after_only_refused_recipients_is_503(serve, client):
    handler = Gatekeeper()
    raw = client(serve(handler))
    raw.ehlo()
    raw.cmd("MAIL FROM:<alice@example.org>")
    assert raw.cmd("RCPT TO:<eve@elsewhere.example>").code == 550
    reply = raw.cmd("DATA")
    assert (reply.code, reply.enhanced) == (503, "5.5.1")
    assert raw.cmd("NOOP").code == 250
    assert handler.envelopes == []


def test_smtplib_sees_a_hook_refusal(serve):
    host, port = serve(Gatekeeper())
    with (
        smtplib.SMTP(host, port, timeout=5) as smtp,
        pytest.raises(smtplib.SMTPRecipientsRefused) as refused,
    ):
        smtp.sendmail("a@example.org", ["eve@elsewhere.example"], b"x\r\n")
    assert refused.value.recipients == {"eve@elsewhere.example": (550, b"5.1.1 No such user here")}


class Threads(Handler):
    """Records which thread runs each hook: some async, some sync."""

    def __init__(self) -> None:
        self.threads: dict[str, threading.Thread] = {}
        self.done = threading.Event()

    async def on_connect(self, session):
        self.threads["on_connect"] = threading.current_thread()

    def on_helo(self, session, host_name):
        self.threads["on_helo"] = threading.current_thread()

    async def on_mail(self, session, envelope, sender):
        self.threads["on_mail"] = threading.current_thread()

    def on_rcpt(self, session, envelope, rcpt):
        self.threads["on_rcpt"] = threading.current_thread()

    def on_message(self, session, envelope):
        self.threads["on_message"] = threading.current_thread()
        self.done.set()


def test_sync_hooks_run_in_a_thread_async_ones_on_the_loop(serve):
    handler = Threads()
    host, port = serve(handler)
    with smtplib.SMTP(host, port, timeout=5) as smtp:
        assert smtp.sendmail("a@example.com", ["b@example.com"], b"x\r\n") == {}
    assert handler.done.wait(5)
    loop_thread = handler.threads["on_connect"]
    assert handler.threads["on_mail"] is loop_thread
    assert loop_thread is not threading.main_thread()
    for name in ("on_helo", "on_rcpt", "on_message"):
        assert handler.threads[name] is not loop_thread, name
        assert handler.threads[name] is not threading.main_thread(), name


class Flaky(Collect):
    """on_message raises on the first call, then works."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def on_message(self, session, envelope):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("disk on fire")
        return await super().on_message(session, envelope)


def test_hook_exception_is_451_logged_and_server_keeps_serving(serve, client, caplog):
    handler = Flaky()
    addr = serve(handler)
    raw = client(addr)
    raw.begin()
    reply = raw.send_message(b"first\r\n")
    assert (reply.code, reply.enhanced) == (451, "4.3.0")
    # Same connection, next transaction: delivered.
    raw.cmd("MAIL FROM:<a@example.com>")
    raw.cmd("RCPT TO:<b@example.com>")
    assert raw.send_message(b"second\r\n").code == 250
    # Another connection is served too.
    other = client(addr)
    other.begin()
    assert other.send_message(b"third\r\n").code == 250
    envelopes = handler.wait_for(2)
    assert [e.content.rsplit(b"\r\n", 2)[-2] for e in envelopes] == [b"second", b"third"]
    failures = [r for r in caplog.records if r.exc_info and r.name == "fastsmtp"]
    assert len(failures) == 1
    assert failures[0].exc_info[0] is RuntimeError


class Broken(Collect):
    """Hooks that fail in different ways."""

    def on_mail(self, session, envelope, sender):  # sync: raises in the thread pool
        if sender.address.startswith("crash@"):
            raise ValueError("boom")
        return None

    async def on_rcpt(self, session, envelope, rcpt):
        if rcpt.address.startswith("weird@"):
            return "250 OK"  # not a Reply
        if rcpt.address.startswith("crash@"):
            raise KeyError(rcpt.address)
        return None


def test_hook_failures_are_451_and_leave_the_state_alone(serve, client):
    handler = Broken()
    raw = client(serve(handler))
    raw.ehlo()
    reply = raw.cmd("MAIL FROM:<crash@example.com>")
    assert (reply.code, reply.enhanced) == (451, "4.3.0")
    assert raw.cmd("RCPT TO:<b@example.com>").code == 503
    assert raw.cmd("MAIL FROM:<a@example.com>").code == 250
    reply = raw.cmd("RCPT TO:<weird@example.com>")
    assert (reply.code, reply.enhanced) == (451, "4.3.0")
    reply = raw.cmd("RCPT TO:<crash@example.com>")
    assert (reply.code, reply.enhanced) == (451, "4.3.0")
    assert raw.cmd("RCPT TO:<fine@example.com>").code == 250
    assert raw.send_message(b"ok\r\n").code == 250
    assert handler.wait_for(1)[0].rcpt_tos == ["fine@example.com"]


class Bouncer(Handler):
    def __init__(self) -> None:
        self.disconnected = threading.Event()

    async def on_connect(self, session):
        return Reply(554, "5.7.1", "No SMTP service for you")

    async def on_disconnect(self, session):
        self.disconnected.set()


def test_on_connect_refusal_is_sent_and_the_connection_closed(serve, client):
    handler = Bouncer()
    raw = client(serve(handler), greeting=False)
    reply = raw.reply()
    assert (reply.code, reply.enhanced, reply.text) == (554, "5.7.1", "No SMTP service for you")
    raw.expect_closed()
    assert handler.disconnected.wait(5)


class BrokenGreeter(Handler):
    def on_connect(self, session):
        raise RuntimeError("database down")


def test_on_connect_exception_is_a_421_greeting_not_451(serve, client):
    # RFC 5321 §4.3.2: a greeting is 220, 421 or 554; a failed hook means "try later".
    raw = client(serve(BrokenGreeter()), greeting=False)
    reply = raw.reply()
    assert (reply.code, reply.enhanced) == (421, "4.3.0")
    raw.expect_closed()


class Lifecycle(Collect):
    """Records on_reset and on_disconnect calls."""

    def __init__(self) -> None:
        super().__init__()
        self.resets: list[str] = []
        self.abandoned: list[tuple[str | None, list[str]]] = []
        self.disconnects: list[str] = []
        self.gone = threading.Event()

    async def on_reset(self, session, envelope):
        self.resets.append(session.id)
        self.abandoned.append((envelope.mail_from, list(envelope.rcpt_tos)))

    def on_disconnect(self, session):
        self.disconnects.append(session.id)
        self.gone.set()


def test_on_reset_and_on_disconnect_are_called(serve, client):
    handler = Lifecycle()
    raw = client(serve(handler))
    raw.begin()
    assert raw.cmd("RSET").code == 250
    assert len(handler.resets) == 1
    raw.begin()  # a new EHLO during a transaction is a reset too (RFC 5321 §4.1.4)
    raw.ehlo()
    assert len(handler.resets) == 2
    # on_reset sees the transaction it abandons, not the empty one after it.
    assert handler.abandoned == [("alice@example.com", ["bob@example.com"])] * 2
    assert raw.cmd("QUIT").code == 221
    raw.expect_closed()
    assert handler.gone.wait(5)
    assert handler.disconnects == handler.resets[:1]


def test_on_disconnect_is_called_when_the_client_vanishes(serve, client):
    handler = Lifecycle()
    raw = client(serve(handler))
    raw.ehlo()
    raw.close()
    assert handler.gone.wait(5)
    assert len(handler.disconnects) == 1


def test_session_fields_seen_by_hooks(serve, client):
    seen = {}

    class Inspect(Collect):
        async def on_mail(self, session, envelope, sender):
            seen["mail"] = (session.host_name, session.extended, envelope.mail_from, sender)

        async def on_rcpt(self, session, envelope, rcpt):
            # The envelope shows what was accepted so far, not this recipient.
            seen.setdefault("rcpt", []).append((list(envelope.rcpt_tos), rcpt.address))

    handler = Inspect()
    raw = client(serve(handler))
    raw.ehlo("hooks.example")
    raw.cmd("MAIL FROM:<a@example.com> BODY=7BIT")
    raw.cmd("RCPT TO:<b@example.com>")
    raw.cmd("RCPT TO:<c@example.com>")
    assert raw.send_message(b"x\r\n").code == 250
    host_name, extended, mail_from, sender = seen["mail"]
    assert (host_name, extended, mail_from) == ("hooks.example", True, None)
    assert (sender.address, sender.options) == ("a@example.com", {"BODY": "7BIT"})
    assert seen["rcpt"] == [([], "b@example.com"), (["b@example.com"], "c@example.com")]
    [session] = handler.sessions
    assert session.peer == raw.sock.getsockname()[:2]
    assert session.transactions == 1
    [envelope] = handler.wait_for(1)
    assert envelope.body_type == "7BIT"


def test_accepted_message_is_logged_without_errors(serve, client, caplog):
    caplog.set_level(logging.INFO, logger="fastsmtp")
    handler = Collect()
    raw = client(serve(handler))
    raw.begin()
    queue_id = raw.send_message(b"x\r\n").queue_id
    handler.wait_for(1)
    serve.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "fastsmtp"]
    assert any(line.startswith(f"{queue_id}: from=<alice@example.com>") for line in lines)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("keeps", [True, False], ids=["collect", "sink"])
def test_the_log_gives_each_message_size_as_received(serve, client, caplog, keeps):
    # Dot-unstuffed, without the Received: header the server adds, whether
    # the handler keeps the body or it is discarded as it arrives (Sink);
    # for BDAT, the sum of the chunks.
    caplog.set_level(logging.INFO, logger="fastsmtp")
    handler = Collect() if keeps else Sink()
    raw = client(serve(handler, chunking=True))
    raw.begin()
    stuffed = b"Subject: x\r\n\r\n..dot\r\nbody\r\n"  # 26 octets after unstuffing
    data_id = raw.send_message(stuffed).queue_id
    assert raw.cmd("MAIL FROM:<a@example.com>").code == 250
    assert raw.cmd("RCPT TO:<b@example.com>").code == 250
    raw.send(b"BDAT 5\r\nhelloBDAT 3 LAST\r\nabc")
    replies = raw.replies(2)
    assert [r.code for r in replies] == [250, 250]
    bdat_id = replies[1].queue_id
    if keeps:
        handler.wait_for(2)
    serve.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "fastsmtp"]
    sizes = {
        line.split(":")[0]: line.split(" size=")[1].split()[0] for line in lines if " size=" in line
    }
    assert (sizes.get(data_id), sizes.get(bdat_id)) == ("26", "8"), lines
