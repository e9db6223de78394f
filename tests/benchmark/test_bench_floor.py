"""The Python floor (bench/floor.py) answers what the load benchmark's clients send.

It runs the way ``bench.load`` runs it: ``start_server(SERVERS["floor"])``, a
process of its own on loopback. smtplib sends a transaction with the
end-of-data marker written in pieces; a raw socket sends a pipelined batch;
the benchmark's two clients (bench/client.py, Postfix's smtp-source) send
their loads.
Whether pieces written apart are read apart is up to the kernel, so every
split of a conversation is also fed to the protocol in-process, as the event
loop would feed it, and must give the same replies.
"""

from __future__ import annotations

import asyncio
import smtplib
import socket
import subprocess
from collections.abc import Iterator

import pytest
from bench import floor
from bench.client import run_load
from bench.servers import SERVERS, RunningServer, start_server, subprocess_env

from interop.conftest import require_tool
from smtp_replies import parse_replies

# Two transactions, the second with an empty body; the first body has a
# stuffed dot line and a line starting with a dot that is not the end.
CONVERSATION = (
    b"EHLO client.example\r\nMAIL FROM:<a@client.example>\r\nRCPT TO:<b@server.example>\r\n"
    b"DATA\r\nSubject: floor\r\n\r\n..\r\n.x\r\nlast line\r\n.\r\n"
    b"MAIL FROM:<a@client.example>\r\nRCPT TO:<b@server.example>\r\nDATA\r\n.\r\n"
    b"RSET\r\nNOOP\r\nHELO client.example\r\nQUIT\r\n"
)
CODES = [250, 250, 250, 354, 250, 250, 250, 354, 250, 250, 250, 250, 221]


@pytest.fixture
def server() -> Iterator[RunningServer]:
    running = start_server(SERVERS["floor"])
    try:
        yield running
    finally:
        running.stop()
    # SIGTERM ends it cleanly: no traceback, exit status 0.
    assert running.proc.returncode == 0


def test_smtplib_sends_a_message_whose_end_marker_comes_in_pieces(server: RunningServer) -> None:
    with smtplib.SMTP(*server.address, timeout=10) as client:
        code, _ = client.ehlo("client.example")
        assert code == 250
        assert client.has_extn("pipelining")
        assert client.mail("a@client.example") == (250, b"2.0.0 Ok")
        assert client.rcpt("b@server.example") == (250, b"2.0.0 Ok")
        client.putcmd("data")
        assert client.getreply()[0] == 354
        assert client.sock is not None
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in (b"Subject: floor\r\n\r\n..\r\nbody\r", b"\n.", b"\r", b"\n"):
            client.send(piece)
        assert client.getreply() == (250, b"2.0.0 Ok: queued as FLOOR")
        assert client.noop()[0] == 250
        assert client.rset()[0] == 250
        assert client.quit()[0] == 221


def test_a_pipelined_batch_gets_every_reply_then_the_connection_closes(
    server: RunningServer,
) -> None:
    with socket.create_connection(server.address, timeout=10) as sock:
        received = b""
        while not received.endswith(b"\r\n"):
            received += sock.recv(4096)
        assert received.startswith(b"220 ")
        sock.sendall(CONVERSATION)
        received = b""
        for _ in range(100):  # until the server closes after 221
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        else:
            pytest.fail(f"the connection stayed open after {received!r}")
    replies = parse_replies(received)
    assert [r.code for r in replies] == CODES
    assert "PIPELINING" in replies[0].lines


@pytest.mark.parametrize("reuse", [False, True], ids=["new", "reuse"])
def test_the_bundled_load_client_sends_every_message(server: RunningServer, reuse: bool) -> None:
    host, port = server.address
    load = run_load(host, port, sessions=3, messages=12, length=3000, reuse=reuse, rcpts=2)
    result = asyncio.run(asyncio.wait_for(load, 60))
    assert (result.messages, result.errors, result.first_error) == (12, 0, "")


@pytest.mark.interop
def test_smtp_source_sends_every_message(server: RunningServer) -> None:
    tool = require_tool("smtp-source")
    argv = [tool, "-s", "3", "-m", "12", "-l", "3000", "-r", "2", "-M", "client.example"]
    argv += ["-f", "a@client.example", "-t", "b@server.example", f"127.0.0.1:{server.port}"]
    for reuse in ([], ["-d"]):
        proc = subprocess.run(
            argv[:1] + reuse + argv[1:],
            capture_output=True,
            text=True,
            timeout=60,
            env=subprocess_env(),
            check=False,
        )
        assert proc.returncode == 0, proc.stderr


class FakeTransport:
    """What the protocol writes, one entry per ``write``."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True


def converse(pieces: list[bytes]) -> FakeTransport:
    """Feed ``pieces`` to a new connection the way the event loop does: one read each."""
    protocol = floor.FloorProtocol()
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    assert transport.writes == [floor.GREETING]
    transport.writes.clear()
    for piece in pieces:
        buffer = protocol.get_buffer(-1)
        buffer[: len(piece)] = piece
        protocol.buffer_updated(len(piece))
    return transport


def test_every_split_of_the_conversation_gets_the_same_replies() -> None:
    whole = converse([CONVERSATION])
    assert [r.code for r in parse_replies(b"".join(whole.writes))] == CODES
    assert len(whole.writes) == 1  # one write for the whole pipelined batch
    assert whole.closed
    splits = [[CONVERSATION[:i], CONVERSATION[i:]] for i in range(1, len(CONVERSATION))]
    splits.append([CONVERSATION[i : i + 1] for i in range(len(CONVERSATION))])
    for pieces in splits:
        transport = converse(pieces)
        assert b"".join(transport.writes) == b"".join(whole.writes), pieces
        assert len(transport.writes) <= len(pieces)
        assert transport.closed, pieces


def test_a_body_split_at_every_byte_of_its_end_marker() -> None:
    # The marker's first CRLF is in one read and its ".\r\n" in later ones.
    head = b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nline\r\n"
    transport = converse([head, b".", b"\r", b"\n", b"QUIT\r\n"])
    codes = [r.code for r in parse_replies(b"".join(transport.writes))]
    assert codes == [250, 250, 354, 250, 221]


def test_a_command_line_without_end_is_cut_off() -> None:
    transport = converse([b"X" * 1024] * (floor.MAX_LINE // 1024 + 1))
    assert transport.writes == [floor.TOO_LONG]
    assert transport.closed
