"""DSN parameters (RFC 3461 §4): RET and ENVID on MAIL, NOTIFY and ORCPT on RCPT.

Each function validates one parameter's value and returns it typed, or
raises ``ValueError``; the connection answers that with 501 5.5.4.
"""

from __future__ import annotations

from ..session import RecipientDSN
from ..wire import ParseError, xtext_decode

__all__ = ["NO_DSN", "parse_envid", "parse_notify", "parse_orcpt", "parse_ret", "recipient_dsn"]

_NOTIFY = frozenset({"SUCCESS", "FAILURE", "DELAY"})


def parse_ret(value: str | None) -> str:
    """RET=FULL|HDRS (RFC 3461 §4.3): how much of the message a DSN returns."""
    if value is None or value.upper() not in ("FULL", "HDRS"):
        raise ValueError("RET must be FULL or HDRS")
    return value.upper()


def parse_envid(value: str | None) -> str:
    """ENVID=xtext (RFC 3461 §4.4), at most 100 characters once decoded."""
    if value is None:
        raise ValueError("ENVID needs a value")
    try:
        envid = xtext_decode(value)
    except ParseError as exc:
        raise ValueError(f"ENVID: {exc}") from None
    if len(envid) > 100 or not envid.isprintable():
        raise ValueError("ENVID must be at most 100 printable characters")
    return envid


def parse_notify(value: str | None) -> frozenset[str]:
    """NOTIFY=NEVER or a list of SUCCESS, FAILURE, DELAY (RFC 3461 §4.1)."""
    if value is None:
        raise ValueError("NOTIFY needs a value")
    items = [item.upper() for item in value.split(",")]
    if items == ["NEVER"]:
        return frozenset(items)
    notify = frozenset(items)
    if len(notify) != len(items) or not notify <= _NOTIFY:
        raise ValueError("NOTIFY is NEVER or a list of SUCCESS, FAILURE and DELAY")
    return notify


def parse_orcpt(value: str | None) -> tuple[str, str]:
    """ORCPT=addr-type;xtext (RFC 3461 §4.2): the recipient as first given."""
    if value is None or ";" not in value:
        raise ValueError("ORCPT is addr-type;address")
    addr_type, _, encoded = value.partition(";")
    if not addr_type or not encoded or not all(c.isalnum() or c == "-" for c in addr_type):
        raise ValueError("ORCPT is addr-type;address")
    try:
        original = xtext_decode(encoded)
    except ParseError as exc:
        raise ValueError(f"ORCPT: {exc}") from None
    return addr_type.lower(), original


NO_DSN = RecipientDSN()  # frozen: shared by every RCPT without parameters


def recipient_dsn(params: dict[str, str | None]) -> RecipientDSN:
    """NOTIFY and ORCPT of one RCPT with parameters, typed (without: ``NO_DSN``)."""
    notify = params.get("NOTIFY")
    orcpt = params.get("ORCPT")
    return RecipientDSN(
        notify=parse_notify(notify) if "NOTIFY" in params else frozenset(),
        orcpt=parse_orcpt(orcpt) if "ORCPT" in params else None,
    )
