"""Ready handlers: where accepted mail goes.

``Sink`` discards, ``Collect`` keeps messages in memory (for tests),
``Printer`` writes them to standard output, ``Maildir`` and ``Mbox`` store
them durably before the 250 is sent.
"""

from __future__ import annotations

from ..config import ConfigError, Settings
from .collect import Collect
from .maildir import Maildir
from .mbox import Mbox
from .printer import Printer
from .sink import Sink

__all__ = ["Collect", "Maildir", "Mbox", "Printer", "Sink", "from_settings"]


def from_settings(settings: Settings) -> object:
    """The local handler the settings choose (``maildir``, ``mbox``, ``sink``, ``print``).

    With ``queue_dir`` it is wrapped in the ``Relay`` MTA handler: mail is
    queued, and only local-domain mail reaches the local handler.
    """
    if settings.queue_dir:
        from .relay import Relay  # imports the delivery side (dnspython) only when used

        return Relay(settings, local_handler(settings))
    return local_handler(settings)


def local_handler(settings: Settings) -> object:
    """The handler for local mail alone (``maildir``, ``mbox``, ``sink``, ``print``)."""
    if settings.maildir:
        return Maildir(settings.maildir)
    if settings.mbox:
        return Mbox(settings.mbox)
    if settings.sink:
        return Sink()
    if settings.print:
        return Printer()
    raise ConfigError("no handler: give one of maildir, mbox, sink or print")
