"""Connection limits: how many clients at once, per address, and how often.

``ConnectionLimits.admit(peer)`` is asked once per connection, when the
client's address is known (after the PROXY header, if one is expected) and
before the greeting. It answers ``None`` and counts the connection, or
returns the ``421 4.7.0`` to send instead of the greeting; ``release(key)``
uncounts an admitted connection when it ends.

- ``max_connections``: clients served at once by this server (process).
- ``max_connections_per_ip``: clients at once from one address.
- ``max_connection_rate_per_ip``: new connections per minute from one
  address, as a token bucket: a burst of that many, then one more every
  ``60 / rate`` seconds. Refused attempts cost nothing, so a client that
  backs off gets in again.

Clients in ``relay_networks`` are exempt from the per-address limits (they
are the site's own hosts, as Postfix exempts ``mynetworks``). Zero turns a
limit off. The bookkeeping is two dicts keyed by address; an entry goes
when its last connection ends or its bucket is full again (swept once a
minute), so the tables hold only addresses connected now or in the last
two minutes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .config import Settings
from .protocol import replies as R
from .protocol.replies import Reply
from .relay import RelayPolicy

__all__ = ["ConnectionLimits"]

_WINDOW = 60.0  # seconds: the rate is per minute


class ConnectionLimits:
    """Admission control for new connections (see the module doc)."""

    __slots__ = (
        "_buckets",
        "_clock",
        "_hostname",
        "_last_sweep",
        "_max_per_ip",
        "_max_total",
        "_per_ip",
        "_rate",
        "_relay",
        "active",
    )

    def __init__(
        self,
        settings: Settings,
        relay: RelayPolicy,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_total = settings.max_connections
        self._max_per_ip = settings.max_connections_per_ip
        self._rate = settings.max_connection_rate_per_ip
        self._hostname = settings.hostname
        self._relay = relay
        self._clock = clock
        #: connections admitted and not yet released
        self.active = 0
        self._per_ip: dict[str, int] = {}
        # address -> (tokens left, when they were counted)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._last_sweep = clock()

    def admit(self, peer: tuple[str, int] | str | None) -> tuple[Reply | None, str | None]:
        """``(None, key)`` and count the connection, or ``(refusal, None)``.

        ``key`` (the client's address, ``None`` when per-address limits do
        not apply) is what ``release`` takes when the connection ends.
        """
        if self._max_total and self.active >= self._max_total:
            return R.too_many_connections(self._hostname), None
        key = None
        if self._max_per_ip or self._rate:
            ip, trusted = self._relay.client(peer)
            if not trusted:
                key = ip
        if key is not None:
            if self._max_per_ip and self._per_ip.get(key, 0) >= self._max_per_ip:
                return R.too_many_connections_from_ip(self._hostname), None
            if self._rate and not self._take_token(key):
                return R.connection_rate_exceeded(self._hostname), None
            self._per_ip[key] = self._per_ip.get(key, 0) + 1
        self.active += 1
        return None, key

    def release(self, key: str | None) -> None:
        """An admitted connection (``key`` from ``admit``) has ended."""
        self.active -= 1
        if key is None:
            return
        left = self._per_ip[key] - 1
        if left:
            self._per_ip[key] = left
        else:
            del self._per_ip[key]

    def tracked_addresses(self) -> int:
        """How many addresses the tables hold (bounded: see the module doc)."""
        return len(self._per_ip.keys() | self._buckets.keys())

    def _take_token(self, key: str) -> bool:
        now = self._clock()
        if now - self._last_sweep >= _WINDOW:
            self._sweep(now)
        rate = self._rate
        tokens, then = self._buckets.get(key, (rate, now))
        tokens = min(rate, tokens + (now - then) * rate / _WINDOW)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1, now)
        return True

    def _sweep(self, now: float) -> None:
        """Forget every address whose bucket has filled up again."""
        rate = self._rate
        full = [
            key
            for key, (tokens, then) in self._buckets.items()
            if tokens + (now - then) * rate / _WINDOW >= rate
        ]
        for key in full:
            del self._buckets[key]
        self._last_sweep = now
