"""``Sink``: accept every message and discard it (benchmarks, smoke tests)."""

from __future__ import annotations

from ..handler import Handler

__all__ = ["Sink"]


class Sink(Handler):
    """Accept and discard: defines no hook, so the server calls nothing."""
