"""The AUTH command (RFC 4954) for ``ServerConnection``.

AUTH is offered after EHLO when the I/O layer can check passwords, and only
under TLS unless ``auth_without_tls`` (RFC 8314). ``auth`` starts a
``SASLServer`` exchange and puts the connection in ``State.AUTH``, where
``next_event`` hands every line to it; ``step`` carries out each of its
outcomes: a 334 challenge, an ``Authenticate`` decision for the I/O layer
(answered by ``respond_auth``, or refused by ``respond``), or the end.

The functions take the connection as their first argument: they are its
command and responder table entries and the methods it binds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..auth import SASLServer, ScramSecrets
from . import replies as R
from .events import Authenticate, AuthResult, Event
from .replies import Reply
from .state import State

if TYPE_CHECKING:
    from .server import ServerConnection

__all__ = ["auth", "respond_auth", "respond_authenticate", "step"]


def auth(conn: ServerConnection, args: bytes) -> Event | None:
    """AUTH mechanism [initial-response]: begin an exchange (RFC 4954 §4)."""
    if not conn._auth_mechanisms:  # no authenticator: as if AUTH did not exist
        return conn._bad(R.UNKNOWN_COMMAND)
    if not conn._auth_offered:
        return conn._bad(R.AUTH_NEEDS_TLS)
    if not conn.session.extended:
        return conn._bad(R.NEED_EHLO)
    if conn.session.auth:
        return conn._bad(R.ALREADY_AUTHENTICATED)
    conn._sasl = SASLServer(conn._auth_mechanisms)
    conn.state = State.AUTH
    return step(conn, conn._sasl.begin(args))


def step(conn: ServerConnection, outcome: Reply | Authenticate | AuthResult) -> Event | None:
    """Carry out what the SASL exchange says: challenge, ask, finish or refuse."""
    if isinstance(outcome, Authenticate):
        return conn._decide(outcome)
    if isinstance(outcome, Reply) and outcome.code == 334:
        conn._send(outcome)
        return None
    conn._sasl = None
    conn.state = State.READY
    if isinstance(outcome, Reply):  # malformed, cancelled, unknown mechanism
        return conn._bad(outcome)
    if outcome.identity:
        conn.session.auth = outcome.identity
    conn._send(R.AUTH_SUCCESS if outcome.identity else R.AUTH_FAILED)
    return outcome


def respond_auth(conn: ServerConnection, result: str | ScramSecrets | None) -> None:
    """Answer a pending ``Authenticate``: the identity the password proves,
    the user's SCRAM secrets, or ``None`` (unknown user or wrong password).

    A result may be a notice (``AuthResult``) that ``next_event`` returns.
    """
    if not isinstance(conn._decision, Authenticate) or conn._sasl is None:
        raise RuntimeError("no Authenticate decision is pending")
    conn._decision = None
    conn._notice = step(conn, conn._sasl.answer(result))


def respond_authenticate(
    conn: ServerConnection, event: Authenticate, reply: Reply | None, accept: bool
) -> Reply:
    """``respond(reply)`` to ``Authenticate``: the exchange ends refused."""
    # Only refusals come this way (respond_auth accepts); fail closed.
    conn._sasl = None
    conn.state = State.READY
    if reply is not None and reply.code == 421:
        conn._notice = conn._close(reply.text)
    return reply if reply is not None and not accept else R.AUTH_FAILED
