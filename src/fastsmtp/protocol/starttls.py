"""STARTTLS (RFC 3207) for ``ServerConnection``.

``starttls`` answers 220 and puts the connection in ``State.TLS``: input is
dropped from then on, so nothing pipelined after STARTTLS can run after the
handshake (CVE-2011-0411). The I/O layer does the handshake and calls
``tls_started``, which forgets everything said before (RFC 3207 §4.2).

The functions take the connection as their first argument: ``starttls`` is
its command table entry, ``tls_started`` the method it binds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..session import Envelope
from . import replies as R
from .events import Event, Reset, StartTLS
from .state import IN_TRANSACTION, State

if TYPE_CHECKING:
    from .server import ServerConnection

__all__ = ["starttls", "tls_started"]


def starttls(conn: ServerConnection, args: bytes) -> Event | None:
    """STARTTLS: 220, then nothing more until the handshake."""
    if conn.session.tls:
        return conn._bad(R.TLS_ALREADY_ACTIVE)
    if not conn._starttls:
        return conn._bad(R.NOT_IMPLEMENTED)
    if args:
        return conn._bad(R.SYNTAX_STARTTLS)
    conn._send(R.READY_FOR_TLS)
    # Bytes pipelined after STARTTLS are dropped, never run after the
    # handshake (command injection, CVE-2011-0411).
    conn._reader.drain()
    abandoned = conn.envelope if conn.state in IN_TRANSACTION else None
    conn._reset_transaction()
    conn.state = State.TLS
    if abandoned is not None:
        # RFC 3207 §4.2 forgets the transaction (even between BDAT
        # chunks): say so first, as RSET would, then start TLS.
        conn._notice = StartTLS()
        return Reset(abandoned)
    return StartTLS()


def tls_started(conn: ServerConnection) -> None:
    """The TLS handshake after STARTTLS succeeded: start afresh (RFC 3207 §4.2).

    The client must say EHLO again; what it said before, and any bytes it
    sent after STARTTLS, are forgotten.
    """
    if conn.state is not State.TLS:
        raise RuntimeError("tls_started() without an accepted STARTTLS")
    conn._reader.drain()
    conn.envelope = Envelope()
    conn.session.tls = True
    conn.session.host_name = None
    conn.session.extended = False
    conn.session.auth = None
    conn._starttls = False
    conn.state = State.CONNECTED
