"""HELO, EHLO and LHLO for ``ServerConnection``, and the EHLO reply.

The client names itself once per session (again after STARTTLS); the
application decides (``Hello``) and the accepted greeting starts the
dialogue afresh (RFC 5321 §4.1.4). The EHLO reply lists exactly the
extensions this configuration offers; it is built once per configuration.

The functions take the connection as their first argument: they are its
command and responder table entries, kept out of the hot mail path's module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..config import Settings
from . import replies as R
from .events import Event, Hello, Reset
from .replies import Reply
from .state import IN_TRANSACTION, State

if TYPE_CHECKING:
    from .server import ServerConnection

__all__ = ["ehlo", "ehlo_reply", "helo", "lhlo", "respond_hello"]


def _hello(conn: ServerConnection, verb: str, args: bytes) -> Event | None:
    if not args:
        return conn._bad(R.SYNTAX_HELO)
    try:  # decode()'s codec lookup for "replace" costs more than the rest of the command
        host_name = args.decode()
    except UnicodeDecodeError:
        host_name = args.decode("utf-8", "replace")
    if Hello in conn._auto_accept:  # nobody decides: accepted without making the event
        return conn._accepted(_accept(conn, verb, host_name, None))
    # While the hook decides, ``extended`` tells EHLO/LHLO from HELO (as
    # aiosmtpd's extended_smtp does); a refusal puts it back.
    conn._extended_before = conn.session.extended
    conn.session.extended = verb != "HELO"
    return conn._decide(Hello(verb, host_name))


def helo(conn: ServerConnection, args: bytes) -> Event | None:
    """HELO (RFC 5321 §4.1.1.1): not in LMTP."""
    if conn.settings.lmtp:
        return conn._bad(R.LMTP_NEEDS_LHLO)
    return _hello(conn, "HELO", args)


def ehlo(conn: ServerConnection, args: bytes) -> Event | None:
    """EHLO (RFC 5321 §4.1.1.1): not in LMTP."""
    if conn.settings.lmtp:
        return conn._bad(R.LMTP_NEEDS_LHLO)
    return _hello(conn, "EHLO", args)


def lhlo(conn: ServerConnection, args: bytes) -> Event | None:
    """LHLO: RFC 2033 §4.1's EHLO by another name, in LMTP only."""
    if not conn.settings.lmtp:
        return conn._bad(R.UNKNOWN_COMMAND)
    return _hello(conn, "LHLO", args)


def respond_hello(conn: ServerConnection, event: Hello, reply: Reply | None, accept: bool) -> Reply:
    """The answer to ``Hello``: accepted, the session starts afresh."""
    if not accept:
        assert reply is not None
        conn.session.extended = conn._extended_before
        return reply
    return _accept(conn, event.verb, event.host_name, reply)


def _accept(conn: ServerConnection, verb: str, host_name: str, reply: Reply | None) -> Reply:
    """The session starts afresh, named ``host_name``; the reply to send."""
    if conn.state in IN_TRANSACTION:
        # RFC 5321 §4.1.4: an accepted HELO/EHLO resets like RSET.
        conn._notice = Reset(conn.envelope)
    conn._reset_transaction()
    session = conn.session
    session.host_name = host_name
    session.extended = extended = verb != "HELO"
    conn.state = State.READY
    if extended:
        extensions = ("STARTTLS", *conn._extensions) if conn._starttls else conn._extensions
        if conn._auth_mechanisms and conn._auth_offered:
            extensions = (*extensions, "AUTH " + " ".join(conn._auth_mechanisms))
        return conn._profile.ehlo_for(extensions)
    return reply or R.helo_ok(conn.settings.hostname)


def ehlo_reply(settings: Settings, extensions: Sequence[str] = ()) -> Reply:
    """The EHLO reply: the host name, then the extensions actually enabled.

    ``ServerConnection`` makes each one once per settings object and
    extension list (its settings profile's ``ehlo_for``).
    """
    lines = [settings.hostname]
    if settings.pipelining:
        lines.append("PIPELINING")
    lines.append(f"SIZE {settings.max_message_size}")
    if settings.eightbitmime:
        lines.append("8BITMIME")
    if settings.smtputf8:
        lines.append("SMTPUTF8")
    if settings.dsn:
        lines.append("DSN")
    if settings.chunking:
        lines.append("CHUNKING")
        if settings.binarymime:
            lines.append("BINARYMIME")
    lines.append("ENHANCEDSTATUSCODES")
    lines.extend(extensions)
    # RFC 2034 §3: no enhanced code on the EHLO reply.
    return Reply(250, None, "\n".join(lines))
