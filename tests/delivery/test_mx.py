"""MX lookup against a real DNS server (dnsmasq on a loopback port)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest
from dnsmasq import DNSMasq, free_udp_port

from fastsmtp.config import ConfigError
from fastsmtp.delivery.mx import (
    MXHost,
    MXResolver,
    NoMailHost,
    NoSuchDomain,
    NullMX,
    TemporaryDNSFailure,
    address_literal,
    parse_dns_server,
)

pytestmark = pytest.mark.interop

StartDNS = Callable[..., DNSMasq]


def lookup(resolver: MXResolver, domain: str) -> list[MXHost]:
    return asyncio.run(asyncio.wait_for(resolver.lookup(domain), 10))


def test_mx_records_in_preference_order_with_their_addresses(dnsmasq: StartDNS) -> None:
    dns = dnsmasq(
        mx={"a.test": [("mx2.a.test", 20), ("mx1.a.test", 10)]},
        hosts={"mx1.a.test": ["127.0.0.2"], "mx2.a.test": ["127.0.0.3", "::1"]},
    )
    hosts = lookup(MXResolver([dns.address]), "a.test")
    assert hosts == [
        MXHost("mx1.a.test", "127.0.0.2", 10),
        MXHost("mx2.a.test", "127.0.0.3", 20),
        MXHost("mx2.a.test", "::1", 20),
    ]


def test_equal_preferences_are_shuffled_and_never_before_a_better_one(dnsmasq: StartDNS) -> None:
    names = [f"mx{i}.b.test" for i in range(4)]
    dns = dnsmasq(
        mx={"b.test": [("best.b.test", 5), *((n, 10) for n in names)]},
        hosts={n: [f"127.0.1.{i + 1}"] for i, n in enumerate([*names, "best.b.test"])},
    )
    orders = set()
    for seed in range(12):
        hosts = lookup(MXResolver([dns.address], rng=random.Random(seed)), "b.test")
        assert hosts[0].name == "best.b.test"
        assert sorted(h.name for h in hosts[1:]) == names
        orders.add(tuple(h.name for h in hosts[1:]))
    assert len(orders) > 1, "equal-preference MX hosts were never reordered"


def test_no_mx_means_the_domain_itself_is_the_implicit_mx(dnsmasq: StartDNS) -> None:
    dns = dnsmasq(hosts={"implicit.test": ["127.0.0.4"]})
    assert lookup(MXResolver([dns.address]), "Implicit.Test.") == [
        MXHost("implicit.test", "127.0.0.4", 0)
    ]


def test_null_mx_fails_at_once_with_556(dnsmasq: StartDNS) -> None:
    dns = dnsmasq(null_mx=["null.test"], hosts={"null.test": ["127.0.0.5"]})
    with pytest.raises(NullMX) as info:
        lookup(MXResolver([dns.address]), "null.test")
    assert (info.value.reply.code, info.value.reply.enhanced) == (556, "5.1.10")
    assert not info.value.temporary


def test_nxdomain_is_permanent(dnsmasq: StartDNS) -> None:
    dns = dnsmasq()
    with pytest.raises(NoSuchDomain) as info:
        lookup(MXResolver([dns.address]), "nowhere.test")
    assert (info.value.reply.code, info.value.reply.enhanced) == (550, "5.1.2")


def test_mx_targets_without_addresses_are_a_permanent_failure(dnsmasq: StartDNS) -> None:
    dns = dnsmasq(mx={"c.test": [("ghost.c.test", 10)]})
    with pytest.raises(NoMailHost) as info:
        lookup(MXResolver([dns.address]), "c.test")
    assert info.value.reply.enhanced == "5.4.4"


def test_an_unresolvable_mx_is_skipped_for_the_next(dnsmasq: StartDNS) -> None:
    dns = dnsmasq(
        mx={"d.test": [("ghost.d.test", 10), ("mx.d.test", 20)]},
        hosts={"mx.d.test": ["127.0.0.3"]},
    )
    assert lookup(MXResolver([dns.address]), "d.test") == [MXHost("mx.d.test", "127.0.0.3", 20)]


def test_refused_answer_is_temporary(dnsmasq: StartDNS) -> None:
    dns = dnsmasq()  # answers only .test names, REFUSED for the rest
    with pytest.raises(TemporaryDNSFailure) as info:
        lookup(MXResolver([dns.address]), "example.org")
    assert (info.value.reply.code, info.value.reply.enhanced) == (451, "4.4.3")
    assert info.value.temporary


def test_a_silent_nameserver_is_a_temporary_failure_within_the_timeout() -> None:
    resolver = MXResolver([f"127.0.0.1:{free_udp_port()}"], timeout=0.5)
    with pytest.raises(TemporaryDNSFailure):
        lookup(resolver, "example.test")


def test_address_literals_need_no_dns() -> None:
    resolver = MXResolver(["127.0.0.1:9"])
    assert lookup(resolver, "[127.0.0.2]") == [MXHost("[127.0.0.2]", "127.0.0.2", 0)]
    assert lookup(resolver, "[IPv6:::1]") == [MXHost("[IPv6:::1]", "::1", 0)]
    assert address_literal("[not an ip]") is None
    assert address_literal("example.test") is None


def test_dns_server_specs() -> None:
    assert parse_dns_server("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_dns_server("[::1]:53") == ("::1", 53)
    assert parse_dns_server("192.0.2.53") == ("192.0.2.53", 53)
    with pytest.raises(ConfigError, match="dns_servers"):
        parse_dns_server("dns.example:53")
    with pytest.raises(ConfigError, match="dns_servers"):
        MXResolver(["nonsense"])
