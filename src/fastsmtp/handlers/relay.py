"""``Relay``: the MTA handler. Accepted mail goes into the durable queue, then on its way.

With ``queue_dir`` set, ``fastsmtp serve`` uses this handler. At RCPT it
answers aliases that forward off this host as the ``forwarding`` setting
says (RFC 5321 §3.4: ``250``, ``251 User not local; will forward to <...>``
or ``551 5.1.6``). At the end of DATA it

1. refuses a message with more ``Received:`` headers than
   ``max_received_headers`` (``554 5.4.6``, RFC 5321 §6.3: it is looping);
2. expands aliases (local recipients only), keeping each original address
   as the ORCPT of what it expands to (RFC 3461 §6.2);
3. enqueues the message (content with our ``Received:`` header first)
   under the id of the ``250`` reply, durable before that reply is sent;
4. wakes the ``Scheduler``, which delivers local recipients to the local
   handler (``maildir``...) and the rest by smarthost or MX.

The scheduler runs inside the server: ``server_started``/``server_stopping``
start and stop it with the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import ssl
from typing import TYPE_CHECKING, Any, Literal, cast

from ..config import ConfigError, Settings
from ..delivery.client import ClientOptions, ConnectFailed, SMTPClient
from ..delivery.mx import MXResolver
from ..delivery.queue import Queue
from ..delivery.router import Router
from ..delivery.scheduler import RetryPolicy, Scheduler
from ..handler import Handler
from ..protocol import replies as R
from ..protocol.events import Atrn, Etrn
from ..protocol.replies import Reply
from ..relay import RelayPolicy
from ..session import Address, Envelope, RecipientDSN, Session

if TYPE_CHECKING:
    from ..delivery.aliases import Aliases
    from ..server import Server

__all__ = ["Relay", "count_received"]

log = logging.getLogger("fastsmtp.delivery")


def count_received(content: bytes) -> int:
    """How many ``Received:`` header fields the message's header section holds."""
    end = content.find(b"\r\n\r\n")
    header = content[: end + 2] if end >= 0 else content
    count = 1 if header[:9].lower() == b"received:" else 0
    return count + header.lower().count(b"\r\nreceived:")


class Relay(Handler):
    """Queue every accepted message and deliver it from there (see the module docstring).

    ``local`` is the handler for local-domain mail. ``scheduler_options``
    are passed on to ``Scheduler`` (tests give ``now=`` a clock).
    """

    def __init__(self, settings: Settings, local: object, **scheduler_options: Any) -> None:
        if not settings.queue_dir:
            raise ConfigError("the relay handler needs queue_dir")
        self.settings = settings
        self.policy = RelayPolicy(settings.local_domains, settings.relay_networks)
        self.aliases: Aliases | None = None
        if settings.aliases:
            from ..delivery.aliases import Aliases

            self.aliases = Aliases.from_file(settings.aliases, local_domains=settings.local_domains)
        routes = dict(route.split("=", 1) for route in settings.smarthost_routes)
        self.atrn_owners = atrn_owners(settings.atrn_domains)
        self.router = Router(
            self.policy,
            MXResolver(settings.dns_servers),
            hostname=settings.hostname,
            delivery_port=settings.delivery_port,
            smarthost=settings.smarthost,
            smarthost_routes=routes,
            hold_domains=self.atrn_owners,
        )
        retry = RetryPolicy(
            settings.retry_first,
            settings.retry_max,
            settings.queue_lifetime,
            settings.delay_warning,
        )
        scheduler_options.setdefault("smarthost_options", smarthost_options(settings))
        # Last: every setting above is checked before the queue is opened (and locked).
        try:
            self.queue = Queue(settings.queue_dir)
        except (OSError, sqlite3.DatabaseError) as exc:
            raise ConfigError(
                f"cannot open the queue in queue_dir {settings.queue_dir!r}: {exc}"
            ) from None
        self._closed = False
        self._local = local
        self.scheduler = Scheduler(
            self.queue,
            self.router,
            local,
            hostname=settings.hostname,
            retry=retry,
            bounce_size_limit=settings.bounce_size_limit,
            **scheduler_options,
        )

    # --- lifecycle (called by Server.start / Server.close) ---------------------
    async def server_started(self, server: Server) -> None:
        """Learn our listening addresses (loop detection) and start delivering."""
        # A wildcard listener resolves our host name: not on the event loop.
        listening = server.addresses + server.implicit_tls_addresses
        await asyncio.to_thread(self.router.set_listening, listening)
        self.scheduler.start()

    async def server_stopping(self) -> None:
        """Stop delivering (what is in flight stays queued) and close the queue, once."""
        if self._closed:
            return
        self._closed = True
        await self.scheduler.stop()
        self.queue.close()
        stopping = getattr(self._local, "server_stopping", None)  # e.g. LMTPForward's connection
        if stopping is not None:
            await stopping()

    # --- hooks ---------------------------------------------------------------------
    async def on_rcpt(self, session: Session, envelope: Envelope, rcpt: Address) -> Reply | None:
        """An alias forwarding off this host: 250, 251 or 551 as ``forwarding`` says."""
        expanded = self._expand(rcpt.address)
        if expanded is None:
            return None
        remote = [a for a in expanded if not self.policy.is_local(a)]
        if not remote or self.settings.forwarding == "accept":
            return None
        if self.settings.forwarding == "refuse":
            log.info("%s: forwarding <%s> refused", session.id, rcpt.address)
            return R.FORWARDING_REFUSED
        return R.will_forward(">, <".join(remote))

    async def on_vrfy(self, session: Session, argument: str) -> Reply | None:
        """With ``vrfy_expn``: an alias's addresses; otherwise (and for others) 252."""
        return self._query(argument, None)

    async def on_expn(self, session: Session, argument: str) -> Reply | None:
        """With ``vrfy_expn``: an alias's addresses, else 550; without it 502."""
        return self._query(argument, R.NOT_A_LIST)

    def _query(self, argument: str, missing: Reply | None) -> Reply | None:
        if not self.settings.vrfy_expn:
            return None  # the defaults: 252 and 502 (RFC 5321 §7.3, privacy)
        # "carol", "<carol@here.test>" or "Carol <carol@here.test>"
        address = argument.rpartition("<")[2].partition(">")[0] or argument.strip()
        if "@" not in address and self.policy.local_domains:
            address = f"{address}@{min(self.policy.local_domains)}"
        expanded = self._expand(address)
        return R.expansion(expanded) if expanded else missing

    async def on_etrn(self, session: Session, request: Etrn) -> Reply:
        """ETRN (RFC 1985): retry the deferred mail of a domain now.

        Only for clients that may relay (AUTH or ``relay_networks``), as
        Postfix does by default: anyone else could make this server hammer
        a destination, and learn whether mail waits for a domain.
        """
        if not self.policy.may_relay(session):
            log.info("%s: ETRN %s refused for %s", session.id, request.node, session.peer)
            return R.etrn_not_allowed(request.node)
        if request.kind == "queue":  # the queue has no named parts
            return R.etrn_unable(request.node)
        subdomains = request.kind == "subdomains"
        now = self.scheduler.now()
        count = await asyncio.to_thread(self.queue.flush, request.name, now, subdomains=subdomains)
        log.info("%s: ETRN %s: %d deferred recipients due now", session.id, request.node, count)
        if not count:
            return R.etrn_nothing(request.node)
        self.scheduler.wake()
        return R.etrn_started(request.node)

    async def on_atrn(self, session: Session, request: Atrn) -> Reply | None:
        """ATRN (RFC 2645): 250 when the client owns the domains and mail waits for them."""
        domains = self._atrn_domains(session, request)
        if not domains:
            log.info("%s: ATRN %s refused for %s", session.id, request.domains, session.auth)
            return R.ATRN_REFUSED
        if not await asyncio.to_thread(self.queue.holds, domains):
            return R.ATRN_NO_MAIL
        return None

    async def on_turn(self, session: Session, request: Atrn, transport: asyncio.Transport) -> None:
        """Deliver the held mail as the SMTP client over the turned-around connection."""
        domains = self._atrn_domains(session, request)
        options = ClientOptions(
            helo_name=self.settings.hostname,
            tls="none",  # the session's own TLS (if any) goes on underneath
            command_timeout=self.settings.command_timeout,
        )
        try:
            client = await SMTPClient.over(transport, session.host_name or "atrn-client", options)
        except ConnectFailed as exc:
            log.info("%s: ATRN: the client did not take over: %s", session.id, exc)
            return
        try:
            await self.scheduler.deliver_held(client, domains)
            with contextlib.suppress(ConnectFailed, OSError, TimeoutError):
                await client.quit()
        finally:
            await client.close()

    def _atrn_domains(self, session: Session, request: Atrn) -> tuple[str, ...]:
        """The domains asked for (all the client's if none), or () when one is not its own."""
        owned = [d for d, user in self.atrn_owners.items() if user == session.auth]
        asked = request.domains or tuple(sorted(owned))
        return asked if session.auth and set(asked) <= set(owned) else ()

    def on_message(self, session: Session, envelope: Envelope) -> Reply | None:
        """Refuse loops; expand aliases; enqueue durably (runs in the thread pool)."""
        content = envelope.content or b""
        hops = count_received(content)
        if hops > self.settings.max_received_headers:
            log.warning(
                "%s: refused, %d Received: headers (limit %d): mail loop?",
                envelope.queue_id,
                hops,
                self.settings.max_received_headers,
            )
            return R.TOO_MANY_HOPS
        recipients: list[str] = []
        dsns: list[RecipientDSN] = []
        for address, dsn in zip(envelope.rcpt_tos, _dsns(envelope), strict=True):
            expanded = self._expand(address)
            if expanded is None:
                recipients.append(address)
                dsns.append(dsn)
                continue
            # RFC 3461 §6.2: the original recipient travels on as ORCPT.
            orcpt = dsn.orcpt or ("rfc822", address)
            for target in expanded:
                recipients.append(target)
                dsns.append(RecipientDSN(dsn.notify, orcpt))
        if not recipients:  # an alias to nothing (e.g. "nobody: /dev/null"-like)
            return None
        try:
            queue_id = self.queue.enqueue(
                envelope.mail_from or "",
                recipients,
                content,
                rcpt_dsn=dsns,
                dsn_ret=envelope.dsn_ret,
                dsn_envid=envelope.dsn_envid,
                smtputf8=envelope.smtputf8,
                body_type=envelope.body_type,
                queue_id=envelope.queue_id,
            )
        except OSError as exc:  # a full disk: nothing stored, the client retries
            log.error("%s: cannot queue the message (451): %s", envelope.queue_id, exc)
            return R.HANDLER_ERROR
        self.scheduler.wake()
        return R.queued(queue_id)

    def _expand(self, address: str) -> list[str] | None:
        if self.aliases is None or not self.policy.is_local(address):
            return None
        return self.aliases.expand(address)


def _dsns(envelope: Envelope) -> list[RecipientDSN]:
    if len(envelope.rcpt_dsn) == len(envelope.rcpt_tos):
        return envelope.rcpt_dsn
    return [RecipientDSN()] * len(envelope.rcpt_tos)


def atrn_owners(entries: tuple[str, ...]) -> dict[str, str]:
    """``atrn_domains`` (``DOMAIN=USER`` each) as domain -> the user who may ATRN it."""
    owners: dict[str, str] = {}
    for entry in entries:
        domain, sep, user = entry.partition("=")
        if not sep or not domain.strip() or not user.strip():
            raise ConfigError(f"atrn_domains: {entry!r} is not DOMAIN=USER")
        owners[domain.strip().lower().rstrip(".")] = user.strip()
    return owners


def smarthost_options(settings: Settings) -> ClientOptions:
    """How to talk to the smarthost: its TLS policy and CA, and AUTH from the auth file."""
    context = None
    if settings.smarthost_ca_file:
        try:
            context = ssl.create_default_context(cafile=settings.smarthost_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load smarthost_ca_file {settings.smarthost_ca_file!r}: {exc}"
            ) from None
    auth = read_auth_file(settings.smarthost_auth_file) if settings.smarthost_auth_file else None
    tls = cast(Literal["none", "opportunistic", "required"], settings.smarthost_tls)
    return ClientOptions(helo_name=settings.hostname, tls=tls, tls_context=context, auth=auth)


def read_auth_file(path: str) -> tuple[str, str]:
    """``USER:PASSWORD`` from the first line of ``path`` (a secret kept out of argv and TOML)."""
    try:
        with open(path, encoding="utf-8") as f:
            if os.name == "posix" and os.fstat(f.fileno()).st_mode & 0o077:
                log.warning("smarthost_auth_file %s is readable by others: chmod 600 it", path)
            line = f.readline().rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"cannot read smarthost_auth_file {path!r}: {exc.strerror}") from None
    user, sep, password = line.partition(":")
    if not sep or not user:
        raise ConfigError(f"smarthost_auth_file {path!r} must hold USER:PASSWORD on its first line")
    return user, password
