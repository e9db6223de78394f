"""Bad input never gives a traceback: an RFC reply, or a clean close.

Each test stops its server (``serve.stop()``) before reading the logs, so
every record the connection could produce has been emitted.
"""

from __future__ import annotations

import socket
import struct

import pytest

from fastsmtp import Collect, Reply

NOT_CRLF = bytes(range(256)).replace(b"\r", b"").replace(b"\n", b"")


@pytest.mark.parametrize(
    ("line", "code", "enhanced"),
    [
        (b"\x00", 500, "5.5.2"),
        (b"NO\x00OP", 500, "5.5.2"),
        (b"\x00\x00\x00\x00 EHLO", 500, "5.5.2"),
        (b"", 500, "5.5.2"),
        (b"   ", 500, "5.5.2"),
        (b"\xff\xfe\xfd", 500, "5.5.2"),
        (b"N\xc3\x96OP", 500, "5.5.2"),
        (b"EHLO \xff\xfe.example", 250, None),
        (b"HELO \x00", 250, None),
        (b"VRFY \xff\x00", 252, "2.5.2"),
        (b"MAIL FROM:<a\x00b@example.com>", 503, "5.5.1"),
    ],
    ids=repr,
)
def test_odd_bytes_in_commands_get_a_reply(serve, client, tracebacks, line, code, enhanced):
    raw = client(serve(Collect()))
    reply = raw.cmd(line)
    assert (reply.code, reply.enhanced) == (code, enhanced)
    assert raw.cmd("NOOP").code == 250
    serve.stop()
    assert tracebacks() == []


@pytest.mark.parametrize(
    ("line", "code", "enhanced"),
    [
        (b"MAIL FROM:<a\x00b@example.com>", 501, "5.1.7"),
        (b"MAIL FROM:<\xff@example.com>", 553, "5.6.7"),
        (b"MAIL FROM:<\xff@example.com> SMTPUTF8", 501, "5.1.7"),
        (b"MAIL FROM:<a@example.com> SIZE=\xff", 501, "5.5.4"),
        (b"MAIL FROM:<a@example.com> \x00=1", 501, "5.5.4"),
        (b"MAIL FROM:<a@example.com> SIZE=99999999999999999999999999999999", 552, "5.3.4"),
        (b"MAIL FROM:<@>", 501, "5.1.7"),
        (b"MAIL FROM:<<<>>>", 501, "5.5.4"),
        (b'MAIL FROM:<"unterminated@example.com>', 501, "5.1.7"),
        (b"MAIL FROM:<a@[999.1.1.1]>", 501, "5.1.7"),
        (b"MAIL FROM:<a@[IPv6:zz]>", 501, "5.1.7"),
    ],
    ids=repr,
)
def test_malformed_mail_after_ehlo_gets_a_reply(serve, client, tracebacks, line, code, enhanced):
    raw = client(serve(Collect()))
    raw.ehlo()
    reply = raw.cmd(line)
    assert (reply.code, reply.enhanced) == (code, enhanced)
    assert raw.cmd("MAIL FROM:<ok@example.com>").code == 250
    serve.stop()
    assert tracebacks() == []


def test_very_long_garbage_is_one_500_and_the_session_goes_on(serve, client, tracebacks):
    raw = client(serve(Collect()))
    garbage = NOT_CRLF * 400  # ~100 kB without a line ending
    raw.send(garbage)
    raw.send(garbage + b"\r\n")
    reply = raw.reply()
    assert (reply.code, reply.enhanced) == (500, "5.5.6")
    assert raw.cmd("NOOP").code == 250
    serve.stop()
    assert tracebacks() == []


def test_random_binary_garbage_then_a_normal_session(serve, client, tracebacks):
    handler = Collect()
    raw = client(serve(handler, max_errors=1000))
    blob = bytes((i * 37 + 11) % 256 for i in range(20_000))
    lines = blob.count(b"\n")
    raw.send(blob + b"\r\n")
    # Every line of garbage gets exactly one reply, all errors.
    replies = raw.replies(lines + 1)
    assert {r.code for r in replies} <= {500, 501, 502, 503, 252}
    raw.begin()
    assert raw.send_message(b"after garbage\r\n").code == 250
    assert len(handler.wait_for(1)) == 1
    serve.stop()
    assert tracebacks() == []


def test_half_closed_client_still_gets_its_replies(serve, client, tracebacks):
    raw = client(serve(Collect()))
    raw.send(b"EHLO client.example\r\nNOOP\r\n")
    raw.sock.shutdown(socket.SHUT_WR)
    ehlo, noop = raw.replies(2)
    assert (ehlo.code, noop.code) == (250, 250)
    raw.expect_closed()
    serve.stop()
    assert tracebacks() == []


class SlowHello(Collect):
    async def on_helo(self, session, host_name):
        return Reply(250, None, "hello")


def test_half_close_while_a_hook_runs_still_gets_the_reply(serve, client, tracebacks):
    raw = client(serve(SlowHello()))
    raw.send(b"HELO client.example\r\nVRFY bob\r\n")
    raw.sock.shutdown(socket.SHUT_WR)
    helo, vrfy = raw.replies(2)
    assert (helo.code, helo.text) == (250, "hello")
    assert vrfy.code == 252
    raw.expect_closed()
    serve.stop()
    assert tracebacks() == []


def _abort(raw):
    """Close with a TCP reset instead of a FIN."""
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()


@pytest.mark.parametrize("how", ["close", "reset", "half-close"])
def test_client_vanishing_mid_data_delivers_nothing(serve, client, tracebacks, how):
    handler = Collect()
    addr = serve(handler)
    gone = client(addr)
    gone.begin("<gone@example.com>")
    assert gone.cmd("DATA").code == 354
    gone.send(b"Subject: cut off\r\n\r\nthis message never ends\r\n.")
    if how == "close":
        gone.close()
    elif how == "reset":
        _abort(gone)
    else:
        gone.sock.shutdown(socket.SHUT_WR)
        gone.expect_closed()
    # The server keeps serving others.
    other = client(addr)
    other.begin("<stays@example.com>")
    assert other.send_message(b"complete\r\n").code == 250
    assert other.cmd("QUIT").code == 221
    serve.stop()
    assert [e.mail_from for e in handler.envelopes] == ["stays@example.com"]
    assert tracebacks() == []


def test_client_vanishing_right_after_a_command(serve, client, tracebacks):
    handler = Collect()
    addr = serve(handler)
    for _ in range(5):
        raw = client(addr)
        raw.send(b"EHLO client.example\r\nMAIL FROM:<a@example.com>\r\n")
        _abort(raw)
    survivor = client(addr)
    survivor.begin()
    assert survivor.send_message(b"ok\r\n").code == 250
    serve.stop()
    assert len(handler.envelopes) == 1
    assert tracebacks() == []


def test_client_connecting_and_leaving_at_once(serve, client, tracebacks):
    addr = serve(Collect())
    for _ in range(5):
        client(addr, greeting=False).close()
    assert client(addr).cmd("NOOP").code == 250
    serve.stop()
    assert tracebacks() == []
