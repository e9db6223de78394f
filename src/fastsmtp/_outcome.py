"""What ``on_message`` returned, turned into the replies the server sends.

``on_message`` may return ``None`` (accept), one ``Reply`` (for every
recipient) or a sequence with one ``Reply | None`` per accepted recipient,
in RCPT order: LMTP (RFC 2033 §4.2) answers the end of the message once per
recipient, so a delivery agent can accept for one mailbox and refuse for
another. SMTP has a single reply after DATA: there a sequence is taken when
all its entries agree, and is a handler error otherwise (the server cannot
say "yes for these, no for those", and a 250 would lose the refusals).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .protocol.replies import Reply
from .session import Envelope

__all__ = ["BadOutcome", "log_accepted", "log_message", "message_replies"]

log = logging.getLogger("fastsmtp")


class BadOutcome(ValueError):
    """``on_message`` returned something the server cannot send; the text says what."""


def message_replies(result: object, recipients: int, *, lmtp: bool, default: Reply) -> list[Reply]:
    """The replies to the end of a message: one per recipient with LMTP, else one.

    ``default`` stands for ``None`` (accepted). Raises ``BadOutcome`` for a
    result of the wrong type or length, or one SMTP cannot express.
    """
    if result is None or isinstance(result, Reply):
        reply = result or default
        return [reply] * recipients if lmtp else [reply]
    if isinstance(result, (str, bytes)) or not isinstance(result, Sequence):
        raise BadOutcome(
            f"returned {result!r}; on_message returns None, a Reply, "
            "or a sequence of Reply | None, one per recipient"
        )
    if len(result) != recipients:
        raise BadOutcome(f"returned {len(result)} results for {recipients} recipients")
    replies = []
    for item in result:
        if item is not None and not isinstance(item, Reply):
            raise BadOutcome(f"returned {item!r} for a recipient; expected None or a Reply")
        replies.append(item or default)
    if lmtp:
        return replies
    if any(reply != replies[0] for reply in replies):
        raise BadOutcome(
            "returned different results per recipient, which SMTP cannot send "
            "(one reply after DATA; use lmtp = true for per-recipient replies)"
        )
    return replies[:1]


def log_message(envelope: Envelope, replies: list[Reply], size: int, session_id: str) -> None:
    """One line for the recipients that accepted the message, one per refusing one.

    ``replies[i]`` is the reply for ``envelope.rcpt_tos[i]``. Logged at INFO,
    which the caller checks is on first.
    """
    accepted = [
        rcpt for rcpt, reply in zip(envelope.rcpt_tos, replies, strict=True) if reply.is_success
    ]
    if accepted:
        log_accepted(envelope, accepted, size, session_id)
    for rcpt, reply in zip(envelope.rcpt_tos, replies, strict=True):
        if not reply.is_success:
            log.info("%s: refused by handler for <%s>: %s", envelope.queue_id, rcpt, reply)


def log_accepted(envelope: Envelope, recipients: list[str], size: int, session_id: str) -> None:
    """The line for a message accepted for ``recipients`` (at INFO, checked by the caller)."""
    log.info(
        "%s: from=<%s> to=<%s> size=%d session=%s",
        envelope.queue_id,
        envelope.mail_from,
        ">,<".join(recipients),
        size,
        session_id,
    )
