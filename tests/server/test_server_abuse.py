"""Abuse limits over real sockets: connection counts and rate, transactions,
early talkers, and clients that trickle.

Refusals before the greeting are ``421 4.7.0`` with the hostname, then close,
and the handler's ``on_connect`` is never called for them (RFC 5321 §3.1
lets a server answer the connection with 421). Timings are small and every
wait is bounded.
"""

from __future__ import annotations

import logging
import select
import threading
import time

import pytest

from fastsmtp import Collect
from fastsmtp.config import ConfigError, Settings


class Counting(Collect):
    """Collect, and count on_connect; ``gone`` is released at each on_disconnect."""

    def __init__(self) -> None:
        super().__init__()
        self.connects = 0
        self.gone = threading.Semaphore(0)

    async def on_connect(self, session):
        self.connects += 1

    async def on_disconnect(self, session):
        self.gone.release()


def refused(raw) -> None:
    """The connection got 421 4.7.0 naming the host, then was closed."""
    reply = raw.reply()
    assert (reply.code, reply.enhanced) == (421, "4.7.0"), reply
    assert reply.text.startswith("mx.test ")
    raw.expect_closed()


# --- concurrent connections ----------------------------------------------------------
def test_global_connection_limit(serve, client):
    handler = Counting()
    addr = serve(handler, max_connections=2)
    first, second = client(addr), client(addr)
    refused(client(addr, greeting=False))
    assert handler.connects == 2
    # One leaves: there is room again.
    assert first.cmd("QUIT").code == 221
    assert handler.gone.acquire(timeout=5)
    third = client(addr)
    assert third.cmd("NOOP").code == 250
    assert second.cmd("NOOP").code == 250
    assert handler.connects == 3


def test_per_address_connection_limit(serve, client):
    handler = Counting()
    addr = serve(handler, max_connections_per_ip=2)
    client(addr), client(addr)
    refused(client(addr, greeting=False))
    assert handler.connects == 2


def test_relay_networks_are_exempt_from_per_address_limits(serve, client):
    addr = serve(
        Collect(),
        max_connections_per_ip=1,
        max_connection_rate_per_ip=1,
        relay_networks=["127.0.0.0/8"],
    )
    for raw in [client(addr) for _ in range(3)]:
        assert raw.cmd("NOOP").code == 250


def test_connection_rate_per_address(serve, client):
    handler = Counting()
    addr = serve(handler, max_connection_rate_per_ip=3)
    for _ in range(3):
        raw = client(addr)
        assert raw.cmd("QUIT").code == 221
    raw = client(addr, greeting=False)
    reply = raw.reply()
    assert (reply.code, reply.enhanced) == (421, "4.7.0")
    assert "slow down" in reply.text
    raw.expect_closed()
    assert handler.connects == 3


def test_default_limits(serve, client):
    """On by default: 1000 at once, 50 per address; the rate limit is off."""
    handler = Counting()
    addr = serve(handler)
    opened = [client(addr) for _ in range(50)]
    refused(client(addr, greeting=False))
    assert handler.connects == 50
    for raw in opened[:10]:
        assert raw.cmd("QUIT").code == 221
    for _ in range(10):
        assert handler.gone.acquire(timeout=5)
    # 60 connections in quick succession so far: no rate limit by default.
    assert client(addr).cmd("NOOP").code == 250


# --- transactions per connection -------------------------------------------------------
def test_max_transactions_then_421_at_mail(serve, client):
    handler = Collect()
    raw = client(serve(handler, max_transactions=2))
    raw.ehlo()
    for n in range(2):
        assert raw.cmd("MAIL FROM:<a@example.com>").code == 250
        assert raw.cmd("RCPT TO:<b@example.com>").code == 250
        assert raw.send_message(b"n%d\r\n" % n).code == 250
    reply = raw.cmd("MAIL FROM:<a@example.com>")
    assert (reply.code, reply.enhanced) == (421, "4.7.0")
    assert reply.text.startswith("mx.test ")
    raw.expect_closed()
    assert len(handler.wait_for(2)) == 2


def test_abandoned_transactions_count_too(serve, client):
    raw = client(serve(Collect(), max_transactions=3))
    raw.ehlo()
    for _ in range(3):
        assert raw.cmd("MAIL FROM:<a@example.com>").code == 250
        assert raw.cmd("RSET").code == 250
    assert raw.cmd("MAIL FROM:<a@example.com>").code == 421
    raw.expect_closed()


# --- early talkers (greet_pause) --------------------------------------------------------
def test_a_patient_client_is_greeted_after_the_pause(serve, client):
    handler = Counting()
    raw = client(serve(handler, greet_pause=0.3), greeting=False)
    started = time.monotonic()
    assert raw.reply().code == 220
    assert time.monotonic() - started >= 0.25
    assert raw.ehlo().code == 250
    assert handler.connects == 1


def test_an_early_talker_is_refused(serve, client, caplog):
    caplog.set_level(logging.INFO)
    handler = Counting()
    raw = client(serve(handler, greet_pause=2.0), greeting=False)
    started = time.monotonic()
    raw.send(b"EHLO spam.example\r\nMAIL FROM:<spam@example.com>\r\n")
    reply = raw.reply()
    assert (reply.code, reply.enhanced) == (554, "5.5.1")
    raw.expect_closed()
    assert time.monotonic() - started < 1.5  # refused at once, not after the pause
    serve.stop()
    assert handler.connects == 0
    assert any("talked before the greeting" in r.getMessage() for r in caplog.records)


def test_no_greet_pause_by_default(serve, client):
    raw = client(serve(Collect()), greeting=False)
    raw.send(b"EHLO eager.example\r\n")  # before reading the greeting: allowed
    greeting, ehlo = raw.replies(2)
    assert (greeting.code, ehlo.code) == (220, 250)


# --- unknown and bad commands ----------------------------------------------------------
def test_unknown_and_bad_commands_share_the_error_cap(serve, client):
    raw = client(serve(Collect(), max_errors=4))
    raw.send(b"XYZZY\r\nMAIL FROM:<a@example.com>\r\nHELO\r\nFOO BAR\r\n")
    codes = [(r.code, r.enhanced) for r in raw.replies(5)]
    assert codes == [(500, "5.5.2"), (503, "5.5.1"), (501, "5.5.4"), (500, "5.5.2"), (421, "4.7.0")]
    raw.expect_closed()


# --- slow clients ---------------------------------------------------------------------
def trickle(raw, data: bytes, every: float) -> float:
    """Send ``data`` a byte at a time until the server says something; the seconds it took."""
    started = time.monotonic()
    for byte in data:
        raw.send(bytes([byte]))
        readable, _, _ = select.select([raw.sock], [], [], every)
        if readable:
            return time.monotonic() - started
    raise AssertionError(f"the server let {len(data)} trickled octets through")


def test_a_command_trickled_a_byte_at_a_time_times_out(serve, client):
    raw = client(serve(Collect(), command_timeout=0.5))
    raw.ehlo()
    # Never silent for more than 0.05 s, so an idle timeout would never fire.
    took = trickle(raw, b"NOOP " + b"x" * 400, every=0.05)
    reply = raw.reply()
    assert (reply.code, reply.enhanced) == (421, "4.4.2")
    assert 0.3 < took < 2.5
    raw.expect_closed()


def test_a_message_trickled_below_min_data_rate_times_out(serve, client):
    handler = Collect()
    raw = client(serve(handler, data_timeout=0.5, min_data_rate=100))
    raw.begin()
    assert raw.cmd("DATA").code == 354
    # 20 octets/s: the budget is 0.5 s + octets/100, so about 0.63 s.
    took = trickle(raw, b"Subject: slow\r\n\r\n" + b"z" * 200, every=0.05)
    reply = raw.reply()
    assert (reply.code, reply.enhanced) == (421, "4.4.2")
    assert 0.3 < took < 2.5
    raw.expect_closed()
    assert handler.envelopes == []


def test_without_min_data_rate_data_timeout_is_an_idle_timeout(serve, client):
    handler = Collect()
    raw = client(serve(handler, data_timeout=1.0, min_data_rate=0))
    raw.begin()
    assert raw.cmd("DATA").code == 354
    body = b"Subject: slow\r\n\r\n" + b"z" * 20 + b"\r\n"
    started = time.monotonic()
    for byte in body:  # about 1.5 s, never silent for 1 s
        raw.send(bytes([byte]))
        raw.assert_quiet(0.04)
    assert time.monotonic() - started > 1.0
    raw.send(b".\r\n")
    assert raw.reply().code == 250
    [envelope] = handler.wait_for(1)
    assert envelope.content.endswith(b"z" * 20 + b"\r\n")


def test_a_fast_message_is_not_cut_by_the_rate(serve, client):
    handler = Collect()
    raw = client(serve(handler, data_timeout=0.5, min_data_rate=1_000_000))
    raw.begin()
    # 1 MB/s needed beyond the first 0.5 s: 300 kB sent at once is far inside.
    assert raw.send_message(b"Subject: fast\r\n\r\n" + (b"y" * 98 + b"\r\n") * 3000).code == 250
    handler.wait_for(1)


@pytest.mark.parametrize(
    "name", ["max_connections", "max_connections_per_ip", "min_data_rate", "greet_pause"]
)
def test_negative_limits_are_refused(name):
    with pytest.raises(ConfigError, match=name):
        Settings(**{name: -1})
