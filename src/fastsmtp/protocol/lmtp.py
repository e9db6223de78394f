"""LMTP's answer to a message (RFC 2033 §4.2) for ``ServerConnection``.

An LMTP server answers the end of a message once per accepted recipient,
in their order, so that each one's delivery is known. LHLO, LMTP's EHLO,
is ``ServerConnection``'s (``protocol.server``).

``respond_recipients`` takes the connection as its first argument: it is
the method the connection binds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .events import MessageEnd
from .replies import Reply

if TYPE_CHECKING:
    from .server import ServerConnection

__all__ = ["respond_recipients"]


def respond_recipients(conn: ServerConnection, replies: Sequence[Reply | None]) -> None:
    """LMTP: answer ``MessageEnd`` with one reply per accepted recipient.

    ``replies[i]`` answers ``envelope.rcpt_tos[i]`` (RFC 2033 §4.2);
    ``None`` accepts with the default reply. The transaction counts as
    delivered when any recipient accepted it.
    """
    event = conn._decision
    if not conn.settings.lmtp or type(event) is not MessageEnd:
        raise RuntimeError("respond_recipients() answers MessageEnd in LMTP mode only")
    if len(replies) != len(conn.envelope.rcpt_tos):
        raise ValueError(f"{len(replies)} replies for {len(conn.envelope.rcpt_tos)} recipients")
    conn._decision = None
    accept = False
    for reply in replies:
        accept = accept or reply is None or reply.code < 400
        conn._answer_end(reply)
    conn._end_message(accept)
