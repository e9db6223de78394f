"""Fixtures for the delivery tests: a real DNS server (dnsmasq) and a controllable clock.

``dnsmasq(mx=..., hosts=..., null_mx=...)`` starts a dnsmasq (see
``dnsmasq.py``) and returns it running; every one started is stopped when
the test ends. ``clock`` is a settable ``now()`` for the scheduler, so retry
and expiry tests move time instead of waiting for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from dnsmasq import DNSMasq


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


class Clock:
    """A ``now()`` that moves only when the test says so (epoch seconds)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.value = start

    def __call__(self) -> float:
        return self.value

    def advance(self, seconds: float) -> None:
        self.value += seconds


@pytest.fixture
def clock() -> Clock:
    """A ``Clock`` starting at a fixed instant."""
    return Clock()
