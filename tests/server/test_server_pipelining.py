"""PIPELINING (RFC 2920) and chunk boundaries through the asyncio server.

A pipelined group sent at once must get all its replies, in order, and the
server must write them with one ``write`` (RFC 2920 §3.2: the server should
batch its responses). Checked three ways: through a real socket, through a
real socket with the transport's ``write`` recorded, and by driving
``SMTPProtocol`` with a fake transport.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading

import pytest

from fastsmtp import Collect, Reply, Server
from fastsmtp.connection import BufferedSMTPProtocol, SMTPProtocol

GROUP = (
    b"MAIL FROM:<alice@example.com>\r\n"
    b"RCPT TO:<bob@example.com>\r\n"
    b"RCPT TO:not-an-address\r\n"
    b"RCPT TO:<carol@example.com>\r\n"
    b"DATA\r\n"
)
GROUP_REPLIES = [(250, "2.1.0"), (250, "2.1.5"), (501, "5.1.3"), (250, "2.1.5"), (354, None)]
GROUP_BYTES = (
    b"250 2.1.0 Sender OK\r\n"
    b"250 2.1.5 Recipient OK\r\n"
    b"501 5.1.3 Bad recipient address syntax\r\n"
    b"250 2.1.5 Recipient OK\r\n"
    b"354 End data with <CR><LF>.<CR><LF>\r\n"
)


class Hooked(Collect):
    """Collect with an async on_mail and a sync (thread pool) on_rcpt."""

    async def on_mail(self, session, envelope, sender):
        await asyncio.sleep(0)

    def on_rcpt(self, session, envelope, rcpt):
        if rcpt.address.startswith("nobody"):
            return Reply(550, "5.1.1", "No such user here")
        return None


def _codes(replies):
    return [(r.code, r.enhanced) for r in replies]


@pytest.mark.parametrize("handler_class", [Collect, Hooked])
def test_pipelined_groups_get_all_replies_in_order(serve, client, handler_class):
    handler = handler_class()
    raw = client(serve(handler))
    raw.ehlo()
    raw.send(GROUP)
    assert _codes(raw.replies(5)) == GROUP_REPLIES
    # Body, terminator and a whole second transaction and QUIT in one send.
    raw.send(
        b"Subject: one\r\n\r\nfirst\r\n.\r\n"
        b"MAIL FROM:<dave@example.com>\r\n"
        b"RCPT TO:<erin@example.com>\r\n"
        b"DATA\r\n"
        b"Subject: two\r\n\r\nsecond\r\n.\r\n"
        b"QUIT\r\n"
    )
    replies = raw.replies(6)
    assert [r.code for r in replies] == [250, 250, 250, 354, 250, 221]
    assert replies[0].queue_id and replies[4].queue_id
    raw.expect_closed()
    first, second = handler.wait_for(2)
    assert first.rcpt_tos == ["bob@example.com", "carol@example.com"]
    assert first.content.endswith(b"\r\n\r\nfirst\r\n")
    assert second.mail_from == "dave@example.com"
    assert second.content.endswith(b"\r\n\r\nsecond\r\n")


@pytest.fixture
def io_log(monkeypatch):
    """Record, per server connection, every ``data_received`` and transport ``write``."""
    log: list[tuple[str, bytes]] = []
    lock = threading.Lock()
    connection_made = SMTPProtocol.connection_made
    data_received = SMTPProtocol.data_received

    class SpyTransport:
        """Forwards to the real transport (uvloop's cannot be patched), logging writes."""

        def __init__(self, transport):
            self._transport = transport

        def write(self, data):
            with lock:
                log.append(("write", bytes(data)))
            self._transport.write(data)

        def __getattr__(self, name):
            return getattr(self._transport, name)

    def spy_connection_made(self, transport):
        connection_made(self, SpyTransport(transport))

    def spy_data_received(self, data):
        with lock:
            log.append(("read", bytes(data)))
        data_received(self, data)

    monkeypatch.setattr(BufferedSMTPProtocol, "connection_made", spy_connection_made)
    monkeypatch.setattr(BufferedSMTPProtocol, "data_received", spy_data_received)
    return log


@pytest.mark.parametrize("handler_class", [Collect, Hooked])
def test_one_read_of_a_group_is_answered_with_one_write(serve, client, io_log, handler_class):
    raw = client(serve(handler_class()))
    raw.ehlo()
    raw.send(GROUP)
    assert _codes(raw.replies(5)) == GROUP_REPLIES
    start = io_log.index(("read", GROUP))  # the group arrived in one read...
    # ...and was answered with exactly one write holding every reply.
    assert io_log[start:] == [("read", GROUP), ("write", GROUP_BYTES)]


def test_replies_after_data_and_a_hook_are_one_write(serve, client, io_log):
    raw = client(serve(Hooked()))
    raw.begin()
    assert raw.cmd("DATA").code == 354
    tail = (
        b"body\r\n.\r\n"
        b"MAIL FROM:<x@example.com>\r\n"
        b"RCPT TO:<nobody@example.com>\r\n"
        b"RCPT TO:<y@example.com>\r\n"
        b"NOOP\r\n"
    )
    raw.send(tail)
    assert _codes(raw.replies(5)) == [
        (250, "2.0.0"),
        (250, "2.1.0"),
        (550, "5.1.1"),
        (250, "2.1.5"),
        (250, "2.0.0"),
    ]
    start = io_log.index(("read", tail))
    assert [kind for kind, _ in io_log[start:]] == ["read", "write"]
    assert io_log[-1][1].count(b"\r\n") == 5


# --- SMTPProtocol with a fake transport --------------------------------------------
class FakeTransport(asyncio.Transport):
    """Records writes; stands in for a socket transport."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.written = asyncio.Event()

    def get_extra_info(self, name, default=None):
        return {"peername": ("192.0.2.9", 40000)}.get(name, default)

    def write(self, data) -> None:
        self.writes.append(bytes(data))
        self.written.set()

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _next_write(transport: FakeTransport, count: int) -> list[bytes]:
    """Wait (bounded) until the transport has ``count`` writes; return them."""
    async with asyncio.timeout(5):
        while len(transport.writes) < count:
            transport.written.clear()
            await transport.written.wait()
    return transport.writes


@pytest.mark.parametrize("handler_class", [Collect, Hooked])
def test_smtp_protocol_batches_a_group_into_one_write(handler_class):
    handler = handler_class()

    async def main() -> list[bytes]:
        server = Server(handler, hostname="mx.test")
        protocol = SMTPProtocol(server)
        transport = FakeTransport()
        protocol.connection_made(transport)
        await _next_write(transport, 1)
        protocol.data_received(b"EHLO client.example\r\n")
        await _next_write(transport, 2)
        protocol.data_received(GROUP)
        await _next_write(transport, 3)
        protocol.data_received(b"hello\r\n.\r\nNOOP\r\nRSET\r\nQUIT\r\n")
        writes = await _next_write(transport, 4)
        assert transport.closed  # after QUIT, once the replies are written
        protocol.connection_lost(None)
        await server.close(grace=1)
        return writes

    greeting, ehlo, group, tail = asyncio.run(main())
    assert greeting == b"220 mx.test ESMTP fastsmtp\r\n"
    assert ehlo.startswith(b"250-mx.test\r\n")
    assert group == GROUP_BYTES
    assert re.fullmatch(
        rb"250 2\.0\.0 OK: queued as \w+\r\n250 2\.0\.0 OK\r\n250 2\.0\.0 OK\r\n"
        rb"221 2\.0\.0 mx\.test closing connection\r\n",
        tail,
    ), tail
    assert len(handler.envelopes) == 1


# --- chunk boundaries over a socket -------------------------------------------------
SESSION = (
    b"EHLO client.example\r\n"
    b"MAIL FROM:<alice@example.com> BODY=8BITMIME\r\n"
    b"RCPT TO:<bob@example.com>\r\n"
    b"RCPT TO:<nobody@example.com>\r\n"
    b"DATA\r\n"
    b"Subject: split\r\n\r\n..dot line\r\nlast line\r\n.\r\n"
    b"VRFY bob\r\n"
    b"MAIL FROM:<>\r\n"
    b"RCPT TO:<carol@example.com>\r\n"
    b"DATA\r\n"
    b".\r\n"
    b"QUIT\r\n"
)


def _run_session(addr, client, pieces):
    raw = client(addr)
    raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for piece in pieces:
        raw.send(piece)
    data = raw.read_until_eof()
    # Queue ids differ from run to run; everything else must not.
    return re.sub(rb"queued as \w+", b"queued as ID", data)


def test_session_byte_by_byte_equals_one_piece(serve, client):
    whole_handler, bytewise_handler = Hooked(), Hooked()
    whole = _run_session(serve(whole_handler), client, [SESSION])
    bytewise = _run_session(
        serve(bytewise_handler), client, [SESSION[i : i + 1] for i in range(len(SESSION))]
    )
    assert bytewise == whole
    assert whole.count(b"\r\n") == 19  # EHLO is 8 lines; 11 more replies
    assert b"550 5.1.1 No such user here\r\n" in whole
    whole_envelopes = whole_handler.wait_for(2)
    bytewise_envelopes = bytewise_handler.wait_for(2)

    def body(envelope):
        # The content after our Received: header (its last line ends with the date).
        lines = envelope.content.split(b"\r\n")
        n = 1 + next(i for i, line in enumerate(lines[1:]) if line[:1] != b"\t")
        return b"\r\n".join(lines[n:])

    assert [body(e) for e in bytewise_envelopes] == [body(e) for e in whole_envelopes]
    assert [body(e) for e in whole_envelopes] == [
        b"Subject: split\r\n\r\n.dot line\r\nlast line\r\n",
        b"",
    ]
    assert [e.rcpt_tos for e in bytewise_envelopes] == [["bob@example.com"], ["carol@example.com"]]
