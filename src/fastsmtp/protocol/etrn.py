"""ETRN (RFC 1985) and ATRN (RFC 2645) for ``ServerConnection``.

``ETRN domain`` asks for the deferred mail of one domain, ``ETRN @domain``
for that domain and its subdomains, ``ETRN #queue`` for a named queue
(RFC 1985 §4, §5). The application answers with one of the §5 replies
(``replies.etrn_*``); the connection only checks the syntax and the
sequence (after HELO/EHLO, never in a transaction).

``ATRN [domain[,domain]...]`` (RFC 2645 §4) names the domains whose held
mail an authenticated client wants on this connection, or none for all of
its domains. Accepted, it ends this side's SMTP: the roles reverse.

``etrn``, ``atrn`` and the ``respond_*`` functions take the connection as
their first argument: they are its command and responder table entries.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from . import replies as R
from .events import Atrn, Etrn, Event
from .replies import Reply

if TYPE_CHECKING:
    from .server import ServerConnection

__all__ = ["atrn", "etrn", "parse_atrn", "parse_etrn", "respond_atrn", "respond_etrn"]

# RFC 1985 §4: a domain (RFC 1035 labels), or "#" and a queue name (printable, no space).
_DOMAIN = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.?"
)
_QUEUE = re.compile(r"[\x21-\x7e]+")


def parse_etrn(args: bytes) -> Etrn | Reply:
    """The ``Etrn`` event for ``args``, or the 501 that refuses them."""
    try:
        node = args.decode("ascii").strip()
    except UnicodeDecodeError:
        return R.SYNTAX_ETRN
    if node.startswith("#"):
        if not _QUEUE.fullmatch(node[1:]):
            return R.SYNTAX_ETRN
        return Etrn(node, node[1:], "queue")
    subdomains = node.startswith("@")
    domain = node[1:] if subdomains else node
    if not _DOMAIN.fullmatch(domain):
        return R.SYNTAX_ETRN
    return Etrn(node, domain.lower().rstrip("."), "subdomains" if subdomains else "domain")


def parse_atrn(args: bytes) -> Atrn | Reply:
    """The ``Atrn`` event for ``args`` (domains lowercased), or the 501 that refuses them."""
    try:
        text = args.decode("ascii").strip()
    except UnicodeDecodeError:
        return R.SYNTAX_ATRN
    domains = [d.strip() for d in text.split(",")] if text else []
    if not all(_DOMAIN.fullmatch(d) for d in domains):
        return R.SYNTAX_ATRN
    return Atrn(tuple(dict.fromkeys(d.lower().rstrip(".") for d in domains)))


def etrn(conn: ServerConnection, args: bytes) -> Event | None:
    """ETRN: ask the application (``Etrn``) when enabled and well formed."""
    if not conn.settings.etrn:
        return conn._bad(R.NOT_IMPLEMENTED)
    request = parse_etrn(args)
    if isinstance(request, Reply):
        return conn._bad(request)
    return conn._count_junk() or conn._decide(request)


def atrn(conn: ServerConnection, args: bytes) -> Event | None:
    """ATRN: ask the application (``Atrn``) when enabled, authenticated, well formed."""
    if not conn.settings.atrn_domains:
        return conn._bad(R.NOT_IMPLEMENTED)
    if not conn.session.auth:  # RFC 2645 §4: ATRN only after AUTH
        return conn._bad(R.AUTH_REQUIRED)
    request = parse_atrn(args)
    return conn._bad(request) if isinstance(request, Reply) else conn._decide(request)


def respond_etrn(conn: ServerConnection, event: Etrn, reply: Reply | None, accept: bool) -> Reply:
    """The answer to ``Etrn``; by default 458, no queue for the node (RFC 1985 §5)."""
    return reply or R.etrn_unable(event.node)


def respond_atrn(conn: ServerConnection, event: Atrn, reply: Reply | None, accept: bool) -> Reply:
    """The answer to ``Atrn``; accepted, this connection's server side is over."""
    if accept:  # RFC 2645 §4: the roles reverse; this side of SMTP is over
        conn._close("ATRN: the connection is turned around")
    return reply or R.ATRN_REVERSING
