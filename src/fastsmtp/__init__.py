"""fastsmtp: an SMTP engine for Python, with a Cython wire layer.

::

    import fastsmtp

    class Inbox(fastsmtp.Handler):
        async def on_rcpt(self, session, envelope, rcpt):
            if not rcpt.address.endswith("@example.com"):
                return fastsmtp.Reply(550, "5.1.1", "No such user here")
        async def on_message(self, session, envelope):
            store(envelope.mail_from, envelope.rcpt_tos, envelope.content)

    fastsmtp.run(Inbox(), listen=["0.0.0.0:25"], hostname="mx.example.com")
"""

from __future__ import annotations

from . import testing
from ._version import __version__
from .config import ConfigError, Settings
from .handler import Handler
from .handlers import Collect, Maildir, Mbox, Printer, Sink
from .protocol.replies import Reply
from .server import Server, run
from .session import Address, Envelope, Session

__all__ = [
    "Address",
    "Collect",
    "ConfigError",
    "Envelope",
    "Handler",
    "Maildir",
    "Mbox",
    "Printer",
    "Reply",
    "Server",
    "Session",
    "Settings",
    "Sink",
    "__version__",
    "run",
    "testing",
]
