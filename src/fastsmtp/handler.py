"""The handler API: what an application overrides to decide and store mail.

Subclass ``Handler`` and define only the hooks you need. Each may be a
coroutine (``async def``) or a plain function; plain ones run in a thread
pool so they never block the event loop (write to disk there freely). A
hook returns ``None`` to accept, or a ``Reply`` to answer something else:
a 4xx/5xx reply refuses. An exception in a hook is logged with its
traceback and answered with ``451 4.3.0``; the server keeps running.

Hooks that a handler does not define cost nothing: the server looks them
up once, when it starts.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from .protocol.replies import Reply
from .session import Address, Envelope, Session

__all__ = ["HOOKS", "Address", "Envelope", "Handler", "Reply", "Session"]


class Handler:
    """Base class for handlers; every hook is optional.

    The hooks, in the order a session calls them::

        on_connect(session)                       -> Reply | None
        on_helo(session, host_name)               -> Reply | None
        on_mail(session, envelope, sender)        -> Reply | None   (sender: Address)
        on_rcpt(session, envelope, rcpt)          -> Reply | None   (rcpt: Address)
        on_data_start(session, envelope)          -> BodySink | None (opt-in streaming)
        on_message(session, envelope)             -> Reply | None   (envelope.content: bytes)
                                                     | [Reply | None, ...] (LMTP: one per rcpt)
        on_reset(session, envelope)               -> None           (RSET or a new EHLO;
                                                                     the abandoned envelope)
        on_disconnect(session)                    -> None

    and at any time ``on_vrfy(session, argument)`` / ``on_expn(session,
    argument)`` -> Reply | None for VRFY and EXPN (None: 252 / 502), and
    ``on_etrn(session, request)`` -> Reply | None for ETRN with the ``etrn``
    setting (``request``: ``protocol.events.Etrn``; None: 458; ``Relay`` has it).
    With ``atrn_domains``, ``on_atrn(session, request)`` -> Reply | None
    decides ATRN (None: 250, reversing) and ``on_turn(session, request,
    transport)`` then delivers as the client over the transport (``Relay``).

    While ``on_helo`` decides, ``session.extended`` says which command it
    is deciding: true for EHLO (and LHLO), false for HELO. A 250 it returns
    answers HELO; EHLO is always answered with the extensions enabled.

    ``on_mail`` and ``on_rcpt`` run before the address is added to the
    envelope: the envelope shows what was accepted so far. A 250 reply to
    DATA is sent only after ``on_message`` returns, so a handler that
    stores mail must have made it durable by then.

    The body: ``envelope.content`` is the message as ``bytes``. Past the
    ``spool_threshold`` setting the server keeps it in a temporary file
    instead, removed when ``on_message`` returns: ``envelope.open_content()``
    reads it as a file without loading it, while reading ``envelope.content``
    loads it into memory (kept there afterwards). ``envelope.body`` is the
    ``MessageBody`` (``size``, ``path``, ``open()``). To take the chunks as
    they arrive instead, return a sink (``write``/``close``/``abort``, see
    ``fastsmtp.body.BodySink``) from ``on_data_start``; it is called after
    the 354, ``write`` runs on the event loop (keep it quick), and
    ``on_message`` then finds it as ``envelope.sink`` with ``content`` and
    ``body`` left ``None``.

    Results of ``on_message``: ``None`` or one ``Reply`` answers for every
    recipient. In LMTP mode (the ``lmtp`` setting, RFC 2033) a sequence of
    ``Reply | None``, one per ``envelope.rcpt_tos`` entry in that order,
    gives each recipient its own reply (``None`` accepts). A sequence of the
    wrong length or type is a handler error (``451 4.3.0`` for everyone,
    logged). In SMTP mode, which has one reply after DATA, a sequence is
    taken when all its entries agree, and is a handler error when they differ.
    """


#: the hook names a handler may define
HOOKS = (
    "on_connect",
    "on_helo",
    "on_mail",
    "on_rcpt",
    "on_data_start",
    "on_message",
    "on_reset",
    "on_disconnect",
    "on_vrfy",
    "on_expn",
    "on_etrn",
    "on_atrn",
    "on_turn",
)

HookCall = Callable[..., Awaitable[Any]]


def bind_hooks(handler: object) -> dict[str, HookCall]:
    """Map each hook the handler defines to an awaitable-returning callable.

    Coroutine functions are called as they are; plain functions are wrapped
    to run in the loop's default thread pool.
    """
    bound: dict[str, HookCall] = {}
    for name in HOOKS:
        fn = getattr(handler, name, None)
        if fn is None:
            continue
        if not callable(fn):
            raise TypeError(f"{type(handler).__name__}.{name} must be callable")
        if inspect.iscoroutinefunction(fn):
            bound[name] = fn
        else:
            bound[name] = partial(_in_thread, fn)
    return bound


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, partial(fn, *args))
