"""ConnectionLimits without sockets: counting, the per-minute token bucket, bounded tables.

A fake clock drives the rate limit, so minutes pass instantly.
"""

from __future__ import annotations

from fastsmtp.config import Settings
from fastsmtp.limits import ConnectionLimits
from fastsmtp.relay import RelayPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limits(clock: Clock | None = None, relay_networks=(), **settings) -> ConnectionLimits:
    settings = Settings(hostname="mx.test", **settings)
    return ConnectionLimits(settings, RelayPolicy((), relay_networks), clock or Clock())


def peer(n: int) -> tuple[str, int]:
    return (f"198.51.{n // 256}.{n % 256}", 40000)


def test_counts_and_releases():
    table = limits(max_connections=3, max_connections_per_ip=2)
    assert table.admit(peer(1)) == (None, "198.51.0.1")
    assert table.admit(peer(1)) == (None, "198.51.0.1")
    refusal, key = table.admit(peer(1))
    assert (refusal.code, refusal.enhanced, key) == (421, "4.7.0", None)
    assert table.admit(peer(2))[0] is None
    assert table.admit(peer(3))[0].text == "mx.test Error: too many connections, try again later"
    assert table.active == 3
    table.release("198.51.0.1")
    assert table.admit(peer(1))[0] is None
    for key in ("198.51.0.1", "198.51.0.1", "198.51.0.2"):
        table.release(key)
    assert table.active == 0
    assert table.tracked_addresses() == 0


def test_one_client_is_one_address_whatever_its_form():
    table = limits(max_connections_per_ip=1)
    assert table.admit(("192.0.2.5", 1))[0] is None
    assert table.admit(("::ffff:192.0.2.5", 2))[0] is not None  # dual-stack listener
    assert table.admit(("fe80::1%eth0", 3)) == (None, "fe80::1")


def test_unix_socket_peers_count_only_globally():
    table = limits(max_connections=2, max_connections_per_ip=1)
    assert table.admit("/run/fastsmtp.sock") == (None, None)
    assert table.admit(None) == (None, None)
    assert table.admit(None)[0] is not None


def test_rate_is_a_token_bucket_per_minute():
    clock = Clock()
    table = limits(clock, max_connection_rate_per_ip=6)
    for _ in range(6):  # a burst of the whole minute's allowance
        key = table.admit(peer(1))[1]
        table.release(key)
    refusal, _ = table.admit(peer(1))
    assert "slow down" in refusal.text
    assert table.admit(peer(2))[0] is None  # another address is not affected
    clock.now += 9.9  # one token per 10 s
    assert table.admit(peer(1))[0] is not None
    clock.now += 0.2
    assert table.admit(peer(1))[0] is None
    assert table.admit(peer(1))[0] is not None


def test_refused_attempts_cost_nothing():
    clock = Clock()
    table = limits(clock, max_connection_rate_per_ip=1)
    assert table.admit(peer(1))[0] is None
    for _ in range(100):
        clock.now += 0.5
        assert table.admit(peer(1))[0] is not None
    clock.now += 10.1  # 60 s since the admitted one: its token is back
    assert table.admit(peer(1))[0] is None


def test_tables_forget_quiet_addresses():
    clock = Clock()
    table = limits(clock, max_connection_rate_per_ip=10)
    for n in range(5000):  # 5000 addresses, once each, all gone at once
        table.release(table.admit(peer(n))[1])
    assert table.tracked_addresses() == 5000
    clock.now += 61
    table.release(table.admit(peer(9999))[1])
    assert table.tracked_addresses() == 1


def test_relay_networks_are_exempt_per_address_but_count_globally():
    table = limits(relay_networks=["192.0.2.0/24"], max_connections=3, max_connections_per_ip=1)
    assert [table.admit(("192.0.2.9", n)) for n in range(3)] == [(None, None)] * 3
    assert table.admit(("192.0.2.9", 4))[0] is not None
    assert table.tracked_addresses() == 0


def test_zero_turns_every_limit_off():
    table = limits(max_connections=0, max_connections_per_ip=0, max_connection_rate_per_ip=0)
    assert all(table.admit(peer(1)) == (None, None) for _ in range(2000))
    assert table.tracked_addresses() == 0


def test_the_client_memo_answers_as_the_parse_does_and_stays_bounded(monkeypatch):
    monkeypatch.setattr("fastsmtp.relay.CLIENT_MEMO", 8)
    relay = RelayPolicy((), ["192.0.2.0/24"])
    table = ConnectionLimits(Settings(hostname="mx.test", max_connections_per_ip=1), relay, Clock())
    for _ in range(2):  # parsed, then remembered: the same answers
        assert relay.client(("::ffff:198.51.100.7", 1)) == ("198.51.100.7", False)
        assert relay.client(("192.0.2.9", 1)) == ("192.0.2.9", True)
        assert relay.client(("fe80::1%eth0", 1)) == ("fe80::1", False)
        assert relay.client(("not an address", 1)) == (None, False)
        assert relay.client("/run/fastsmtp.sock") == (None, False)
    # Both forms of one client are still one address once remembered.
    assert table.admit(("198.51.100.7", 2)) == (None, "198.51.100.7")
    assert table.admit(("::ffff:198.51.100.7", 3))[0] is not None
    for n in range(100):
        relay.client(peer(n))
        assert len(relay._clients) <= 8
    assert relay.client(peer(3)) == ("198.51.0.3", False)
