"""aiosmtpd's AUTH callbacks (``authenticator=``, ``auth_callback=``) on fastsmtp's AUTH.

fastsmtp runs the SASL exchange itself (PLAIN and LOGIN, RFC 4954); what
aiosmtpd lets an application decide, whether a login and password are
good, is asked of the application's callback here, with aiosmtpd's
arguments, and the outcome is recorded on the aiosmtpd-style ``Session``
as aiosmtpd records it (``authenticated``, ``auth_data``, ``login_data``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..auth import PASSWORD_MECHANISMS
from ..session import Session as NativeSession
from ._aiosmtpd_handler import HandlerAdapter, invoke

__all__ = ["AuthResult", "CompatAuthenticator", "LoginPassword"]


class LoginPassword(NamedTuple):
    """What an aiosmtpd ``authenticator`` gets as ``auth_data`` for PLAIN and LOGIN."""

    login: bytes
    password: bytes


@dataclass
class AuthResult:
    """What an aiosmtpd ``authenticator`` returns (aiosmtpd's own class works too).

    Only ``success`` and ``auth_data`` are used: fastsmtp writes the AUTH
    replies itself (``235 2.7.0`` or ``535 5.7.8``), so ``message`` and
    ``handled`` have nothing to change.
    """

    success: bool
    handled: bool = True
    message: str | None = None
    auth_data: Any = None


class CompatAuthenticator:
    """A fastsmtp authenticator that asks an aiosmtpd-style callback.

    ``authenticator(server, session, envelope, mechanism, auth_data)``
    returns an object with ``success`` (and ``auth_data``), as aiosmtpd's
    ``AuthResult``; the older ``auth_callback(mechanism, login, password)``
    returns a bool. Plain functions run in the thread pool, as every
    aiosmtpd hook does here. ``exclude`` names mechanisms not to offer
    (aiosmtpd's ``auth_exclude_mechanism``).
    """

    def __init__(
        self,
        adapter: HandlerAdapter,
        *,
        authenticator: Callable[..., Any] | None = None,
        auth_callback: Callable[[str, bytes, bytes], Any] | None = None,
        exclude: Iterable[str] = (),
    ) -> None:
        if (authenticator is None) == (auth_callback is None):
            raise TypeError("give one of authenticator= and auth_callback=")
        self._adapter = adapter
        self._authenticator = authenticator
        self._auth_callback = auth_callback
        excluded = {name.upper() for name in exclude}
        #: what fastsmtp offers (see ``fastsmtp.auth.mechanisms_for``)
        self.sasl_mechanisms = tuple(m for m in PASSWORD_MECHANISMS if m not in excluded)

    async def __call__(
        self, session: NativeSession, mechanism: str, username: str, password: str
    ) -> str | None:
        conn = self._adapter._connection(session)
        data = LoginPassword(username.encode("utf-8"), password.encode("utf-8"))
        if self._auth_callback is not None:
            success = bool(await invoke(self._auth_callback, mechanism, data.login, data.password))
            auth_data: Any = data
        else:
            assert self._authenticator is not None
            result = await invoke(
                self._authenticator, conn.view, conn.session, conn.envelope, mechanism, data
            )
            success = bool(getattr(result, "success", False))
            auth_data = getattr(result, "auth_data", None)
        if not success:
            return None
        conn.session.authenticated = True
        conn.session.auth_data = auth_data
        conn.session.login_data = getattr(auth_data, "login", None)
        return username
