"""What a connection and a mail transaction carry: ``Session``, ``Envelope``, ``Address``.

These are plain data, shared by the sans-IO protocol (which fills them in
as commands are accepted) and by handlers (which read them).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import BinaryIO

from .body import BodySink, MessageBody

__all__ = ["Address", "Envelope", "RecipientDSN", "Session"]


@dataclass(frozen=True, slots=True)
class RecipientDSN:
    """A recipient's DSN parameters (RFC 3461 §4.1, §4.2).

    ``notify`` is empty when NOTIFY was not given, ``{"NEVER"}``, or a set of
    ``"SUCCESS"``, ``"FAILURE"``, ``"DELAY"``. ``orcpt`` is ``(addr_type,
    address)`` with the xtext decoded, or ``None``.
    """

    notify: frozenset[str] = frozenset()
    orcpt: tuple[str, str] | None = None


@dataclass(slots=True)
class Address:
    """A mailbox from ``MAIL FROM`` or ``RCPT TO`` with its ESMTP parameters.

    ``address`` is the mailbox as the client wrote it, without angle
    brackets and source route (``""`` for the null sender ``<>``).
    ``options`` maps uppercased parameter names to values (``None`` for a
    parameter without ``=value``).
    """

    address: str
    options: dict[str, str | None] = field(default_factory=dict)
    #: NOTIFY/ORCPT of a recipient, typed (``None`` for the sender)
    dsn: RecipientDSN | None = None


@dataclass(slots=True)
class Session:
    """One client connection.

    ``peer`` is the client's address as the socket reports it
    (``(host, port)`` for TCP), or as the balancer's PROXY header names it
    when ``proxy_protocol`` is on. ``host_name`` is what the client said in
    HELO/EHLO/LHLO (``None`` before). ``extended`` is true after EHLO or
    LHLO. ``tls`` is true once the connection is encrypted; ``auth`` holds
    the authenticated identity, if any. ``id`` is unique per connection and
    appears in the logs.
    """

    id: str
    peer: tuple[str, int] | str | None = None
    host_name: str | None = None
    extended: bool = False
    tls: bool = False
    auth: str | None = None
    transactions: int = 0


class _Content:
    """``Envelope.content``: bytes, read from the spool file the first time it is asked for.

    A descriptor rather than a property so that ``content`` stays an
    ``Envelope(...)`` keyword (a dataclass takes a descriptor as a field).
    """

    def __get__(self, envelope: Envelope | None, owner: type | None = None) -> bytes | None:
        if envelope is None:  # class access, Envelope.content
            return None
        loaded: bytes | None = envelope.__dict__.get("_content")
        if loaded is None and envelope.body is not None:
            loaded = envelope.__dict__["_content"] = envelope.body.read()
        return loaded

    def __set__(self, envelope: Envelope, value: bytes | None) -> None:
        # ``Envelope()`` without content passes the field's default: this object.
        envelope.__dict__["_content"] = None if isinstance(value, _Content) else value


# No slots: ``content`` is a descriptor, kept in the instance dict.
@dataclass
class Envelope:
    """One mail transaction: sender, recipients and, after DATA, content.

    ``mail_from`` is ``None`` until MAIL is accepted and ``""`` for the null
    sender. ``rcpt_tos[i]`` was accepted with ``rcpt_options[i]``.
    ``content`` holds the message as received (dot-unstuffed, CRLF line
    endings) with fastsmtp's ``Received:`` header first, once DATA has
    ended. A message over ``spool_threshold`` octets is in a temporary file
    (``body.path``) instead: ``open_content()`` reads either kind as a file
    and never loads a spooled one whole, while reading ``content`` loads it
    into memory (once; then it stays). ``body`` is the ``MessageBody``, or
    ``None`` when ``on_data_start`` returned a ``sink`` that took the
    chunks instead. ``body_type`` is ``"7BIT"`` or ``"8BITMIME"`` from MAIL's BODY
    parameter (``None`` when not given). ``smtputf8`` is true when MAIL
    carried SMTPUTF8. ``queue_id`` is the id given in the 250 reply to DATA
    and in the ``Received:`` header.
    """

    mail_from: str | None = None
    mail_options: dict[str, str | None] = field(default_factory=dict)
    rcpt_tos: list[str] = field(default_factory=list)
    rcpt_options: list[dict[str, str | None]] = field(default_factory=list)
    smtputf8: bool = False
    body_type: str | None = None
    content: _Content = field(default=_Content(), repr=False)
    queue_id: str | None = None
    #: DSN (RFC 3461 §4.3, §4.4): RET (``"FULL"``/``"HDRS"``) and ENVID from MAIL
    dsn_ret: str | None = None
    dsn_envid: str | None = None
    #: each accepted recipient's NOTIFY/ORCPT, parallel to ``rcpt_tos``
    rcpt_dsn: list[RecipientDSN] = field(default_factory=list)
    #: the received message (see ``content``); ``None`` before DATA ends
    body: MessageBody | None = field(default=None, repr=False)
    #: what ``on_data_start`` returned, when it took the body itself
    sink: BodySink | None = field(default=None, repr=False)

    def open_content(self) -> BinaryIO:
        """The message as a binary file at its start, without loading a spooled one.

        Close it after use. Inside ``on_message`` (where a spool file
        still exists) or for a message kept in memory.
        """
        loaded = self.__dict__.get("_content")
        if loaded is None and self.body is not None:
            return self.body.open()
        return io.BytesIO(loaded or b"")
