"""STARTTLS, AUTH, ETRN and ATRN for ``SMTPProtocol``: the asyncio side.

The sans-IO connection decides when each may happen; these are the parts
that need the event loop or the server: the TLS handshake on the socket,
the authenticator (sync ones in a thread) with the per-client failure
limit, the handler's ``on_etrn``, and ATRN's handing of the transport to
the handler's client side (RFC 2645).

Each ``on_*`` takes the protocol and its event: they are entries of the
protocol's dispatch table, as its own ``_on_*`` methods are.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import ssl
from collections.abc import Awaitable
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from .auth import ScramSecrets
from .handler import _in_thread
from .protocol import replies as R
from .protocol.events import Atrn, Authenticate, AuthResult, Etrn, StartTLS
from .protocol.replies import Reply
from .relay import client_ip
from .session import Session

if TYPE_CHECKING:
    from .connection import SMTPProtocol

__all__ = ["on_atrn", "on_auth_result", "on_authenticate", "on_etrn", "on_starttls"]

log = logging.getLogger("fastsmtp")


def on_starttls(proto: SMTPProtocol, event: StartTLS) -> Awaitable[None]:
    """STARTTLS accepted: the 220 is queued; hand the socket to TLS."""
    return _start_tls(proto)


async def _start_tls(proto: SMTPProtocol) -> None:
    """Flush the 220, then hand the socket to TLS (public asyncio API only)."""
    proto._flush()
    plain = proto.transport
    context = proto.server.tls_context
    assert plain is not None and context is not None
    # A client may send EHLO with the handshake's last flight: asyncio hands
    # it over before start_tls() returns, i.e. before tls_started(). Those
    # bytes came through TLS (plaintext ones were dropped at STARTTLS): keep them.
    early: list[bytes] = []
    proto._gate = lambda data: early.append(bytes(data))
    try:
        secure = await proto._loop.start_tls(
            plain,
            cast(asyncio.BaseProtocol, proto),  # the server's are BufferedSMTPProtocol
            context,
            server_side=True,
            ssl_handshake_timeout=proto.server.settings.tls_handshake_timeout,
        )
    except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
        log.info("%s: TLS handshake failed: %s", proto.conn.session.id, exc)
        proto._gate = None
        plain.abort()
        proto.connection_lost(exc)
        return
    assert secure is not None
    proto.transport = secure
    proto._gate = None
    proto.conn.tls_started()
    for chunk in early:
        proto.conn.receive_data(chunk)
    ssl_object = secure.get_extra_info("ssl_object")
    log.debug(
        "%s: TLS started: %s %s",
        proto.conn.session.id,
        ssl_object.version() if ssl_object else "?",
        ssl_object.cipher()[0] if ssl_object else "?",
    )


def on_authenticate(proto: SMTPProtocol, event: Authenticate) -> Awaitable[None]:
    """AUTH credentials to check: ask the server's authenticator."""
    return _authenticate(proto, event)


async def _authenticate(proto: SMTPProtocol, event: Authenticate) -> None:
    """Ask the authenticator (sync ones in a thread); refuse while rate-limited."""
    conn = proto.conn
    session = conn.session
    if proto.server.auth_failures.blocked(_client_key(session), proto._loop.time()):
        log.warning("%s: AUTH refused: too many failures from %s", session.id, session.peer)
        conn.respond(R.too_many_auth_failures(proto.server.settings.hostname))
        return
    authenticator: Any = proto.server.authenticator
    expected: tuple[type, ...]
    if event.password is None:
        call = partial(authenticator.scram_secrets, event.username)
        expected = (ScramSecrets, type(None))
    else:
        call = partial(authenticator, session, event.mechanism, event.username, event.password)
        expected = (bool, str, type(None))
    try:
        result = await _maybe_in_thread(call)
    except Exception:
        log.exception("%s: authenticator failed", session.id)
        result = R.AUTH_TEMPORARY_FAILURE
    if not isinstance(result, expected):
        log.error("%s: authenticator returned %r, not %s", session.id, type(result), expected)
        result = R.AUTH_TEMPORARY_FAILURE
    if conn.closed:
        return
    if isinstance(result, Reply):
        conn.respond(result)
    else:
        conn.respond_auth(event.username if result is True else result or None)


def on_auth_result(proto: SMTPProtocol, event: AuthResult) -> None:
    """The AUTH exchange ended: log it; a failure counts against the client."""
    session = proto.conn.session
    if event.identity:
        log.info("%s: AUTH %s as %s", session.id, event.mechanism, event.identity)
        return
    log.info(
        "%s: AUTH %s failed for %r from %s",
        session.id,
        event.mechanism,
        event.username,
        session.peer,
    )
    proto.server.auth_failures.failed(_client_key(session), proto._loop.time())


def on_etrn(proto: SMTPProtocol, event: Etrn) -> Awaitable[None] | None:
    """ETRN: the handler's on_etrn (``Relay`` flushes its queue), else 458."""
    if "on_etrn" not in proto.hooks:
        proto.conn.respond()
        return None
    return proto._decide("on_etrn", proto.conn.session, event)


def on_atrn(proto: SMTPProtocol, event: Atrn) -> Awaitable[None] | None:
    """ATRN: the handler's on_atrn decides; on 250, its on_turn gets the transport."""
    if "on_atrn" not in proto.hooks or "on_turn" not in proto.hooks:
        proto.conn.respond()  # 451: nothing here can deliver over this connection
        return None
    return _turn(proto, event)


async def _turn(proto: SMTPProtocol, event: Atrn) -> None:
    """RFC 2645 §4: after our 250 the peer greets as the server, and we deliver."""
    session = proto.conn.session
    reply = await proto._call("on_atrn", session, event)
    if proto.conn.closed:
        return
    proto.conn.respond(reply)
    transport = proto.transport
    if not proto.conn.closed or transport is None or transport.is_closing():
        return  # refused: the session goes on
    proto._timed = False  # the client side has its own timeouts
    transport.write(proto.conn.data_to_send())
    log.info("%s: ATRN %s by %s: turned around", session.id, event.domains, session.auth)
    try:
        await proto._call_any("on_turn", session, event, transport)
    finally:
        transport.close()
        proto.connection_lost(None)  # the transport now reports to the client protocol


def _client_key(session: Session) -> str:
    """Whom AUTH failures are counted against: the client's IP address.

    The address as the connection limits see it (``client_ip``), so that one
    client seen as ``::ffff:192.0.2.1`` and as ``192.0.2.1`` is one key.
    """
    ip = client_ip(session.peer)
    return str(ip) if ip is not None else str(session.peer)


async def _maybe_in_thread(call: partial[Any]) -> Any:
    """Await an async callable; run a sync one in a thread (it may be slow)."""
    fn = call.func
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with async __call__
    ):
        return await call()
    return await _in_thread(call)
