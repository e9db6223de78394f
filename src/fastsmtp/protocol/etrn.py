"""ETRN (RFC 1985) and ATRN (RFC 2645): parse the argument into a decision event.

``ETRN domain`` asks for the deferred mail of one domain, ``ETRN @domain``
for that domain and its subdomains, ``ETRN #queue`` for a named queue
(RFC 1985 §4, §5). The application answers with one of the §5 replies
(``replies.etrn_*``); ``ServerConnection`` only checks the syntax and the
sequence (after HELO/EHLO, never in a transaction).

``ATRN [domain[,domain]...]`` (RFC 2645 §4) names the domains whose held
mail an authenticated client wants on this connection, or none for all of
its domains.
"""

from __future__ import annotations

import re

from . import replies as R
from .events import Atrn, Etrn
from .replies import Reply

__all__ = ["parse_atrn", "parse_etrn"]

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
