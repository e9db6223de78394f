"""Ready handlers: where accepted mail goes.

``Sink`` discards, ``Collect`` keeps messages in memory (for tests),
``Printer`` writes them to standard output, ``Maildir`` and ``Mbox`` store
them durably before the 250 is sent. The gateways pass mail on to another
system and answer with its verdict: ``LMTPForward`` (an LMTP server),
``Webhook`` (an HTTP POST) and ``Pipe`` (a command).
"""

from __future__ import annotations

import shlex

from ..config import ConfigError, Settings
from .collect import Collect
from .lmtp import LMTPForward
from .maildir import Maildir
from .mbox import Mbox
from .pipe import Pipe
from .printer import Printer
from .sink import Sink
from .webhook import Webhook

__all__ = [
    "Collect",
    "LMTPForward",
    "Maildir",
    "Mbox",
    "Pipe",
    "Printer",
    "Sink",
    "Webhook",
    "from_settings",
]


def from_settings(settings: Settings) -> object:
    """The local handler the settings choose (``maildir``, ``pipe``... see ``local_handler``).

    With ``queue_dir`` it is wrapped in the ``Relay`` MTA handler: mail is
    queued, and only local-domain mail reaches the local handler.
    """
    if settings.queue_dir:
        from .relay import Relay  # imports the delivery side (dnspython) only when used

        return Relay(settings, local_handler(settings))
    return local_handler(settings)


def local_handler(settings: Settings) -> object:
    """The handler for local mail alone: ``maildir``, ``mbox``, ``sink``, ``print`` or a gateway.

    ``lmtp_forward``, ``webhook`` (with ``webhook_headers``) or ``pipe``
    (split like a shell command line, run without one).
    """
    if settings.maildir:
        return Maildir(settings.maildir)
    if settings.mbox:
        return Mbox(settings.mbox)
    if settings.sink:
        return Sink()
    if settings.print:
        return Printer()
    if settings.lmtp_forward:
        return LMTPForward(settings.lmtp_forward, helo_name=settings.hostname)
    if settings.webhook:
        return Webhook(settings.webhook, headers=_headers(settings.webhook_headers))
    if settings.pipe:
        try:
            return Pipe(shlex.split(settings.pipe))
        except ValueError as exc:  # shlex: an unclosed quote
            raise ConfigError(f"pipe {settings.pipe!r}: {exc}") from exc
    raise ConfigError(
        "no handler: give one of maildir, mbox, sink, print, lmtp_forward, webhook or pipe"
    )


def _headers(lines: tuple[str, ...]) -> dict[str, str]:
    """``webhook_headers``' ``Name: value`` lines as a mapping."""
    headers = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name.strip() or any(c in line for c in "\r\n"):
            raise ConfigError(f"webhook_header must be 'Name: value', not {line!r}")
        headers[name.strip()] = value.strip()
    return headers
