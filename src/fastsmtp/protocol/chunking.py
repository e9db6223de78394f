"""BDAT (CHUNKING, RFC 3030) for ``ServerConnection``.

``BDAT <size> [LAST]`` is followed by exactly ``size`` octets of message,
never dot-stuffed or parsed: BINARYMIME content may be anything. ``bdat``
reads the command and puts the connection in ``State.BDAT``; while it is
there, ``next_event`` takes the chunk's octets with ``chunk_event`` as
``BodyChunk`` events, then answers 250 for the chunk, or ends the message
with the ``MessageEnd`` decision after the ``LAST`` one. A chunk that may
not be accepted (out of sequence, over the size limit) is still consumed,
so the client's stream stays in step, and then refused.

The functions take the connection as their first argument: ``bdat`` is its
command table entry, ``chunk_event`` the method it binds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import replies as R
from .events import DATA_STARTED, NEED_DATA, BodyChunk, Event, MessageAborted, MessageEnd, NeedData
from .state import BDAT_SEQUENCE, State

if TYPE_CHECKING:
    from .server import ServerConnection

__all__ = ["bdat", "chunk_event"]


def bdat(conn: ServerConnection, args: bytes) -> Event | None:
    """BDAT: the chunk's size and LAST; its octets follow (RFC 3030 §2)."""
    if not conn.settings.chunking:
        return conn._bad(R.NOT_IMPLEMENTED)
    parts = args.split()
    if (
        not 1 <= len(parts) <= 2
        or not parts[0].isdigit()
        or (len(parts) == 2 and parts[1].upper() != b"LAST")
    ):
        # Without a size there is nothing to consume: stay in command mode.
        return conn._bad(R.SYNTAX_BDAT)
    size = int(parts[0])
    conn._chunk_left = conn._chunk_size = size
    conn._chunk_last = len(parts) == 2
    conn._chunk_return = conn.state
    refusal = BDAT_SEQUENCE.get(conn.state)
    if refusal is None and conn._chunks_total + size > conn.settings.max_message_size:
        refusal = R.MESSAGE_TOO_BIG  # RFC 3030 §2 with RFC 1870
    conn._chunk_refusal = refusal
    started = refusal is None and not conn._chunks_started
    conn.state = State.BDAT
    if started:
        conn._chunks_started = True
        return DATA_STARTED
    return None


def chunk_event(conn: ServerConnection) -> Event | NeedData | None:
    """Consume one BDAT chunk; None once it is answered (RFC 3030 §2)."""
    if conn._chunk_left:
        piece = conn._reader.take(conn._chunk_left)
        if not piece:
            if conn._eof:
                return conn._close("connection lost during BDAT")
            return NEED_DATA
        conn._chunk_left -= len(piece)
        if conn._chunk_refusal is None:
            # Counted, never parsed: BINARYMIME octets may be anything.
            conn._chunks_total += len(piece)
            return BodyChunk(piece)
        if conn._chunk_left:
            return NEED_DATA
    refusal = conn._chunk_refusal
    if refusal is R.MESSAGE_TOO_BIG:
        # The message failed: drop it and its transaction (not a client error).
        conn._chunk_refusal = None
        started = conn._chunks_started
        conn._send(refusal)
        conn._reset_transaction()
        conn.state = State.READY
        return MessageAborted(refusal) if started else None
    if refusal is not None:  # out of sequence: no transaction to drop
        conn._chunk_refusal = None
        conn.state = conn._chunk_return
        return conn._bad(refusal)
    conn.state = State.CHUNKS
    if conn._chunk_last:
        return conn._wait(MessageEnd(conn._chunks_total))
    conn._send(R.chunk_received(conn._chunk_size))
    return None
