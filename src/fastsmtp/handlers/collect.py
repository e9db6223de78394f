"""``Collect``: keep every accepted message in memory, for tests."""

from __future__ import annotations

import threading

from ..handler import Handler
from ..session import Envelope, Session

__all__ = ["Collect"]


class Collect(Handler):
    """Keep ``(session, envelope)`` of each accepted message in ``messages``.

    ``wait_for(n, timeout)`` blocks (in another thread than the server's)
    until ``n`` messages have arrived, so a test never sleeps.
    """

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.sessions: list[Session] = []
        self._arrived = threading.Condition()

    async def on_message(self, session: Session, envelope: Envelope) -> None:
        # A spooled body's file goes when this returns: keep the bytes (tests read them later).
        envelope.content  # noqa: B018
        with self._arrived:
            self.envelopes.append(envelope)
            self.sessions.append(session)
            self._arrived.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Envelope]:
        """Wait until ``count`` messages arrived; raise TimeoutError otherwise."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.envelopes) >= count, timeout):
                raise TimeoutError(f"{len(self.envelopes)} of {count} messages arrived")
            return list(self.envelopes)
