"""Hostile clients over real sockets: each gets its RFC reply or a clean close.

Every test follows the same scene: the hostile client first gets a message
accepted, then sends its hostile input; the server must answer exactly as
the RFCs say (or close cleanly), a second, well-behaved client must still
be served afterwards, and every message accepted before must be delivered
exactly once, with no traceback in the logs. What test_server_robustness.py
and test_server_smuggling.py check one command at a time is here mixed with
pipelining, repeated by the thousand, cut into single bytes, or sent
around STARTTLS.
"""

from __future__ import annotations

import contextlib
import random
import select
import socket
import struct
import time

import pytest

from fastsmtp import Collect
from smtp_replies import reply_line

FAKE_ENDS = [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n"]


class Recorder(Collect):
    """Collect, plus the envelopes that ``on_reset`` was told were abandoned."""

    def __init__(self) -> None:
        super().__init__()
        self.abandoned: list[str | None] = []

    async def on_reset(self, session, envelope):
        self.abandoned.append(envelope.mail_from)


class Scene:
    """A server, a hostile client with one message accepted, and the checks after."""

    def __init__(self, serve, client, tracebacks, **settings) -> None:
        self.handler = Recorder()
        self.addr = serve(self.handler, **settings)
        self.serve, self.client, self.tracebacks = serve, client, tracebacks
        #: senders of the messages accepted so far, in order
        self.accepted: list[str] = []

    def connect(self):
        return self.client(self.addr)

    def deliver(self, raw, sender: str) -> None:
        """One well-formed transaction on a greeted session: 250 to everything."""
        assert raw.cmd(f"MAIL FROM:<{sender}>").code == 250
        assert raw.cmd("RCPT TO:<bob@example.com>").code == 250
        assert raw.send_message(f"Subject: from {sender}\r\n\r\nok\r\n".encode()).code == 250
        self.accepted.append(sender)

    def hostile(self):
        """A client that has had ``before@example.com`` accepted."""
        raw = self.connect()
        raw.ehlo()
        self.deliver(raw, "before@example.com")
        return raw

    def still_serving(self) -> None:
        """A well-behaved client is served now."""
        other = self.connect()
        other.ehlo()
        self.deliver(other, f"other{len(self.accepted)}@example.com")
        assert other.cmd("QUIT").code == 221

    def finish(self) -> list:
        """Serve a second client, stop, and check nothing accepted was lost."""
        self.still_serving()
        self.serve.stop()
        assert [e.mail_from for e in self.handler.envelopes] == self.accepted
        assert self.tracebacks() == []
        return self.handler.envelopes


def _reset(raw) -> None:
    """Vanish with a TCP reset (SO_LINGER 0) instead of a FIN."""
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()


def _smuggling(fake_end: bytes) -> bytes:
    """A transaction whose body hides a second one behind ``fake_end``."""
    return (
        b"MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n"
        b"Subject: real\r\n\r\nreal body" + fake_end + b"MAIL FROM:<admin@example.com>\r\n"
        b"RCPT TO:<victim@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n"
    )


AFTER = b"MAIL FROM:<after@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nafter\r\n.\r\n"


# --- SMTP smuggling, pipelined -------------------------------------------------
@pytest.mark.parametrize("strict", [True, False], ids=["strict", "lenient"])
@pytest.mark.parametrize("fake_end", FAKE_ENDS, ids=repr)
def test_smuggling_pipelined_in_one_write(serve, client, tracebacks, fake_end, strict):
    scene = Scene(serve, client, tracebacks, strict_crlf=strict)
    raw = scene.hostile()
    raw.send(_smuggling(fake_end) + AFTER + b"NOOP\r\n")
    replies = raw.replies(9)
    # MAIL, RCPT, 354, the verdict on the one message, then the next transaction.
    verdict = (554, "5.6.0") if strict else (250, "2.0.0")
    assert [r.code for r in replies[:3]] == [250, 250, 354]
    assert (replies[3].code, replies[3].enhanced) == verdict
    assert [r.code for r in replies[4:]] == [250, 250, 354, 250, 250]
    assert replies[8].text == "OK"  # NOOP's own reply: the session is in sync
    if not strict:
        scene.accepted.append("alice@example.com")
    scene.accepted.append("after@example.com")
    envelopes = scene.finish()
    assert all(e.rcpt_tos == ["bob@example.com"] for e in envelopes)
    assert not any(e.mail_from == "admin@example.com" for e in envelopes)


@pytest.mark.parametrize("fake_end", FAKE_ENDS, ids=repr)
def test_smuggling_cut_into_single_bytes(serve, client, tracebacks, fake_end):
    scene = Scene(serve, client, tracebacks)
    raw = scene.hostile()
    raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for byte in _smuggling(fake_end):
        raw.send(bytes([byte]))
    replies = raw.replies(4)
    assert [(r.code, r.enhanced) for r in replies] == [
        (250, "2.1.0"),
        (250, "2.1.5"),
        (354, None),
        (554, "5.6.0"),
    ]
    scene.finish()


def test_smuggling_sequences_inside_a_bdat_chunk_are_just_octets(serve, client, tracebacks):
    scene = Scene(serve, client, tracebacks)
    raw = scene.hostile()
    payload = b"".join(FAKE_ENDS) + b"\r\n.\r\n" + AFTER
    raw.send(
        b"MAIL FROM:<chunk@example.com> BODY=BINARYMIME\r\nRCPT TO:<bob@example.com>\r\n"
        b"BDAT %d LAST\r\n" % len(payload) + payload + b"NOOP\r\n"
    )
    assert [r.code for r in raw.replies(4)] == [250, 250, 250, 250]
    scene.accepted.append("chunk@example.com")
    envelopes = scene.finish()
    assert envelopes[1].content.endswith(payload)


# --- NUL bytes -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("stage", "line", "code", "enhanced"),
    [
        ("ready", b"MAIL FROM:<a@exa\x00mple.com>", 501, "5.1.7"),
        ("ready", b"MAIL FROM:\x00<a@example.com>", 501, "5.1.7"),
        ("ready", b"MAIL FROM:<a@example.com>\x00", 501, "5.5.4"),
        ("ready", b"MAIL FROM:<a@example.com> SIZE=1\x00", 501, "5.5.4"),
        ("mail", b"RCPT TO:<b\x00@example.com>", 501, "5.1.3"),
        ("mail", b"RCPT TO:<b@[\x00]>", 501, "5.1.3"),
        ("mail", b"RCPT TO:<b@example.com> \x00", 501, "5.5.4"),
        ("mail", b"RCPT\x00TO:<b@example.com>", 500, "5.5.2"),
        ("rcpt", b"DATA\x00", 500, "5.5.2"),
        ("rcpt", b"DATA \x00", 501, "5.5.4"),
        ("ready", b"\x00QUIT", 500, "5.5.2"),
        ("ready", b"RSET \x00", 501, "5.5.4"),
        ("ready", b"NOOP \x00", 250, "2.0.0"),
        ("ready", b"\x00" * 500, 500, "5.5.2"),
    ],
    ids=repr,
)
def test_nul_bytes_in_commands_and_addresses(
    serve, client, tracebacks, stage, line, code, enhanced
):
    scene = Scene(serve, client, tracebacks)
    raw = scene.hostile()
    if stage in ("mail", "rcpt"):
        assert raw.cmd("MAIL FROM:<nul@example.com>").code == 250
    if stage == "rcpt":
        assert raw.cmd("RCPT TO:<bob@example.com>").code == 250
    reply = raw.cmd(line)
    assert (reply.code, reply.enhanced) == (code, enhanced)
    assert raw.cmd("RSET").code == 250  # in sync, and back to no transaction
    scene.deliver(raw, "again@example.com")
    scene.finish()


@pytest.mark.parametrize("how", ["DATA", "BDAT"])
def test_nul_bytes_in_a_message_are_kept(serve, client, tracebacks, how):
    scene = Scene(serve, client, tracebacks)
    raw = scene.hostile()
    body = b"Subject: \x00\r\n\r\n\x00\x00\r\n.\x00\r\n\x00.\r\n"
    raw.cmd("MAIL FROM:<nul@example.com>")
    raw.cmd("RCPT TO:<bob@example.com>")
    if how == "DATA":
        reply = raw.send_message(body.replace(b"\r\n.", b"\r\n.."))
    else:
        raw.send(b"BDAT %d LAST\r\n" % len(body) + body)
        reply = raw.reply()
    assert (reply.code, reply.enhanced) == (250, "2.0.0")
    scene.accepted.append("nul@example.com")
    envelopes = scene.finish()
    assert envelopes[1].content.endswith(b"\r\n" + body)


# --- over-long lines and parameters --------------------------------------------
@pytest.mark.parametrize(
    ("line", "code", "enhanced"),
    [
        (b"MAIL FROM:<" + b"a" * 600 + b"@example.com>", 500, "5.5.6"),
        (b"MAIL FROM:<a@" + b"b" * 300 + b".example>", 501, "5.1.7"),  # domain > 255
        (b"MAIL FROM:<a@example.com> SIZE=" + b"9" * 450, 552, "5.3.4"),
        (b"MAIL FROM:<a@example.com> " + b"X" * 450 + b"=1", 555, "5.5.4"),
        (b"MAIL FROM:<a@example.com> ENVID=" + b"e" * 101, 501, "5.5.4"),  # RFC 3461 §4.4
        (b"MAIL FROM:<a@example.com> " + b" ".join(b"P%d=1" % i for i in range(80)), 555, "5.5.4"),
        (b"MAIL FROM:<a@example.com> " + b"SIZE=1 " * 60, 501, "5.5.4"),  # repeated
        (b"EHLO " + b"h" * 600, 500, "5.5.6"),
        (b"VRFY " + b"v" * 100_000, 500, "5.5.6"),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_over_long_lines_and_parameters(serve, client, tracebacks, line, code, enhanced):
    scene = Scene(serve, client, tracebacks, dsn=True)
    raw = scene.hostile()
    reply = raw.cmd(line)
    assert (reply.code, reply.enhanced) == (code, enhanced)
    scene.deliver(raw, "again@example.com")
    scene.finish()


def test_over_long_lines_pipelined_each_get_one_500(serve, client, tracebacks):
    scene = Scene(serve, client, tracebacks)
    raw = scene.hostile()
    long_lines = [verb + b" " + b"x" * (600 + 97 * i) for i, verb in enumerate([b"MAIL"] * 5)]
    raw.send(b"\r\n".join(long_lines) + b"\r\nNOOP\r\n")
    replies = raw.replies(6)
    assert [(r.code, r.enhanced) for r in replies] == [(500, "5.5.6")] * 5 + [(250, "2.0.0")]
    scene.deliver(raw, "again@example.com")
    scene.finish()


def test_a_one_megabyte_message_line_is_refused_and_discarded(serve, client, tracebacks):
    scene = Scene(serve, client, tracebacks)
    raw = scene.hostile()
    raw.cmd("MAIL FROM:<big@example.com>")
    raw.cmd("RCPT TO:<bob@example.com>")
    reply = raw.send_message(b"x" * 1_000_000 + b"\r\n")
    assert (reply.code, reply.enhanced) == (554, "5.6.0")
    scene.deliver(raw, "again@example.com")
    scene.finish()


# --- recipients and commands by the thousand --------------------------------
def test_ten_thousand_rcpts_in_one_write_stay_in_sync(serve, client, tracebacks):
    scene = Scene(serve, client, tracebacks)
    raw = scene.hostile()
    raw.cmd("MAIL FROM:<many@example.com>")
    rcpts = b"".join(b"RCPT TO:<u%05d@example.com>\r\n" % i for i in range(10_000))
    raw.send(rcpts + b"DATA\r\nSubject: many\r\n\r\nmany\r\n.\r\nNOOP\r\n")
    replies = raw.replies(10_003)
    assert [r.code for r in replies[:100]] == [250] * 100
    # RFC 5321 §4.5.3.1.8: 452 past the limit, and not an error that closes.
    assert {(r.code, r.enhanced) for r in replies[100:10_000]} == {(452, "4.5.3")}
    assert [r.code for r in replies[10_000:]] == [354, 250, 250]
    scene.accepted.append("many@example.com")
    envelopes = scene.finish()
    assert envelopes[1].rcpt_tos == [f"u{i:05d}@example.com" for i in range(100)]


def test_five_thousand_noops_then_a_message(serve, client, tracebacks):
    scene = Scene(serve, client, tracebacks, max_junk_commands=0)
    raw = scene.hostile()
    raw.send(b"NOOP\r\n" * 5_000)
    assert {(r.code, r.text) for r in raw.replies(5_000)} == {(250, "OK")}
    scene.deliver(raw, "after@example.com")
    scene.finish()


def test_a_noop_flood_is_let_go_after_the_junk_limit(serve, client, tracebacks):
    # Postfix's smtpd_junk_command_limit: past max_junk_commands, each NOOP-like
    # command is an error too, and max_errors of them end the session.
    scene = Scene(serve, client, tracebacks, max_junk_commands=20, max_errors=5)
    raw = scene.hostile()
    raw.send(b"NOOP\r\nRSET\r\nHELP\r\nVRFY x\r\n" * 10)
    replies = raw.replies(26)
    # 20 within the limit, then 5 more answered as usual but counted as errors
    assert [r.code for r in replies[:-1]] == [250, 250, 214, 252] * 6 + [250]
    assert (replies[-1].code, replies[-1].enhanced) == (421, "4.7.0")
    raw.expect_closed()
    scene.finish()


def test_an_accepted_message_resets_the_junk_count(serve, client, tracebacks):
    scene = Scene(serve, client, tracebacks, max_junk_commands=3, max_errors=2)
    raw = scene.hostile()
    for round_ in range(3):  # three NOOPs, then a message, three times: never an error
        raw.send(b"NOOP\r\n" * 3)
        assert [r.code for r in raw.replies(3)] == [250] * 3
        scene.deliver(raw, f"round{round_}@example.com")
    raw.send(b"NOOP\r\n" * 5)
    assert [r.code for r in raw.replies(6)] == [250] * 5 + [421]
    scene.finish()


def test_random_binary_garbage_from_many_clients_at_once(serve, client, tracebacks):
    scene = Scene(serve, client, tracebacks, max_errors=1000)
    raw = scene.hostile()
    rng = random.Random(20_000)
    clients = [scene.connect() for _ in range(20)]
    for garbage in clients:
        garbage.send(rng.randbytes(2048) + b"\r\nQUIT\r\n")
    for garbage in clients:
        lines = garbage.read_until_eof().split(b"\r\n")
        assert lines.pop() == b""
        replies = [reply_line(line) for line in lines]  # each one a reply line
        assert replies[-1][:2] == (221, True)
        # Every other reply refuses a line of garbage.
        assert {code for code, _, _ in replies[:-1]} <= {500, 501, 502, 503, 252}
    scene.deliver(raw, "after@example.com")  # the first client was never disturbed
    scene.finish()


# --- clients that do not read their replies --------------------------------------
FLOOD_LIMIT = 32 * 1024 * 1024  # far more than the socket buffers on both sides


def _flood_until_blocked(raw) -> int:
    """Pipeline HELPs (~18 reply octets per command octet) until the server stops reading."""
    raw.sock.setblocking(False)
    block = b"HELP\r\n" * 10_000
    sent = 0
    while sent < FLOOD_LIMIT:
        _, writable, _ = select.select([], [raw.sock], [], 0.5)
        if not writable:
            return sent
        with contextlib.suppress(BlockingIOError):
            sent += raw.sock.send(block)
    raise AssertionError(f"the server read {sent} octets of commands whose replies nobody read")


def test_a_client_that_reads_no_replies_is_read_no_more(serve, client, tracebacks):
    scene = Scene(serve, client, tracebacks, max_junk_commands=0)
    raw = scene.hostile()
    _flood_until_blocked(raw)
    scene.still_serving()  # others are served meanwhile
    # Reading the replies lets the server read on: the socket takes more again.
    help_reply = b"214-2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT HELP VRFY EXPN\r\n"
    received = bytearray()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        readable, writable, _ = select.select([raw.sock], [raw.sock], [], 1.0)
        if writable:
            break
        if readable:
            received += raw.sock.recv(1 << 20)
    else:
        raise AssertionError("the server never read on")
    assert received.startswith(help_reply)
    _reset(raw)
    scene.finish()


def test_a_client_that_reads_no_replies_is_dropped_at_the_timeout(serve, client, tracebacks):
    scene = Scene(serve, client, tracebacks, command_timeout=0.5)
    raw = scene.hostile()
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        _flood_until_blocked(raw)
        # The server gives up at the command timeout; with its replies unread
        # there is no 421 to wait for, so it resets the connection.
        for _ in range(100):
            select.select([], [raw.sock], [], 0.1)
            with contextlib.suppress(BlockingIOError):
                raw.sock.send(b"NOOP\r\n")
    scene.finish()


# --- half-closed sockets and clients that vanish --------------------------------
def test_half_close_mid_command_closes_without_acting_on_it(serve, client, tracebacks):
    scene = Scene(serve, client, tracebacks)
    raw = scene.hostile()
    raw.send(b"NOOP\r\nMAIL FROM:<half@exa")
    raw.sock.shutdown(socket.SHUT_WR)
    assert raw.reply().code == 250  # the complete command is answered...
    raw.expect_closed()  # ...the half line is not
    scene.finish()


@pytest.mark.parametrize("how", ["half-close", "close", "reset"])
def test_client_vanishing_mid_bdat_delivers_only_what_was_accepted(serve, client, tracebacks, how):
    scene = Scene(serve, client, tracebacks)
    raw = scene.hostile()
    raw.cmd("MAIL FROM:<cut@example.com>")
    raw.cmd("RCPT TO:<bob@example.com>")
    raw.send(b"BDAT 5\r\nfirst")
    assert raw.reply().code == 250
    raw.send(b"BDAT 1000 LAST\r\nonly part of the last chunk")
    scene.still_serving()  # while the hostile client hangs mid-chunk
    if how == "half-close":
        raw.sock.shutdown(socket.SHUT_WR)
        raw.expect_closed()
    elif how == "close":
        raw.close()
    else:
        _reset(raw)
    scene.finish()


def test_client_resetting_mid_data_after_a_pipelined_message(serve, client, tracebacks):
    scene = Scene(serve, client, tracebacks)
    raw = scene.hostile()
    raw.send(AFTER + b"MAIL FROM:<cut@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n")
    assert [r.code for r in raw.replies(7)] == [250, 250, 354, 250, 250, 250, 354]
    raw.send(b"Subject: cut\r\n\r\nnever finished\r\n.")
    _reset(raw)
    scene.accepted.append("after@example.com")
    scene.finish()


# --- STARTTLS ---------------------------------------------------------------------
def _quit_tls(raw) -> None:
    """QUIT and close, so that stopping the server need not wait for a TLS goodbye."""
    assert raw.cmd("QUIT").code == 221
    raw.close()


def test_starttls_between_bdat_chunks_abandons_the_plaintext_part(
    serve, client, tracebacks, server_context, client_context
):
    scene = Scene(serve, client, tracebacks, tls_context=server_context)
    raw = scene.hostile()
    raw.cmd("MAIL FROM:<plain@example.com>")
    raw.cmd("RCPT TO:<bob@example.com>")
    raw.send(b"BDAT 9\r\nplaintext")
    assert raw.reply().code == 250
    assert raw.cmd("STARTTLS").code == 220
    raw.sock = client_context.wrap_socket(raw.sock, server_hostname="localhost")
    raw.ehlo()
    raw.cmd("MAIL FROM:<secure@example.com>")
    raw.cmd("RCPT TO:<bob@example.com>")
    raw.send(b"BDAT 6 LAST\r\nsecret")
    assert raw.reply().code == 250
    scene.accepted.append("secure@example.com")
    _quit_tls(raw)
    envelopes = scene.finish()
    assert envelopes[1].content.endswith(b"\r\nsecret")
    assert b"plaintext" not in envelopes[1].content
    # The handler heard that the plaintext transaction was dropped (RFC 3207 §4.2).
    assert scene.handler.abandoned == ["plain@example.com"]


def test_a_message_pipelined_after_starttls_is_never_delivered(
    serve, client, tracebacks, server_context, client_context
):
    scene = Scene(serve, client, tracebacks, tls_context=server_context)
    raw = scene.hostile()
    raw.cmd("MAIL FROM:<plain@example.com>")
    raw.cmd("RCPT TO:<bob@example.com>")
    raw.send(b"STARTTLS\r\nDATA\r\ninjected\r\n.\r\nQUIT\r\n")
    assert raw.reply().code == 220
    raw.sock = client_context.wrap_socket(raw.sock, server_hostname="localhost")
    reply = raw.cmd("DATA")  # the transaction and the injected DATA are gone
    assert (reply.code, reply.enhanced) == (503, "5.5.1")
    raw.ehlo()
    scene.deliver(raw, "secure@example.com")
    _quit_tls(raw)
    scene.finish()


@pytest.mark.parametrize(
    "after",
    [
        b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00" + b"\xff" * 64,  # a record, broken inside
        b"\x16\x03\x01\xff\xff",  # a record header announcing 64 kB, then silence+EOF
        b"",  # no handshake at all, then EOF
        b"EHLO client.example\r\nMAIL FROM:<a@example.com>\r\n",  # plaintext, no TLS
    ],
    ids=["broken-record", "huge-record", "nothing", "plaintext"],
)
def test_garbage_after_starttls_closes_cleanly(serve, client, tracebacks, server_context, after):
    scene = Scene(serve, client, tracebacks, tls_context=server_context)
    raw = scene.hostile()
    assert raw.cmd("STARTTLS").code == 220
    raw.send(after)
    raw.sock.shutdown(socket.SHUT_WR)
    raw.expect_closed()
    scene.finish()
