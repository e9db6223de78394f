"""Delivery status notifications: RFC 3464 reports of failed, delayed and delivered mail.

A report is a ``multipart/report`` (RFC 6522) with three parts: a short
text for people, a ``message/delivery-status`` for programs (one block for
the message, one per recipient), and the original message (RET=FULL, the
default) or only its header (RET=HDRS, and always for delay notices: RET
applies to failure reports only, RFC 3461 §4.3). A message larger than
``size_limit`` is returned as its header only, as Postfix does with
``bounce_size_limit``: a report should not carry a big attachment back.
A success notice (asked for with NOTIFY=SUCCESS) says ``Action:
delivered`` for a recipient stored here and ``Action: relayed`` for one
handed to a server that does not offer DSN (one that does is given NOTIFY
and reports itself, RFC 3461 §5.2.2). A report is sent from the null
sender ``<>`` to the original sender, so that it can never cause another
report (RFC 5321 §4.5.5); ``wants_bounce`` is false for a message from
``<>`` and applies the recipient's NOTIFY (RFC 3461 §4.1).

When the original needs UTF-8 (it came with SMTPUTF8, or an address in the
report is not ASCII) the report uses the RFC 6533 types instead:
``message/global-delivery-status`` (whose fields may hold UTF-8 and
``utf-8`` address types) and ``message/global`` or
``message/global-headers`` for the original; such a report must itself be
sent with SMTPUTF8 (``report_envelope`` says so).

The report is built as bytes, not with ``email.message``: the original is
returned octet for octet (8-bit text, odd line lengths and all), which a
round trip through the ``email`` package would not guarantee.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid
from typing import TYPE_CHECKING, BinaryIO, Literal

if TYPE_CHECKING:
    from .queue import QueuedMessage, QueuedRecipient

__all__ = ["ReportKind", "make_bounce", "report_envelope", "wants_bounce"]

ReportKind = Literal["failure", "delay", "success"]
_CHUNK = 1 << 16
_MAX_DIAGNOSTIC = 900  # a header-like line stays under RFC 5322's 998 octets


def wants_bounce(message: QueuedMessage, recipient: QueuedRecipient, kind: ReportKind) -> bool:
    """Whether the sender asked for (or by default gets) a ``kind`` report for ``recipient``.

    Never for the null sender: a failed bounce is not bounced (RFC 5321
    §4.5.5; RFC 3461 §5.2.8). NOTIFY=NEVER: never. No NOTIFY: failures
    only. Otherwise FAILURE, DELAY and SUCCESS say which (RFC 3461 §4.1, §6.2).
    """
    if message.mail_from == "":
        return False
    notify = recipient.dsn.notify
    if "NEVER" in notify:
        return False
    if kind == "failure":
        return not notify or "FAILURE" in notify
    return ("DELAY" if kind == "delay" else "SUCCESS") in notify


def needs_utf8(message: QueuedMessage, recipients: Sequence[QueuedRecipient]) -> bool:
    """Whether a report about ``recipients`` needs the RFC 6533 (UTF-8) form."""
    addresses = [message.mail_from, *(r.address for r in recipients)]
    addresses += [r.dsn.orcpt[1] for r in recipients if r.dsn.orcpt]
    addresses.append(message.dsn_envid or "")
    return message.smtputf8 or not all(a.isascii() for a in addresses)


def report_envelope(report: bytes, utf8: bool) -> tuple[bool, str | None]:
    """``(smtputf8, body_type)`` to queue ``report`` with: SMTPUTF8, 8BITMIME as needed."""
    return utf8, None if report.isascii() else "8BITMIME"


def make_bounce(
    message: QueuedMessage,
    failed: Sequence[QueuedRecipient],
    original: BinaryIO,
    *,
    reporting_mta: str,
    kind: ReportKind = "failure",
    now: float | None = None,
    retry_until: float | None = None,
    size_limit: int = 0,
) -> bytes:
    """The RFC 3464 report of ``kind`` about ``failed`` recipients of ``message``.

    ``original`` is the queued content (read from its current position).
    ``reporting_mta`` is this host's name, used in ``From:
    MAILER-DAEMON@...``, ``Reporting-MTA`` and the ``Message-ID``.
    ``retry_until`` (delay notices) is when the queue gives up, shown as
    ``Will-Retry-Until``. ``size_limit`` (octets, 0: none) caps what RET=FULL
    returns (see the module doc). The caller queues the result from ``<>`` to
    ``message.mail_from``, with ``report_envelope``'s parameters.
    """
    if not failed:
        raise ValueError("a delivery report needs at least one recipient")
    now = time.time() if now is None else now
    utf8 = needs_utf8(message, failed)
    full = kind == "failure" and message.dsn_ret != "HDRS" and message.body_type != "BINARYMIME"
    cut = full and 0 < size_limit < message.size
    full = full and not cut
    returned = original.read() if full else _read_header(original)
    boundary = _boundary(returned)
    status_type = "global-delivery-status" if utf8 else "delivery-status"
    if full:
        original_type = "message/global" if utf8 else "message/rfc822"
    else:
        original_type = "message/global-headers" if utf8 else "text/rfc822-headers"
    human = _human_text(failed, kind, reporting_mta, retry_until)
    if cut:
        human += (
            f"\r\nYour message was larger than {size_limit} octets: only its header\r\n"
            "is returned below.\r\n"
        )
    status = _status_fields(message, failed, kind, reporting_mta, now, retry_until, utf8)
    subject = _SUBJECTS[kind]
    header = (
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>\r\n"
        f"To: <{message.mail_from}>\r\n"
        f"Subject: {subject}\r\n"
        f"Date: {_date(now)}\r\n"
        f"Message-ID: {make_msgid('dsn', domain=reporting_mta)}\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type={status_type}; boundary="{boundary}"\r\n'
    )
    parts = [
        header.encode(),
        b"\r\nThis is a MIME-formatted delivery status notification.\r\n",
        _part(boundary, "text/plain; charset=utf-8", human.encode()),
        _part(boundary, f"message/{status_type}", status.encode()),
        _part(boundary, original_type, returned),
        f"\r\n--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts)


_SUBJECTS = {
    "failure": "Delivery failure: returned mail",
    "delay": "Delivery delayed: still trying, nothing to do yet",
    "success": "Delivery report: your message was delivered",
}


def _action(recipient: QueuedRecipient, kind: ReportKind) -> str:
    """RFC 3464 §2.3.3: relayed when a remote server (without DSN) took it."""
    if kind == "success":
        return "relayed" if recipient.remote_host else "delivered"
    return "failed" if kind == "failure" else "delayed"


def _part(boundary: str, content_type: str, body: bytes) -> bytes:
    encoding = "7bit" if body.isascii() else "8bit"
    return (
        f"\r\n--{boundary}\r\nContent-Type: {content_type}\r\n"
        f"Content-Transfer-Encoding: {encoding}\r\n\r\n"
    ).encode() + body


def _human_text(
    recipients: Sequence[QueuedRecipient], kind: ReportKind, mta: str, retry_until: float | None
) -> str:
    if kind == "failure":
        intro = (
            f"The mail system at {mta} could not deliver your message to the\r\n"
            "recipients below and has given up. Each address is followed by the\r\n"
            "reason (the receiving server's reply, when there was one).\r\n"
        )
    elif kind == "success":
        intro = (
            f"The mail system at {mta} delivered your message to the recipients\r\n"
            'below, as you asked. "relayed" means it was passed to a server that\r\n'
            "sends no such reports: it arrived there, not necessarily in the mailbox.\r\n"
        )
    else:
        until = f" until {_date(retry_until)}" if retry_until is not None else ""
        intro = (
            f"The mail system at {mta} has not yet delivered your message to the\r\n"
            f"recipients below. It keeps trying{until}; you do not need to send\r\n"
            "the message again. You will be told if it finally fails.\r\n"
        )
    lines = [intro]
    for r in recipients:
        said = f"{_action(r, kind)} ({_reason(r)})" if kind == "success" else _reason(r)
        lines.append(f"\r\n<{r.address}>: {said}\r\n")
    return "".join(lines)


def _status_fields(
    message: QueuedMessage,
    recipients: Sequence[QueuedRecipient],
    kind: ReportKind,
    mta: str,
    now: float,
    retry_until: float | None,
    utf8: bool,
) -> str:
    """The ``message/delivery-status`` body: per-message block, then one per recipient."""
    blocks = []
    head = [f"Reporting-MTA: dns; {mta}"]
    if message.dsn_envid is not None:
        head.append(f"Original-Envelope-Id: {message.dsn_envid}")
    head.append(f"Arrival-Date: {_date(message.created)}")
    blocks.append(head)
    for r in recipients:
        fields = []
        if r.dsn.orcpt is not None:
            fields.append(f"Original-Recipient: {r.dsn.orcpt[0]}; {_clean(r.dsn.orcpt[1], utf8)}")
        address_type = "rfc822" if r.address.isascii() else "utf-8"  # RFC 6533 §3
        fields.append(f"Final-Recipient: {address_type}; {r.address}")
        fields.append(f"Action: {_action(r, kind)}")
        fields.append(f"Status: {_status(r, kind)}")
        if r.remote_host:
            fields.append(f"Remote-MTA: dns; {r.remote_host}")
        if r.last_code is not None:
            fields.append(f"Diagnostic-Code: smtp; {_clean(_reason(r), utf8)}")
        if r.last_attempt is not None:
            fields.append(f"Last-Attempt-Date: {_date(r.last_attempt)}")
        if kind == "delay" and retry_until is not None:
            fields.append(f"Will-Retry-Until: {_date(retry_until)}")
        blocks.append(fields)
    return "\r\n".join("\r\n".join(block) + "\r\n" for block in blocks)


def _status(recipient: QueuedRecipient, kind: ReportKind) -> str:
    """The enhanced status (RFC 3463) of the last reply, or a generic one of the right class."""
    if recipient.last_enhanced:
        return recipient.last_enhanced
    return {"failure": "5.0.0", "delay": "4.0.0", "success": "2.0.0"}[kind]


def _reason(recipient: QueuedRecipient) -> str:
    code = f"{recipient.last_code} " if recipient.last_code is not None else ""
    enhanced = f"{recipient.last_enhanced} " if recipient.last_enhanced else ""
    text = " ".join(recipient.last_text.split())  # a multi-line reply on one line
    return f"{code}{enhanced}{text}".strip() or "no reason recorded"


def _clean(value: str, utf8: bool) -> str:
    """One header-like line: no line breaks, bounded, ASCII unless the report is UTF-8."""
    value = " ".join(value.split())[:_MAX_DIAGNOSTIC]
    return value if utf8 else value.encode("ascii", "replace").decode()


def _date(timestamp: float) -> str:
    return format_datetime(datetime.fromtimestamp(timestamp, UTC))


def _read_header(original: BinaryIO) -> bytes:
    """The original's header section, up to and including the empty line."""
    data = b""
    while chunk := original.read(_CHUNK):
        data += chunk
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            return data[: end + 4]
    return data if data.endswith(b"\r\n") or not data else data + b"\r\n"


def _boundary(body: bytes) -> str:
    """A random boundary that does not occur in the returned content."""
    while True:
        boundary = f"=_report_{secrets.token_hex(12)}"
        if boundary.encode() not in body:
            return boundary
