"""The timeouts of ``SMTPProtocol``: one sweep per server, not a timer per connection.

RFC 5321 §4.5.3.2: a server gives up on a client that leaves it waiting.
Every ``interval`` seconds (an eighth of the shorter of ``command_timeout``
and ``data_timeout``, at most one second) the sweep compares each greeted
connection's clocks with the deadline of the state it is in now, so a
change of state needs no re-arming.

Nothing here runs per command. A connection only raises flags: ``_heard``
per read, ``_answered`` per write; the next sweep stamps them with its one
reading of the clock. Measured with Callgrind, a timer per connection
(uvloop's ``call_at`` and its cancel) and a clock reading per read and per
write cost ~8% of a one-message session's instructions. A deadline can
pass up to two intervals late, never early.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from .config import Settings

if TYPE_CHECKING:
    from .connection import SMTPProtocol

__all__ = ["TimeoutSweep", "deadline"]

log = logging.getLogger("fastsmtp")


class TimeoutSweep:
    """The one timer of a server's connections; it runs while there are any."""

    def __init__(self, connections: set[SMTPProtocol], settings: Settings) -> None:
        self._connections = connections
        self._settings = settings
        self.interval = min(1.0, min(settings.command_timeout, settings.data_timeout) / 8)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """A connection was greeted: make sure the sweep runs."""
        if self._handle is None:
            self._loop = loop
            self._handle = loop.call_later(self.interval, self._tick)

    @property
    def running(self) -> bool:
        """Whether the sweep's timer is armed (it stops when the last connection goes)."""
        return self._handle is not None

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None
        if not self._connections:  # the next connection starts it again
            self._handle = None
            return
        self._handle = loop.call_later(self.interval, self._tick)
        now = loop.time()
        for proto in list(self._connections):
            if not proto._timed:  # before its greeting, or turned round (ATRN)
                continue
            try:
                self._check(proto, now)
            except Exception:  # one connection's failure must not stop the others' timeouts
                log.exception("%s: checking the timeout failed", proto.conn.session.id)

    def _check(self, proto: SMTPProtocol, now: float) -> None:
        """Say 421 when the client's time is up; the handler's time is not the client's."""
        if proto._busy:
            proto._last_activity = proto._progress = now
        else:
            if proto._heard:
                proto._last_activity = now
            if proto._answered:
                proto._progress = now
        proto._heard = proto._answered = False
        if now < deadline(proto, self._settings):
            return
        proto._timed = False
        state = "DATA" if proto.conn.in_data else "a command"
        log.info("%s: timeout waiting for %s", proto.conn.session.id, state)
        proto.conn.timed_out()
        proto._flush()
        if proto._write_paused:  # it reads nothing: the 421 would never be flushed
            proto.abort()


def deadline(proto: SMTPProtocol, settings: Settings) -> float:
    """When the client's time is up in the state its connection is in now.

    A command must be complete within ``command_timeout`` of the last reply,
    however it trickles in: counted per read, a client sending a byte a
    second would never time out. In DATA, ``data_timeout`` is the silence
    allowed between reads (RFC 5321 §4.5.3.2.5), and the message must also
    average ``min_data_rate`` octets a second beyond ``data_timeout``.
    """
    if not proto.conn.in_data:
        return proto._progress + settings.command_timeout
    limit = proto._last_activity + settings.data_timeout
    rate = settings.min_data_rate
    if rate:
        budget = proto._progress + settings.data_timeout + proto._progress_octets / rate
        limit = min(limit, budget)
    return limit
