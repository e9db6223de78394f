"""Fixtures for the delivery tests: a real DNS server, destination MXs, a controllable clock.

``dnsmasq(mx=..., hosts=..., null_mx=...)`` starts a dnsmasq (see
``dnsmasq.py``) and returns it running; every one started is stopped when
the test ends. ``mx_servers("127.0.0.2", "127.0.0.3")`` starts fastsmtp
test servers (``SMTPTestServer``: messages, ``fail_next_rcpt``...) on
those addresses, all on one port, as the destination MXs of a domain are
(that port is the ``delivery_port``). ``clock`` is a settable ``now()``
for the scheduler, so retry and expiry tests move time instead of waiting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from dnsmasq import DNSMasq
from peers import Clock, MXServer, MXServers, free_port


@pytest.fixture
def dnsmasq() -> Iterator[Callable[..., DNSMasq]]:
    """``dnsmasq(**records)``: a running dnsmasq; all stopped at teardown."""
    started: list[DNSMasq] = []

    def start(**records: Any) -> DNSMasq:
        server = DNSMasq(**records)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def clock() -> Clock:
    """A ``Clock`` starting at a fixed instant."""
    return Clock()


@pytest.fixture
def mx_servers() -> Iterator[Callable[..., MXServers]]:
    """``mx_servers(*hosts, **settings)``: test servers on one common port; stopped after."""
    stack = ExitStack()

    def start(*hosts: str, **settings: Any) -> MXServers:
        servers = MXServers()
        servers.port = free_port(hosts)
        for host in hosts:
            servers[host] = stack.enter_context(MXServer(host, servers.port, **settings))
        return servers

    with stack:
        yield start
