"""Exim, a real MTA that sends BDAT (RFC 3030), delivering to fastsmtp over loopback.

swaks and Postfix's ``smtp`` client never send BDAT; Exim (4.88+) does
whenever the server offers CHUNKING. Debian's binary runs here from a
throw-away directory with its own configuration, spool and log, as an
unprivileged user (root drops to ``nobody``): nss_wrapper gives that user
the name ``Debian-exim`` compiled into the binary.

A relay between exim and the server keeps every octet each side sent, so the
tests check the wire itself, not only exim's account of it (its ``-v``
transcript and its log, kept for the failure messages).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fastsmtp import Collect
from fastsmtp.testing import running
from smtp_replies import WireReply, parse_replies

SENDER = "sender@exim.test"
RECIPIENT = "rcpt@mx.test"
# No dot-stuffing in BDAT: the dotted lines must arrive exactly as written.
MESSAGE = (
    b"From: <sender@exim.test>\r\nTo: <rcpt@mx.test>\r\nSubject: chunks\r\n"
    b"Date: Thu, 1 Jan 2026 00:00:00 +0000\r\nMessage-ID: <bdat@exim.test>\r\n\r\n"
    b".leading dot\r\n..two dots\r\n.\r\nnot the end\r\n\xc3\xa9t\xc3\xa9 8-bit\r\n"
)
# Exim (transport.c) sends a message larger than its 8 KiB write buffer
# as chunks of headers, each a buffer full, then the body as one LAST chunk:
# ~24 KiB of headers and ~300 KiB of body make four chunks or more.
FILLER = b"".join(b"X-Filler-%03d: %s\r\n" % (n, b"h" * 60) for n in range(300))
BIG = FILLER + MESSAGE + b"".join(b"%06d %s\r\n" % (n, b"x" * 70) for n in range(4000))
DEADLINE = 60.0

CONFIG = """\
primary_hostname = exim.test
qualify_domain = exim.test
spool_directory = {root}/spool
log_file_path = {root}/log/%slog
exim_path = {root}/exim4
keep_environment = LD_PRELOAD : NSS_WRAPPER_PASSWD : NSS_WRAPPER_GROUP
message_size_limit = 0
# One run delivers the queue oldest first.
queue_run_in_order

begin routers
# A bounce goes to the sender's domain, where it vanishes.
bounces:
  driver = redirect
  domains = exim.test
  data = :blackhole:
fastsmtp:
  driver = manualroute
  route_list = * 127.0.0.1
  transport = fastsmtp
  self = send

begin transports
fastsmtp:
  driver = smtp
  port = {port}
  allow_localhost
  hosts_avoid_tls = *
  hosts_try_fastopen = :
  hosts_try_chunking = *
{options}
begin retry
* * F,1h,1h
"""


class Exim:
    """One exim installation in a directory of its own, run per message."""

    def __init__(self, binary: str, nss_wrapper: str, root: Path) -> None:
        self.root = root
        self.config = root / "exim.conf"
        self.binary = root / "exim4"
        shutil.copyfile(binary, self.binary)  # a copy drops Debian's setuid bit
        self.binary.chmod(0o755)
        # exim refuses to run as root's uid; root lends it nobody's.
        uid, gid = (os.getuid(), os.getgid()) if os.getuid() else (65534, 65534)
        (root / "passwd").write_text(f"Debian-exim:x:{uid}:{gid}::/nonexistent:/bin/false\n")
        (root / "group").write_text(f"Debian-exim:x:{gid}:\n")
        self._run_as: dict[str, Any] = {}
        if os.getuid() == 0:
            os.chown(root, uid, gid)
            self._run_as = {"user": uid, "group": gid, "extra_groups": []}
        self._env = {
            "PATH": "/usr/bin:/bin",
            "LD_PRELOAD": nss_wrapper,
            "NSS_WRAPPER_PASSWD": str(root / "passwd"),
            "NSS_WRAPPER_GROUP": str(root / "group"),
        }

    def deliver(self, message: bytes, port: int, *options: str) -> str:
        """Submit ``message`` and deliver it now (``-odf``); exim's transcript.

        ``options`` are extra lines for the smtp transport.
        """
        self._configure(port, options)
        return self._run("-odf", "-oi", "-f", SENDER, RECIPIENT, message=message)

    def queue(self, message: bytes, port: int) -> None:
        """Submit ``message`` for a later queue run (``-odq``)."""
        self._configure(port, ())
        self._run("-odq", "-oi", "-f", SENDER, RECIPIENT, message=message)

    def run_queue(self) -> str:
        """Deliver the queue in two passes (``-qq``): one connection per host."""
        return self._run("-qqf")

    def _configure(self, port: int, options: tuple[str, ...]) -> None:
        transport = "".join(f"  {option}\n" for option in options)
        self.config.write_text(CONFIG.format(root=self.root, port=port, options=transport))

    def _run(self, *args: str, message: bytes = b"") -> str:
        argv = [str(self.binary), "-C", str(self.config), "-v", *args]
        result = subprocess.run(
            argv,
            input=message,
            capture_output=True,
            env=self._env,
            timeout=DEADLINE,
            check=False,
            **self._run_as,
        )
        transcript = (result.stdout + result.stderr).decode("utf-8", "replace")
        assert result.returncode == 0, transcript
        return transcript

    def mainlog(self) -> str:
        """Exim's main log: one line per reception and per delivery attempt."""
        return (self.root / "log" / "mainlog").read_text()


@dataclass
class Connection:
    """What the client and the server each sent on one relayed connection."""

    sent: bytearray = field(default_factory=bytearray)
    received: bytearray = field(default_factory=bytearray)

    def commands(self) -> list[tuple[str, bytes]]:
        """The client's command lines, each with the chunk (or DATA text) after it."""
        stream = bytes(self.sent)
        commands: list[tuple[str, bytes]] = []
        at = 0
        while at < len(stream):
            end = stream.index(b"\r\n", at)
            line = stream[at:end].decode("ascii")
            at = end + 2
            payload = b""
            if line.upper().startswith("BDAT "):
                payload = stream[at : at + int(line.split()[1])]
            elif line.upper() == "DATA":
                payload = stream[at : stream.index(b"\r\n.\r\n", at - 2) + 5]
            at += len(payload)
            commands.append((line, payload))
        return commands

    def replies(self) -> list[WireReply]:
        """The server's replies, the greeting first."""
        return parse_replies(bytes(self.received))


class WireTap:
    """A loopback relay in front of the server that records each connection."""

    def __init__(self, port: int) -> None:
        self.connections: list[Connection] = []
        self._target = ("127.0.0.1", port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._stop_r, self._stop_w = socket.socketpair()
        self._thread = threading.Thread(target=self._relay, name="wiretap", daemon=True)

    def __enter__(self) -> WireTap:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_w.send(b"x")
        self._thread.join(DEADLINE)
        for sock in (self._listener, self._stop_r, self._stop_w):
            sock.close()

    def _relay(self) -> None:
        """Relay and record until stopped and every connection is closed both ways."""
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ)
        selector.register(self._stop_r, selectors.EVENT_READ)
        sockets: list[socket.socket] = []
        stopping = False
        open_directions = 0
        deadline = time.monotonic() + DEADLINE
        try:
            while not (stopping and open_directions == 0):
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                for key, _ in selector.select(left):
                    if key.fileobj is self._stop_r:
                        # The replies still in flight (a 221 exim never
                        # waited for) are recorded before the relay ends.
                        stopping = True
                        selector.unregister(self._stop_r)
                        selector.unregister(self._listener)
                    elif key.fileobj is self._listener:
                        client, _ = self._listener.accept()
                        server = socket.create_connection(self._target)
                        sockets += (client, server)
                        record = Connection()
                        self.connections.append(record)
                        selector.register(client, selectors.EVENT_READ, (server, record.sent))
                        selector.register(server, selectors.EVENT_READ, (client, record.received))
                        open_directions += 2
                    else:
                        source = key.fileobj
                        peer, recorded = key.data
                        data = source.recv(65536)  # type: ignore[union-attr]
                        if data:
                            recorded += data
                            peer.sendall(data)
                        else:  # pass the half-close on
                            selector.unregister(source)
                            open_directions -= 1
                            with contextlib.suppress(OSError):
                                peer.shutdown(socket.SHUT_WR)
        finally:
            selector.close()
            for sock in sockets:
                sock.close()


@pytest.fixture
def mta(exim: str, nss_wrapper: str) -> Iterator[Exim]:
    """A fresh exim in a directory its (possibly unprivileged) user can write."""
    root = Path(tempfile.mkdtemp(prefix="fastsmtp-exim-"))
    try:
        yield Exim(exim, nss_wrapper, root)
    finally:
        shutil.rmtree(root)


def deliver_through_tap(mta: Exim, message: bytes, port: int, *options: str) -> Connection:
    """Have exim deliver ``message`` to ``port`` through a WireTap; its one connection."""
    with WireTap(port) as tap:
        transcript = mta.deliver(message, tap.port, *options)
    assert len(tap.connections) == 1, transcript + mta.mainlog()
    return tap.connections[0]


def verbs(connection: Connection) -> list[str]:
    """The client's commands, without their arguments, in the order sent."""
    return [line.split()[0].upper() for line, _ in connection.commands()]


def stored(handler: Collect) -> bytes:
    """The content of the one message the server accepted."""
    [envelope] = handler.wait_for(1)
    assert envelope.content is not None
    return envelope.content


def test_exim_delivers_with_bdat_byte_exact(mta: Exim) -> None:
    handler = Collect()
    with running(handler, hostname="mx.test") as (_, port):
        wire = deliver_through_tap(mta, MESSAGE, port)
        content = stored(handler)
    assert verbs(wire) == ["EHLO", "MAIL", "RCPT", "BDAT", "QUIT"]
    line, chunk = wire.commands()[3]
    assert line == f"BDAT {len(chunk)} LAST"
    # Exim adds its Received: header, fastsmtp its own above it; the rest is
    # the message exactly as submitted, dotted lines and 8-bit octets included.
    assert chunk.endswith(MESSAGE) and chunk.startswith(b"Received: from Debian-exim by exim.test")
    assert content.endswith(chunk)
    assert content.startswith(b"Received: from exim.test ([127.0.0.1])\r\n\tby mx.test (fastsmtp)")
    assert [r.code for r in wire.replies()] == [220, 250, 250, 250, 250, 221]
    # Exim's log marks a delivery made with CHUNKING with "K".
    assert ' K C="250 2.0.0 ' in mta.mainlog()


def test_a_large_message_goes_in_several_chunks_and_is_joined(mta: Exim) -> None:
    handler = Collect()
    with running(handler, hostname="mx.test") as (_, port):
        wire = deliver_through_tap(mta, BIG, port)
        content = stored(handler)
    chunks = [(line, chunk) for line, chunk in wire.commands() if line.startswith("BDAT")]
    assert len(chunks) >= 4, [line for line, _ in chunks]
    *first, (last_line, last_chunk) = chunks
    assert [line for line, _ in first] == [f"BDAT {len(chunk)}" for _, chunk in first]
    assert last_line == f"BDAT {len(last_chunk)} LAST"
    joined = b"".join(chunk for _, chunk in chunks)
    assert joined.endswith(BIG)
    assert content.endswith(joined)
    # Each chunk answered in turn: the non-LAST ones with their size.
    replies = wire.replies()[4:]  # after the greeting, EHLO, MAIL and RCPT
    assert [r.text for r in replies[:-2]] == [f"{len(chunk)} octets received" for _, chunk in first]
    assert replies[-2].queue_id and replies[-1].code == 221
    assert ' K C="250 2.0.0 ' in mta.mainlog()


def test_too_big_for_size_fails_at_mail_and_the_pipelined_chunk_is_consumed(mta: Exim) -> None:
    # Exim declares SIZE= and pipelines RCPT and the first chunk behind MAIL:
    # MAIL gets 552, the chunk is read and refused, and QUIT is still QUIT.
    handler = Collect()
    with running(handler, hostname="mx.test", max_message_size=100_000) as (_, port):
        wire = deliver_through_tap(mta, BIG, port)
    assert verbs(wire) == ["EHLO", "MAIL", "RCPT", "BDAT", "QUIT"]
    replies = [(r.code, r.enhanced) for r in wire.replies()]
    assert replies == [
        (220, None), (250, None), (552, "5.3.4"), (503, "5.5.1"), (503, "5.5.1"), (221, "2.0.0")
    ]  # fmt: skip
    assert handler.envelopes == []
    log = mta.mainlog()
    assert f"** {RECIPIENT} " in log and ": 552 5.3.4 " in log


def test_too_big_without_declaring_it_fails_at_the_chunk_that_overflows(mta: Exim) -> None:
    # A negative size_addition makes exim declare far less than it sends,
    # so the limit is met inside BDAT, by the count of octets received.
    handler = Collect()
    with running(handler, hostname="mx.test", max_message_size=100_000) as (_, port):
        wire = deliver_through_tap(mta, BIG, port, "size_addition = -300000")
    mail = wire.commands()[1][0]
    assert int(mail.rsplit("SIZE=", 1)[1]) < 100_000
    chunks = [chunk for line, chunk in wire.commands() if line.startswith("BDAT")]
    assert sum(len(chunk) for chunk in chunks) > 100_000
    replies = [(r.code, r.enhanced) for r in wire.replies()]
    # Every chunk answered in order, the overflowing one with 552, then QUIT.
    assert replies[2:4] == [(250, "2.1.0"), (250, "2.1.5")]
    assert replies[4 : 4 + len(chunks)] == [(250, "2.0.0")] * (len(chunks) - 1) + [(552, "5.3.4")]
    assert replies[4 + len(chunks) :] == [(221, "2.0.0")]
    assert handler.envelopes == []
    log = mta.mainlog()
    assert f"** {RECIPIENT} " in log and "after end of data: 552 5.3.4 " in log


def test_without_chunking_on_the_server_exim_falls_back_to_data(mta: Exim) -> None:
    handler = Collect()
    with running(handler, hostname="mx.test", chunking=False) as (_, port):
        wire = deliver_through_tap(mta, MESSAGE, port)
        content = stored(handler)
    ehlo = wire.replies()[1]
    assert "CHUNKING" not in ehlo.lines and "BINARYMIME" not in ehlo.lines
    assert verbs(wire) == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]
    text = wire.commands()[3][1]
    # Dot-stuffed on the wire, unstuffed in the store: the same message.
    assert b"\r\n..leading dot\r\n...two dots\r\n..\r\n" in text
    assert content.endswith(MESSAGE)
    assert " K C=" not in mta.mainlog()


def test_one_connection_carries_two_bdat_transactions(mta: Exim) -> None:
    # A two-pass queue run sends both queued messages down one connection:
    # after the chunks of the first, the second transaction starts clean.
    handler = Collect()
    with running(handler, hostname="mx.test") as (_, port), WireTap(port) as tap:
        mta.queue(BIG, tap.port)
        mta.queue(MESSAGE, tap.port)
        transcript = mta.run_queue()
        first, second = handler.wait_for(2)
    assert len(tap.connections) == 1, transcript
    [wire] = tap.connections
    big_chunks = verbs(wire).count("BDAT") - 1
    assert big_chunks >= 4
    assert verbs(wire) == [
        "EHLO", "MAIL", "RCPT", *["BDAT"] * big_chunks, "MAIL", "RCPT", "BDAT", "QUIT"
    ]  # fmt: skip
    queued = [reply.queue_id for reply in wire.replies() if reply.queue_id]
    assert len(set(queued)) == 2
    assert first.content is not None and first.content.endswith(BIG)
    assert second.content is not None and second.content.endswith(MESSAGE)
    # "*" after the host: exim's log for a delivery down a reused connection.
    assert '[127.0.0.1]* K C="250 2.0.0 ' in mta.mainlog()
