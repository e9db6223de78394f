"""Before the greeting: the PROXY header and ``greet_pause`` for ``SMTPProtocol``.

Until the greeting, the protocol's input goes to a gate instead of the SMTP
connection. Behind a balancer the first gate reads the PROXY header, which
names the real client, and only then are the connection limits applied;
with ``greet_pause`` the next one refuses a client that talks before it is
greeted.

The functions take the protocol as their first argument: it binds them as
the methods its gates and timers call.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .protocol import replies as R
from .protocol.proxy import ProxyError

if TYPE_CHECKING:
    from .connection import SMTPProtocol

__all__ = ["early_talker", "no_proxy_header", "read_proxy_header"]

log = logging.getLogger("fastsmtp")


def read_proxy_header(proto: SMTPProtocol, data: bytes | memoryview) -> None:
    """Take the balancer's PROXY header: it names the client (protocol/proxy.py)."""
    assert proto._proxy is not None and proto._timer is not None
    session = proto.conn.session
    try:
        result = proto._proxy.feed(data)
    except ProxyError as exc:
        # Not a balancer speaking the protocol: nothing said could be trusted.
        log.warning("%s: closing, bad PROXY header from %s: %s", session.id, session.peer, exc)
        proto.abort()
        return
    if result is None:
        return
    header, rest = result
    proto._proxy = proto._gate = None
    proto._timer.cancel()
    if header.source is not None:
        log.debug("%s: %s is a proxy for %s", session.id, session.peer, header.source)
        session.peer = header.source
    proto._admit()
    if rest:
        proto.data_received(rest)


def no_proxy_header(proto: SMTPProtocol) -> None:
    """``proxy_timeout`` passed without a whole header: close, saying nothing."""
    session = proto.conn.session
    log.warning("%s: closing, no PROXY header from %s in time", session.id, session.peer)
    proto.abort()


def early_talker(proto: SMTPProtocol, data: bytes | memoryview) -> None:
    """Input before the greeting (greet_pause): refuse, as Postfix's postscreen does.

    A client that talks first does not wait for replies: a spam engine,
    not an MTA (RFC 5321 §3.1 has the client wait for the greeting).
    """
    assert proto._timer is not None
    proto._timer.cancel()
    proto._gate = None
    session = proto.conn.session
    log.info("%s: refused %s: it talked before the greeting", session.id, session.peer)
    proto.conn.greet(R.EARLY_TALKER)
    proto._flush()
