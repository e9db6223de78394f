"""LMTPForward: a front fastsmtp hands mail to a back fastsmtp in LMTP mode, over real sockets."""

from __future__ import annotations

import logging
import smtplib
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastsmtp import Collect, Reply
from fastsmtp.config import ConfigError
from fastsmtp.handlers.lmtp import LMTPForward
from fastsmtp.session import Address, Envelope, Session
from fastsmtp.testing import running

MESSAGE = b"Subject: hello\r\n\r\n.a dotted line\r\nbody\r\n"
RCPTS = ["one@example.com", "full@example.com", "gone@example.com"]


class Mailboxes(Collect):
    """The back end: refuses gone@ at RCPT, defers full@ after the data, keeps the rest."""

    async def on_rcpt(self, session: Session, envelope: Envelope, rcpt: Address) -> Reply | None:
        if rcpt.address.startswith("gone@"):
            return Reply(550, "5.1.1", "No such mailbox")
        return None

    async def on_message(self, session: Session, envelope: Envelope) -> list[Reply | None]:
        await super().on_message(session, envelope)
        return [
            Reply(452, "4.2.2", "Mailbox full") if r.startswith("full@") else None
            for r in envelope.rcpt_tos
        ]


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # A short path: Unix socket paths are limited to ~100 bytes.
    with tempfile.TemporaryDirectory(prefix="fl") as directory:
        yield Path(directory)


def lmtp_transaction(host: str, port: int, rcpts: list[str]) -> list[tuple[int, bytes]]:
    """MAIL, RCPTs, DATA to an LMTP server; the RCPT refusals and every reply after the data."""
    with smtplib.LMTP(host, port, timeout=20) as lmtp:
        lmtp.ehlo("client.test")
        assert lmtp.mail("a@example.org")[0] == 250
        accepted = [r for r in rcpts if lmtp.rcpt(r)[0] == 250]
        replies = [lmtp.data(MESSAGE)]
        replies += [lmtp.getreply() for _ in accepted[1:]]
    return [(code, text) for code, text in replies]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_per_recipient_results_come_back_through_an_lmtp_front(
    transport: str, loop: str, sock_dir: Path
) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop", reason="uvloop is not available on this platform")
    back = Mailboxes()
    path = sock_dir / "lmtp"
    with running(back, lmtp=True, listen=[f"unix:{path}"] if transport == "unix" else []) as (
        host,
        port,
    ):
        target = f"unix:{path}" if transport == "unix" else f"{host}:{port}"
        # The front accepts every recipient at RCPT; the back decides per recipient.
        forward = LMTPForward(target, helo_name="front.test")
        with running(forward, lmtp=True, loop=loop) as front:
            replies = lmtp_transaction(*front, RCPTS)
    assert [code for code, _ in replies] == [250, 452, 550]
    assert replies[1][1] == b"4.2.2 Mailbox full"
    assert replies[2][1] == b"5.1.1 No such mailbox"
    [envelope] = back.envelopes
    assert envelope.mail_from == "a@example.org"
    assert envelope.rcpt_tos == ["one@example.com", "full@example.com"]
    assert envelope.content is not None
    # The front's Received: header, then the back's, then the message, dot-unstuffed.
    assert envelope.content.endswith(b"\r\n" + MESSAGE)
    assert envelope.content.count(b"Received: ") == 2
    assert b"from front.test" in envelope.content


def test_smtp_front_gets_one_reply_when_the_back_agrees_and_451_when_it_does_not() -> None:
    back = Mailboxes()
    with (
        running(back, lmtp=True) as (host, port),
        running(LMTPForward(f"{host}:{port}")) as (fhost, fport),
        smtplib.SMTP(fhost, fport, timeout=20) as smtp,
    ):
        assert smtp.sendmail("a@example.org", ["one@example.com"], MESSAGE) == {}
        # SMTP has one reply after DATA: accepted for one, refused for another
        # cannot be said, so the client is told to retry (nothing is lost).
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail("a@example.org", ["one@example.com", "full@example.com"], MESSAGE)
        assert refused.value.smtp_code == 451
        # All refused alike: the back's reply goes through.
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail("a@example.org", ["full@example.com"], MESSAGE)
        assert (refused.value.smtp_code, refused.value.smtp_error) == (
            452,
            b"4.2.2 Mailbox full",
        )
    assert [e.rcpt_tos for e in back.envelopes] == [
        ["one@example.com"],
        ["one@example.com", "full@example.com"],
        ["full@example.com"],
    ]


class Tracking(Collect):
    """A back end that notes each connection that ends (and how: with QUIT or not)."""

    def __init__(self) -> None:
        super().__init__()
        self.ended: list[str] = []
        self.all_ended = threading.Event()

    async def on_disconnect(self, session: Session) -> None:
        self.ended.append(session.id)
        if len(self.ended) == len({s.id for s in self.sessions}):
            self.all_ended.set()


def send_each(front: tuple[str, int], count: int) -> None:
    """``count`` messages, each in its own SMTP session to the front (each a new on_message)."""
    for n in range(count):
        with smtplib.SMTP(*front, timeout=20) as smtp:
            smtp.sendmail("a@example.org", [f"r{n}@example.com"], MESSAGE)


def test_one_connection_carries_several_messages_and_quits_when_the_front_stops() -> None:
    back = Tracking()
    with running(back, lmtp=True) as (host, port):
        with running(LMTPForward(f"{host}:{port}")) as front:
            send_each(front, 3)
            assert back.ended == []  # still open, for the next message
        # The front stopped: its server_stopping said QUIT.
        assert back.all_ended.wait(10)
    assert [e.rcpt_tos for e in back.envelopes] == [[f"r{n}@example.com"] for n in range(3)]
    assert len({s.id for s in back.sessions}) == 1


def test_a_connection_the_server_closed_is_replaced_without_losing_mail(sock_dir: Path) -> None:
    path = sock_dir / "lmtp"
    first, second = Tracking(), Tracking()
    forward = LMTPForward(f"unix:{path}")
    with running(forward, lmtp=True) as front:
        with running(first, lmtp=True, listen=[f"unix:{path}"]):
            assert [code for code, _ in lmtp_transaction(*front, ["one@example.com"])] == [250]
        # The LMTP server restarted: the kept connection got its 421 and was closed.
        assert first.all_ended.wait(10)
        with running(second, lmtp=True, listen=[f"unix:{path}"]):
            replies = lmtp_transaction(*front, ["two@example.com"])
    assert [code for code, _ in replies] == [250]
    assert [e.rcpt_tos for e in first.envelopes + second.envelopes] == [
        ["one@example.com"],
        ["two@example.com"],
    ]


class HangUpOnSecondMail:
    """A scripted LMTP server (no PIPELINING): the first connection takes one message and hangs
    up at the next MAIL, as a server closing an idle connection would at that moment; the
    second connection takes everything. Records the messages' recipients."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.delivered: list[list[str]] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(20)
        for connection in range(2):
            sock, _ = self.listener.accept()
            with sock, sock.makefile("rb") as lines:
                sock.sendall(b"220 scripted LMTP\r\n")
                mails, rcpts = 0, []
                for line in lines:
                    verb = line[:4].upper()
                    if verb == b"MAIL":
                        mails += 1
                        if connection == 0 and mails == 2:
                            break  # hang up without a word
                    if verb == b"RCPT":
                        rcpts.append(line[9:].strip(b"<>\r\n").decode())
                    if verb == b"DATA":
                        sock.sendall(b"354 go on\r\n")
                        while next(lines) != b".\r\n":
                            pass
                        self.delivered.append(rcpts)
                        sock.sendall(b"250 2.0.0 saved\r\n" * len(rcpts))
                        rcpts = []
                    elif verb == b"QUIT":
                        sock.sendall(b"221 bye\r\n")
                        break
                    else:
                        sock.sendall(b"250 ok\r\n")
        self.listener.close()


def test_a_hang_up_at_the_next_message_reconnects_and_delivers_once() -> None:
    back = HangUpOnSecondMail()
    with running(LMTPForward(f"127.0.0.1:{back.port}"), lmtp=True) as front:
        for rcpt in ("one@example.com", "two@example.com"):
            assert [code for code, _ in lmtp_transaction(*front, [rcpt])] == [250]
    back.thread.join(10)
    assert back.delivered == [["one@example.com"], ["two@example.com"]]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_unreachable_lmtp_server_defers_every_recipient(
    transport: str, sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = f"unix:{sock_dir / 'none'}" if transport == "unix" else f"127.0.0.1:{_closed_port()}"
    caplog.set_level(logging.WARNING, logger="fastsmtp.handlers.lmtp")
    with running(LMTPForward(target, connect_timeout=5), lmtp=True) as front:
        replies = lmtp_transaction(*front, RCPTS[:2])
    assert replies == [(451, b"4.4.1 No answer from the destination host")] * 2
    assert any("cannot connect" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("target", ["nowhere", "host:port", "unix:", "[::1]"])
def test_bad_target_is_refused_at_construction(target: str) -> None:
    with pytest.raises(ConfigError):
        LMTPForward(target)
