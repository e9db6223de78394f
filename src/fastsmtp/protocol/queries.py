"""HELP, VRFY and EXPN for ``ServerConnection``: questions that move no mail.

HELP is answered from the reply table. VRFY and EXPN (RFC 5321 §3.5) are
``Verify`` and ``Expand`` decisions; unanswered, VRFY gets 252 (neither
confirmed nor denied, §3.5.3) and EXPN 502. Each one counts as a junk
command (``max_junk_commands``), as NOOP does.

The functions take the connection as their first argument: they are its
command and responder table entries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import replies as R
from .events import Event, Expand, Verify
from .replies import Reply

if TYPE_CHECKING:
    from .server import ServerConnection

__all__ = ["expn", "help_", "respond_expn", "respond_vrfy", "vrfy"]


def help_(conn: ServerConnection, args: bytes) -> Event | None:
    """HELP [topic] (RFC 5321 §4.1.1.8): the one list of commands, whatever the topic."""
    conn._send(R.HELP)
    return conn._count_junk()


def vrfy(conn: ServerConnection, args: bytes) -> Event | None:
    """VRFY string (RFC 5321 §4.1.1.6): ask the application (``Verify``)."""
    if not args:
        return conn._bad(R.SYNTAX_VRFY)
    return conn._count_junk() or conn._decide(Verify(args.decode("utf-8", "replace")))


def expn(conn: ServerConnection, args: bytes) -> Event | None:
    """EXPN string (RFC 5321 §4.1.1.7): ask the application (``Expand``)."""
    if not args:
        return conn._bad(R.SYNTAX_VRFY)
    return conn._count_junk() or conn._decide(Expand(args.decode("utf-8", "replace")))


def respond_vrfy(conn: ServerConnection, event: Verify, reply: Reply | None, accept: bool) -> Reply:
    """The answer to ``Verify``; by default 252."""
    return reply or R.VRFY_CANNOT


def respond_expn(conn: ServerConnection, event: Expand, reply: Reply | None, accept: bool) -> Reply:
    """The answer to ``Expand``; by default 502."""
    return reply or R.EXPN_DISABLED
