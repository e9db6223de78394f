"""Run aiosmtpd handlers unchanged on fastsmtp.

A project switches by changing one import::

    from fastsmtp.compat.aiosmtpd import Controller   # was: from aiosmtpd.controller import ...

    controller = Controller(MyHandler(), hostname="127.0.0.1", port=8025)
    controller.start()
    ...
    controller.stop()

How the calling convention maps
===============================

``HandlerAdapter`` is a fastsmtp ``Handler`` that calls an aiosmtpd-style
handler's ``handle_*`` methods the way aiosmtpd does: with ``(server,
session, envelope, ...)``, where ``session`` and ``envelope`` are this
module's ``Session`` and ``Envelope`` (aiosmtpd's attribute names) and
``server`` is a ``ServerView``. A hook returns a status string such as
``"250 OK"`` or ``"550 5.1.1 Unknown user"``; it is parsed into a ``Reply``
(a string without an enhanced code gets a default for its command or
class), and a 2xx accepts. Hooks may be ``async def`` (as aiosmtpd
requires) or plain functions, which run in a thread pool.

As in aiosmtpd, ``handle_MAIL`` must set ``envelope.mail_from`` and
``handle_RCPT`` must append to ``envelope.rcpt_tos``: the envelope the
hooks see is theirs. fastsmtp keeps its own envelope beside it, filled from
the replies, so sequencing, limits and the ``Received:`` header stay right
whatever a hook does. Where the hooks' envelope disagrees with the replies,
the commands are answered as aiosmtpd would: RCPT after a MAIL whose hook
did not set ``mail_from`` gets ``503 need MAIL``; a message whose RCPT
hooks appended nobody gets ``503 need RCPT`` (after the data: fastsmtp has
already said 354 to DATA).

``handle_MAIL``, ``handle_RCPT``, ``handle_DATA`` (and the old
``process_message``), ``handle_RSET`` and ``handle_exception`` are called.
``handle_NOOP``, ``handle_QUIT`` and ``handle_VRFY`` are not: fastsmtp
answers those commands itself and has no hook for them, so a handler that
defines them gets an ``UnsupportedHookWarning`` at construction. The reply
to RSET is always ``250``; ``handle_RSET`` runs for its side effects.
``handle_HELO`` and ``handle_EHLO`` are called as aiosmtpd calls them
(they must set ``session.host_name`` to accept); ``handle_EHLO`` is shown
aiosmtpd-style lines for the extensions fastsmtp offers, and a 2xx last
line accepts with fastsmtp's own extension list (lines it adds or removes
change nothing), while a 4xx/5xx one refuses. ``handle_STARTTLS``
(fastsmtp has no hook into the handshake), ``handle_AUTH`` and custom ``auth_*`` mechanisms
(fastsmtp runs the SASL exchange itself), ``handle_PROXY`` and the
``Controller`` arguments for PROXY and call limits raise
``UnsupportedError`` at construction rather than being ignored. TLS maps:
``tls_context`` (STARTTLS), ``require_starttls`` and the controller's
``ssl_context`` (SMTPS). AUTH maps too: ``authenticator`` (with aiosmtpd's
``AuthResult`` and ``LoginPassword``, also importable from here),
``auth_callback``, ``auth_required``, ``auth_require_tls`` and
``auth_exclude_mechanism``; fastsmtp offers PLAIN and LOGIN to them and
writes the replies itself (``235 2.7.0``, ``535 5.7.8``), so a result's
``message`` is not used. Without an authenticator AUTH is not offered
(aiosmtpd offers it and refuses every login).
"""

from __future__ import annotations

from ._aiosmtpd_auth import AuthResult, LoginPassword
from ._aiosmtpd_controller import DEFAULT_READY_TIMEOUT, Controller, build_server, get_localhost
from ._aiosmtpd_handler import (
    Envelope,
    HandlerAdapter,
    ServerView,
    Session,
    UnsupportedError,
    UnsupportedHookWarning,
)
from ._status import StatusError, parse_status

__all__ = [
    "DEFAULT_READY_TIMEOUT",
    "AuthResult",
    "Controller",
    "Envelope",
    "HandlerAdapter",
    "LoginPassword",
    "ServerView",
    "Session",
    "StatusError",
    "UnsupportedError",
    "UnsupportedHookWarning",
    "build_server",
    "get_localhost",
    "parse_status",
]
