"""Routing decisions, and MX targets with loop detection against a real dnsmasq."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from dnsmasq import DNSMasq

from fastsmtp.delivery.mx import MXResolver
from fastsmtp.delivery.router import MX, Local, MailLoop, Router, Smarthost, Target
from fastsmtp.relay import RelayPolicy

StartDNS = Callable[..., DNSMasq]


def make_router(dns: str = "127.0.0.1:9", **kwargs: Any) -> Router:
    kwargs.setdefault("hostname", "mx.here.test")
    return Router(RelayPolicy(["here.test"], []), MXResolver([dns]), **kwargs)


def targets(router: Router, route: MX | Smarthost) -> list[Target]:
    return asyncio.run(asyncio.wait_for(router.targets(route), 10))


def test_local_domains_and_postmaster_are_local() -> None:
    router = make_router()
    assert router.decide("bob@here.test") == Local()
    assert router.decide("Bob@HERE.TEST") == Local()
    assert router.decide("postmaster") == Local()
    assert router.decide("bob@there.test") == MX("there.test")
    assert router.decide("bob@[127.0.0.2]") == MX("[127.0.0.2]")


def test_smarthost_takes_every_remote_domain_and_routes_win_per_domain() -> None:
    router = make_router(
        smarthost="relay.test:587", smarthost_routes={"Special.Test": "[::1]:2525"}
    )
    assert router.decide("bob@here.test") == Local()
    assert router.decide("bob@there.test") == Smarthost("relay.test", 587)
    assert router.decide("bob@special.test") == Smarthost("::1", 2525)
    assert targets(router, Smarthost("relay.test", 587)) == [
        Target("relay.test", "relay.test", 587)
    ]


def test_per_domain_route_without_global_smarthost() -> None:
    router = make_router(smarthost_routes={"special.test": "127.0.0.7:25"})
    assert router.decide("a@special.test") == Smarthost("127.0.0.7", 25)
    assert router.decide("a@other.test") == MX("other.test")


@pytest.mark.interop
def test_mx_targets_use_the_delivery_port(dnsmasq: StartDNS) -> None:
    dns = dnsmasq(
        mx={"a.test": [("mx1.a.test", 10), ("mx2.a.test", 20)]},
        hosts={"mx1.a.test": ["127.0.0.2"], "mx2.a.test": ["127.0.0.3"]},
    )
    router = make_router(dns.address, delivery_port=2525)
    assert targets(router, MX("a.test")) == [
        Target("mx1.a.test", "127.0.0.2", 2525),
        Target("mx2.a.test", "127.0.0.3", 2525),
    ]


@pytest.mark.interop
def test_we_and_less_preferred_mxs_are_dropped(dnsmasq: StartDNS) -> None:
    dns = dnsmasq(
        mx={"a.test": [("primary.a.test", 10), ("us.a.test", 20), ("backup.a.test", 30)]},
        hosts={
            "primary.a.test": ["127.0.0.2"],
            "us.a.test": ["127.0.0.1"],
            "backup.a.test": ["127.0.0.3"],
        },
    )
    router = make_router(dns.address, delivery_port=2525)
    router.set_listening([("127.0.0.1", 2525)])
    assert targets(router, MX("a.test")) == [Target("primary.a.test", "127.0.0.2", 2525)]


@pytest.mark.interop
def test_best_mx_on_our_listening_address_is_a_loop(dnsmasq: StartDNS) -> None:
    dns = dnsmasq(mx={"loop.test": [("us.loop.test", 10)]}, hosts={"us.loop.test": ["127.0.0.1"]})
    router = make_router(dns.address, delivery_port=2525)
    router.set_listening([("0.0.0.0", 2525)])  # a wildcard listener: loopback is us
    with pytest.raises(MailLoop) as info:
        targets(router, MX("loop.test"))
    assert (info.value.reply.code, info.value.reply.enhanced) == (554, "5.4.6")


@pytest.mark.interop
def test_best_mx_named_like_us_is_a_loop(dnsmasq: StartDNS) -> None:
    dns = dnsmasq(mx={"loop.test": [("mx.here.test", 10)]}, hosts={"mx.here.test": ["127.0.0.8"]})
    with pytest.raises(MailLoop):
        targets(make_router(dns.address), MX("loop.test"))


@pytest.mark.interop
def test_same_address_on_another_port_is_not_us(dnsmasq: StartDNS) -> None:
    dns = dnsmasq(mx={"a.test": [("mx.a.test", 10)]}, hosts={"mx.a.test": ["127.0.0.1"]})
    router = make_router(dns.address, delivery_port=2525)
    router.set_listening([("127.0.0.1", 8025)])
    assert targets(router, MX("a.test")) == [Target("mx.a.test", "127.0.0.1", 2525)]
