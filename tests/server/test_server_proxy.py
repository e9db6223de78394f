"""The PROXY protocol over real sockets: the real client address everywhere.

A client here plays the balancer: it sends a v1 or v2 header (built from
the specification in tests/proxy_headers.py), then speaks SMTP. The
address in the header must be what ``Session.peer``, the ``Received:``
header, the relay decision and the per-address limits see.
"""

from __future__ import annotations

import asyncio
import smtplib
import threading
import time

import pytest

from fastsmtp import Collect, Server
from fastsmtp.testing import parse_message
from proxy_headers import v1, v2, v2_tcp4, v2_tcp6


class Peers(Collect):
    """Collect, and note ``Session.peer`` at connect and at disconnect."""

    def __init__(self) -> None:
        super().__init__()
        self.connected: list[object] = []
        self.disconnected = threading.Semaphore(0)

    async def on_connect(self, session):
        self.connected.append(session.peer)

    async def on_disconnect(self, session):
        self.disconnected.release()


class ProxiedSMTP(smtplib.SMTP):
    """smtplib, behind a pretend balancer: the PROXY header goes first on the socket."""

    def __init__(self, header: bytes, *args, **kwargs) -> None:
        self._header = header
        super().__init__(*args, **kwargs)

    def _get_socket(self, host, port, timeout):
        sock = super()._get_socket(host, port, timeout)
        sock.sendall(self._header)
        return sock


def test_v1_client_address_reaches_session_handler_and_received_header(serve):
    handler = Peers()
    addr = serve(handler, proxy_protocol=True)
    header = v1(("203.0.113.9", 40000))
    with ProxiedSMTP(header, *addr, local_hostname="client.example", timeout=5) as smtp:
        assert smtp.sendmail("a@example.com", ["b@example.com"], b"Subject: hi\r\n\r\nhi\r\n") == {}
    [envelope] = handler.wait_for(1)
    assert handler.connected == [("203.0.113.9", 40000)]
    assert handler.sessions[0].peer == ("203.0.113.9", 40000)
    received = parse_message(envelope.content)["Received"]
    assert received.startswith("from client.example ([203.0.113.9])")
    assert "127.0.0.1" not in received


def test_v2_header_and_smtp_in_one_segment(serve, client):
    handler = Peers()
    addr = serve(handler, proxy_protocol=True)
    raw = client(addr, greeting=False)
    # Bytes after the header in the same read are the client's SMTP input.
    raw.send(v2_tcp6("2001:db8::25", "2001:db8::1", 51000, 25) + b"EHLO client.example\r\n")
    greeting, ehlo = raw.replies(2)
    assert greeting.code == 220 and ehlo.code == 250
    assert handler.connected == [("2001:db8::25", 51000)]
    raw.begin()
    assert raw.send_message(b"Subject: v6\r\n\r\nbody\r\n").code == 250
    [envelope] = handler.wait_for(1)
    assert "[2001:db8::25]" in parse_message(envelope.content)["Received"]


def test_v2_with_tlvs_then_starttls_with_smtplib(serve, server_context, client_context):
    handler = Peers()
    addr = serve(handler, proxy_protocol=True, tls_context=server_context)
    header = v2_tcp4("198.51.100.20", "192.0.2.1", 12345, 25, b"\x01\x00\x04smtp")
    with ProxiedSMTP(header, *addr, timeout=5) as smtp:
        smtp.starttls(context=client_context)
        assert smtp.sendmail("a@example.com", ["b@example.com"], b"Subject: s\r\n\r\ns\r\n") == {}
    [envelope] = handler.wait_for(1)
    assert handler.sessions[0].peer == ("198.51.100.20", 12345)
    assert handler.sessions[0].tls
    received = parse_message(envelope.content)["Received"]
    assert "[198.51.100.20]" in received and "ESMTPS" in received


@pytest.mark.parametrize(
    "header",
    [b"PROXY UNKNOWN\r\n", v2(0x0, 0x00, b""), v2(0x1, 0x00, b"")],
    ids=["v1-unknown", "v2-local", "v2-unspec"],
)
def test_header_without_an_address_keeps_the_socket_address(serve, client, header):
    handler = Peers()
    raw = client(serve(handler, proxy_protocol=True), greeting=False)
    raw.send(header)
    assert raw.reply().code == 220
    [(host, port)] = handler.connected
    assert host == "127.0.0.1"
    assert port == raw.sock.getsockname()[1]


def test_nothing_is_said_before_the_header(serve, client):
    handler = Peers()
    raw = client(serve(handler, proxy_protocol=True), greeting=False)
    raw.send(b"PROXY TCP4 203.0.113.9 ")
    raw.assert_quiet(0.3)
    assert handler.connected == []
    raw.send(b"192.0.2.1 40000 25\r\n")
    assert raw.reply().code == 220
    assert handler.connected == [("203.0.113.9", 40000)]


@pytest.mark.parametrize(
    "data",
    [
        b"EHLO client.example\r\n",  # a client that does not know it is behind a balancer
        b"PROXY TCP4 203.0.113.300 192.0.2.1 40000 25\r\n",
        b"PROXY TCP4 203.0.113.9 192.0.2.1 40000 99999\r\n",
        b"PROXY TCP4 " + b"1" * 200,
        v2(0x1, 0x11, b"\x00" * 4),  # too short for the addresses
        v2(0x1, 0x11, b"\x00" * 12, version=1),
    ],
    ids=["smtp", "bad-ip", "bad-port", "v1-too-long", "v2-short", "v2-version"],
)
def test_malformed_header_closes_without_a_reply(serve, client, tracebacks, caplog, data):
    handler = Peers()
    raw = client(serve(handler, proxy_protocol=True), greeting=False)
    raw.send(data)
    raw.expect_closed()
    serve.stop()
    assert handler.connected == []
    assert any("bad PROXY header" in r.getMessage() for r in caplog.records)
    assert tracebacks() == []


def test_no_header_in_time_closes_without_a_reply(serve, client, caplog):
    handler = Peers()
    raw = client(serve(handler, proxy_protocol=True, proxy_timeout=0.3), greeting=False)
    started = time.monotonic()
    raw.expect_closed()
    assert 0.2 < time.monotonic() - started < 3
    serve.stop()
    assert handler.connected == []
    assert any("no PROXY header" in r.getMessage() for r in caplog.records)


def test_relay_decision_follows_the_proxied_address(serve, client):
    addr = serve(
        Collect(),
        proxy_protocol=True,
        local_domains=["example.com"],
        relay_networks=["203.0.113.0/24"],
    )
    inside = client(addr, greeting=False)
    inside.send(v1(("203.0.113.5", 1000)))
    assert inside.reply().code == 220
    inside.ehlo()
    inside.cmd("MAIL FROM:<a@example.com>")
    assert inside.cmd("RCPT TO:<x@elsewhere.example>").code == 250

    outside = client(addr, greeting=False)
    outside.send(v2_tcp4("198.51.100.7", "192.0.2.1", 1000, 25))
    assert outside.reply().code == 220
    outside.ehlo()
    outside.cmd("MAIL FROM:<a@example.com>")
    reply = outside.cmd("RCPT TO:<x@elsewhere.example>")
    assert (reply.code, reply.enhanced) == (554, "5.7.1")
    assert outside.cmd("RCPT TO:<b@example.com>").code == 250  # local mail is fine


def test_per_address_limit_counts_the_proxied_address(serve, client):
    handler = Peers()
    addr = serve(handler, proxy_protocol=True, max_connections_per_ip=1)
    first = client(addr, greeting=False)
    first.send(v1(("203.0.113.1", 1000)))
    assert first.reply().code == 220
    # Same balancer socket address, another client: admitted.
    other = client(addr, greeting=False)
    other.send(v1(("203.0.113.2", 1000)))
    assert other.reply().code == 220
    again = client(addr, greeting=False)
    again.send(v2_tcp4("203.0.113.1", "192.0.2.1", 2000, 25))
    reply = again.reply()
    assert (reply.code, reply.enhanced) == (421, "4.7.0")
    assert "mx.test" in reply.text
    again.expect_closed()
    assert handler.connected == [("203.0.113.1", 1000), ("203.0.113.2", 1000)]


def test_implicit_tls_listeners_take_no_header(server_context, client_context):
    """proxy_protocol applies to plain listeners: TLS starts at once on port 465."""

    async def main() -> None:
        server = Server(
            Collect(),
            hostname="mx.test",
            proxy_protocol=True,
            listen=["127.0.0.1:0"],
            implicit_tls_listen=["127.0.0.1:0"],
            tls_context=server_context,
        )
        await server.start()
        try:
            host, port = server.implicit_tls_addresses[0]
            reader, writer = await asyncio.open_connection(
                host, port, ssl=client_context, server_hostname="localhost"
            )
            greeting = await asyncio.wait_for(reader.readline(), 5)
            assert greeting.startswith(b"220 mx.test")
            writer.close()
        finally:
            await server.close(grace=1)

    asyncio.run(main())


def test_handler_hears_only_of_connections_that_sent_a_header(serve, client):
    handler = Peers()
    addr = serve(handler, proxy_protocol=True)
    raw = client(addr, greeting=False)
    raw.send(b"garbage\r\n")
    raw.expect_closed()
    ok = client(addr, greeting=False)
    ok.send(v1(("203.0.113.3", 5)))
    assert ok.reply().code == 220
    assert ok.cmd("QUIT").code == 221
    ok.expect_closed()
    serve.stop()  # waits for the on_disconnect tasks
    assert handler.connected == [("203.0.113.3", 5)]
    assert handler.disconnected.acquire(timeout=0)
    assert not handler.disconnected.acquire(timeout=0)


def test_early_talker_behind_the_balancer(serve, client):
    handler = Peers()
    addr = serve(handler, proxy_protocol=True, greet_pause=0.3)
    patient = client(addr, greeting=False)
    patient.send(v1(("203.0.113.40", 1)))
    assert patient.reply().code == 220
    # The balancer relays the client's bytes at once: after the header, before the 220.
    eager = client(addr, greeting=False)
    eager.send(v1(("203.0.113.41", 1)) + b"EHLO spam.example\r\n")
    reply = eager.reply()
    assert (reply.code, reply.enhanced) == (554, "5.5.1")
    eager.expect_closed()
    assert handler.connected == [("203.0.113.40", 1)]
