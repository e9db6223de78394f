"""The scheduler: takes due mail from the queue and delivers it, under a running server.

Theory of operation. One task polls ``Queue.due(now)`` (every
``poll_interval`` seconds, and at once when ``wake()`` is called: after an
enqueue, or after a test moved its clock). Each due recipient that is not
already being delivered is routed (``Router.decide``) and the recipients
are grouped per destination: ``Local``, one ``Smarthost``, or one MX
domain. Each destination gets a delivery task (at most ``concurrency`` at
a time), so a slow remote host never holds up local mail.

A remote delivery tries the destination's addresses in order
(``Router.targets``), one connection per address carrying every message
for that destination. A connection failure, or a 4xx for some recipients,
moves those recipients on to the next address (RFC 5321 §5.1); what the
last address said is recorded. A DNS or loop failure (``DeliveryError``)
is recorded for every recipient of the destination without connecting.

Recording (``Queue.record``): 2xx delivered, 5xx failed, 4xx deferred to
``now + min(retry_first * 2**attempts, retry_max)``; a recipient still
undelivered ``queue_lifetime`` after arrival fails instead (5.4.7). After
each destination, every message it touched is settled: failures are
reported to the sender (``Queue.report``, an RFC 3464 bounce queued from
``<>`` like any other mail, so a local sender gets it in the Maildir),
recipients deferred past ``delay_warning`` get a delay notice when their
NOTIFY asks for one, those delivered with NOTIFY=SUCCESS that ``record``
left owed a success notice get it, and a finished message is removed.
Each report is queued in the commit that settles its recipients, and a
message is settled again each time it is delivered to or found finished:
after a crash, what was owed is still reported, once.

Local recipients go through the queue too, to the local handler's
``on_message`` (e.g. ``Maildir``), as one envelope per message: one durable
step at DATA (the enqueue) serves local, aliased and remote recipients
alike, and a local handler's 4xx is retried like a remote one.

Every queue call blocks (SQLite, fsync), so it runs in a thread; ``now``
is injectable so that retry and expiry tests take milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .._outcome import BadOutcome, message_replies
from ..handler import bind_hooks
from ..protocol import replies as R
from ..protocol.replies import Reply
from ..session import Envelope, Session
from ..wire import xtext_encode
from .client import ClientOptions, ConnectFailed, RecipientResult, SMTPClient
from .mx import DeliveryError
from .queue import Queue, QueuedMessage, QueuedRecipient
from .router import MX, Hold, Local, Route, Router, Smarthost, Target, recipient_domain

__all__ = ["RetryPolicy", "Scheduler"]

log = logging.getLogger("fastsmtp.delivery")

Batch = list[tuple[QueuedMessage, list[QueuedRecipient]]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to try again and when to give up (the Settings of the same names)."""

    retry_first: float = 300.0
    retry_max: float = 4000.0
    queue_lifetime: float = 5 * 86400.0
    delay_warning: float = 4 * 3600.0

    def next_attempt(self, attempts: int, now: float) -> float:
        """Exponential backoff: ``retry_first`` after the first failure, doubling, capped."""
        return now + min(self.retry_first * 2.0 ** min(attempts, 32), self.retry_max)


class Scheduler:
    """Deliver what the queue says is due; see the module docstring.

    ``local`` is the local handler (its ``on_message`` stores local mail).
    ``mx_options`` is used for MX delivery and ``smarthost_options`` for
    smarthosts. ``now`` returns the time in epoch seconds.
    """

    def __init__(
        self,
        queue: Queue,
        router: Router,
        local: object | None,
        *,
        hostname: str,
        retry: RetryPolicy | None = None,
        mx_options: ClientOptions | None = None,
        smarthost_options: ClientOptions | None = None,
        now: Callable[[], float] = time.time,
        poll_interval: float = 5.0,
        concurrency: int = 20,
        bounce_size_limit: int = 0,
    ) -> None:
        self.queue = queue
        self.router = router
        self.hostname = hostname
        self.retry = retry or RetryPolicy()
        self.mx_options = mx_options or ClientOptions(helo_name=hostname)
        self.smarthost_options = smarthost_options or ClientOptions(
            helo_name=hostname, tls="required"
        )
        self.now = now
        self.poll_interval = poll_interval
        self.bounce_size_limit = bounce_size_limit
        hook = bind_hooks(local).get("on_message") if local is not None else None
        self._local_hook = hook
        self._limit = asyncio.Semaphore(concurrency)
        self._inflight: set[tuple[str, str]] = set()
        self._settling = threading.Lock()
        self._deliveries: set[asyncio.Task[None]] = set()
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------
    def start(self) -> None:
        """Start polling in the running loop."""
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._task = asyncio.ensure_future(self._run())

    async def stop(self, grace: float = 5.0) -> None:
        """Stop polling; let deliveries in progress finish for ``grace`` seconds.

        What is still running then is cancelled and stays queued: a
        recipient whose ``250`` came just before may be delivered twice
        (RFC 5321 §6.1), so the grace period keeps that window small.
        """
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._deliveries:
            await asyncio.wait(list(self._deliveries), timeout=grace)
        tasks = list(self._deliveries)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def wake(self) -> None:
        """Poll now (safe from any thread: the relay handler calls it after enqueue)."""
        loop, wakeup = self._loop, self._wakeup
        if loop is None or wakeup is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wakeup.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(wakeup.set)

    async def run_pending(self, rounds: int = 10) -> None:
        """Deliver what is due, and what that queues (bounces), waiting for all of it.

        For tests and tools; the server's own loop is ``start``. At most
        ``rounds`` polls, so a message that keeps queueing others ends.
        """
        for _ in range(rounds):
            if not await self.poll():
                return
            while self._deliveries:
                await asyncio.gather(*list(self._deliveries), return_exceptions=True)

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            self._wakeup.clear()
            try:
                progressed = await self.poll()
                delay = await self._idle_time(progressed)
            except Exception:  # a broken queue must not end delivery for good
                log.exception("delivery: polling the queue failed")
                delay = self.poll_interval
            # Not wait_for: on 3.11 it swallows a cancel (stop) that comes as
            # the wake-up does, and the loop would run on (CPython gh-86296).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wakeup.wait()

    async def _idle_time(self, progressed: bool) -> float:
        """Seconds until the next retry is due, at most ``poll_interval``.

        The poll interval still bounds the sleep: ``fastsmtp queue flush``
        from another process changes only the index. Something due now is
        polled again at once only if this poll got somewhere and nothing is
        in flight (in-flight recipients look due; their end wakes the loop).
        """
        due_at = await asyncio.to_thread(self.queue.next_due)
        if due_at is None:
            return self.poll_interval
        delay = min(max(due_at - self.now(), 0.0), self.poll_interval)
        if delay == 0.0 and (self._deliveries or not progressed):
            return self.poll_interval
        return delay

    # --- one poll ---------------------------------------------------------------
    async def poll(self) -> bool:
        """Start a delivery task per destination for what is due and not in flight.

        True when it started or settled anything.
        """
        now = self.now()
        messages = await asyncio.to_thread(self.queue.due, now)
        batches: dict[Route, Batch] = {}
        for message in messages:
            if message.finished:
                # Bounced by an admin, or a crash after the last record.
                if not any(key[0] == message.id for key in self._inflight):
                    await asyncio.to_thread(self._settle, message.id)
                continue
            groups: dict[Route, list[QueuedRecipient]] = {}
            for rcpt in message.recipients:
                key = (message.id, rcpt.address)
                if not rcpt.open or (rcpt.next_attempt or 0.0) > now or key in self._inflight:
                    continue
                self._inflight.add(key)
                groups.setdefault(self.router.decide(rcpt.address), []).append(rcpt)
            for route, rcpts in groups.items():
                batches.setdefault(route, []).append((message, rcpts))
        for route, batch in batches.items():
            task = asyncio.ensure_future(self._deliver(route, batch))
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)
        return bool(messages)

    async def _deliver(self, route: Route, batch: Batch) -> None:
        outcomes: dict[tuple[str, str], RecipientResult] = {}
        try:
            async with self._limit:
                try:
                    if isinstance(route, Local):
                        await self._deliver_local(batch, outcomes)
                    elif isinstance(route, Hold):  # deferred until its owner says ATRN
                        _answer_all(batch, outcomes, R.HELD_FOR_ATRN)
                    else:
                        await self._deliver_remote(route, batch, outcomes)
                except Exception as exc:  # e.g. an admin deleted the message meanwhile
                    log.exception("delivery via %s failed", route)
                    for message, rcpts in batch:
                        for r in rcpts:
                            result = _result(r.address, R.HANDLER_ERROR, None, exc)
                            outcomes.setdefault((message.id, r.address), result)
            await asyncio.to_thread(self._record, route, batch, outcomes)
        except Exception:
            log.exception("delivery: recording results for %s failed", route)
        finally:
            for message, rcpts in batch:
                self._inflight.difference_update((message.id, r.address) for r in rcpts)
        self.wake()  # bounces were queued, or more may be due

    # --- local -----------------------------------------------------------------
    async def _deliver_local(
        self, batch: Batch, outcomes: dict[tuple[str, str], RecipientResult]
    ) -> None:
        for message, rcpts in batch:
            content = await asyncio.to_thread(self.queue.content_path(message.id).read_bytes)
            envelope = Envelope(
                mail_from=message.mail_from,
                rcpt_tos=[r.address for r in rcpts],
                smtputf8=message.smtputf8,
                body_type=message.body_type,
                content=content,
                queue_id=message.id,
            )
            result: object = None
            if self._local_hook is not None:
                try:
                    result = await self._local_hook(Session(id=message.id), envelope)
                except Exception:
                    log.exception("%s: local delivery failed", message.id)
                    result = R.HANDLER_ERROR
            try:  # None, one Reply, or one Reply | None per recipient (LMTP-style)
                replies = message_replies(result, len(rcpts), lmtp=True, default=R.OK)
            except BadOutcome as exc:
                log.error("%s: local handler %s (451 for all)", message.id, exc)
                replies = [R.HANDLER_ERROR] * len(rcpts)
            for r, reply in zip(rcpts, replies, strict=True):
                outcomes[message.id, r.address] = _result(r.address, reply, None)

    # --- remote ------------------------------------------------------------------
    async def _deliver_remote(
        self,
        route: Smarthost | MX,
        batch: Batch,
        outcomes: dict[tuple[str, str], RecipientResult],
    ) -> None:
        try:
            targets = await self.router.targets(route)
        except DeliveryError as exc:
            log.info("delivery to %s: %s", route, exc)
            for message, rcpts in batch:
                for r in rcpts:
                    outcomes[message.id, r.address] = _result(
                        r.address, exc.reply, None, exc.detail
                    )
            return
        options = self.smarthost_options if isinstance(route, Smarthost) else self.mx_options
        remaining = batch
        for target in targets:
            if not remaining:
                break
            remaining = await self._deliver_to(target, options, remaining, outcomes)

    async def _deliver_to(
        self,
        target: Target,
        options: ClientOptions,
        batch: Batch,
        outcomes: dict[tuple[str, str], RecipientResult],
    ) -> Batch:
        """Send ``batch`` over one connection to ``target``; return what to try on the next."""
        try:
            # By address (our resolver found it), named for TLS and for the results.
            named = target.name != target.address and not target.name.startswith("[")
            client = await SMTPClient.connect(
                target.address, target.port, options, server_name=target.name if named else None
            )
        except (ConnectFailed, OSError, ssl.SSLError, TimeoutError) as exc:
            log.info("delivery: %s[%s]:%d: %s", target.name, target.address, target.port, exc)
            said = exc.reply if isinstance(exc, ConnectFailed) else None
            for message, rcpts in batch:
                for r in rcpts:
                    outcomes[message.id, r.address] = (
                        RecipientResult(r.address, said.code, said.enhanced, said.text, target.name)
                        if said is not None
                        else _result(r.address, R.CONNECT_FAILED, target.name, exc)
                    )
            return batch
        try:
            retry_next = await self._send_all(client, batch, outcomes)
            with contextlib.suppress(ConnectFailed, OSError, ssl.SSLError, TimeoutError):
                await client.quit()
        finally:
            await client.close()
        return retry_next

    async def _send_all(
        self, client: SMTPClient, batch: Batch, outcomes: dict[tuple[str, str], RecipientResult]
    ) -> Batch:
        """Send every message of ``batch`` over ``client``; return the deferred part."""
        retry_next: Batch = []
        for message, rcpts in batch:
            # send() answers every recipient, even when the connection dies.
            results = await self._send(client, message, rcpts)
            deferred = []
            for r, result in zip(rcpts, results, strict=True):
                outcomes[message.id, r.address] = result
                if result.status == "deferred":
                    deferred.append(r)
            if deferred:
                retry_next.append((message, deferred))
        return retry_next

    async def deliver_held(self, client: SMTPClient, domains: Sequence[str]) -> None:
        """ATRN (RFC 2645): send the open mail of ``domains`` over ``client``, and record it.

        ``client`` is the connection its owner turned around. Held mail
        goes nowhere else (its route is ``Hold``), so even recipients the
        poll is recording as held just now are sent: whichever record comes
        last finds a delivered recipient closed and leaves it so.
        """
        wanted = frozenset(domains)
        batch: Batch = []
        for message in await asyncio.to_thread(self.queue.list):
            rcpts = [
                r for r in message.recipients if r.open and recipient_domain(r.address) in wanted
            ]
            if rcpts:
                batch.append((message, rcpts))
        keys = {(m.id, r.address) for m, rcpts in batch for r in rcpts}
        self._inflight |= keys
        outcomes: dict[tuple[str, str], RecipientResult] = {}
        try:
            await self._send_all(client, batch, outcomes)
            route = Hold(",".join(sorted(wanted)))
            await asyncio.to_thread(self._record, route, batch, outcomes)
        finally:
            self._inflight -= keys
        self.wake()  # notices were queued

    async def _send(
        self, client: SMTPClient, message: QueuedMessage, rcpts: Sequence[QueuedRecipient]
    ) -> list[RecipientResult]:
        mail_params: dict[str, str | None] = {}
        if message.dsn_ret:
            mail_params["RET"] = message.dsn_ret
        if message.dsn_envid:
            mail_params["ENVID"] = message.dsn_envid
        # The client streams the spool file in chunks, reading it in a thread.
        with open(self.queue.content_path(message.id), "rb") as content:
            return await client.send(
                message.mail_from,
                [r.address for r in rcpts],
                content,
                mail_params=mail_params,
                rcpt_params=[_rcpt_params(r) for r in rcpts],
                smtputf8=message.smtputf8,
                body_type=message.body_type,
            )

    # --- results (in a thread: the queue blocks) ------------------------------------
    def _record(
        self, route: Route, batch: Batch, outcomes: dict[tuple[str, str], RecipientResult]
    ) -> None:
        now = self.now()
        where = "local" if isinstance(route, Local) else str(route)
        for message, rcpts in batch:
            expired = now >= message.created + self.retry.queue_lifetime
            for r in rcpts:
                result = outcomes.get((message.id, r.address))
                if result is None:  # no address was left to try
                    result = _result(r.address, R.CONNECT_FAILED, None)
                status = result.status
                code, enhanced, text = result.code, result.enhanced, result.text
                if status == "deferred" and expired:
                    status = "failed"
                    code, enhanced = R.DELIVERY_EXPIRED.code, R.DELIVERY_EXPIRED.enhanced
                    text = f"{R.DELIVERY_EXPIRED.text}; last reply: {result.text}"
                log.info(
                    "%s: to=<%s> via=%s host=%s status=%s (%s %s %s)",
                    message.id,
                    r.address,
                    where,
                    result.remote_host or "-",
                    status,
                    code,
                    enhanced or "",
                    " ".join(text.split()),
                )
                self.queue.record(
                    message.id,
                    r.address,
                    status,
                    code=code,
                    enhanced=enhanced,
                    text=text,
                    remote_host=result.remote_host,
                    next_attempt=self.retry.next_attempt(r.attempts, now),
                    now=now,
                    dsn_relayed=result.dsn_relayed,
                )
            self._settle(message.id)

    def _settle(self, queue_id: str) -> None:
        """Report failures, due delay notices, owed success notices; remove once finished.

        One at a time: two destinations of one message finishing together
        must not both report the same failed recipient.
        """
        with self._settling:
            self._settle_locked(queue_id)

    def _settle_locked(self, queue_id: str) -> None:
        message = self.queue.get(queue_id)
        if message is None:
            return
        now = self.now()
        failed = [r for r in message.recipients if r.status == "failed" and not r.failure_notified]
        if failed:
            self.queue.report(
                message,
                failed,
                "failure",
                reporting_mta=self.hostname,
                now=now,
                size_limit=self.bounce_size_limit,
            )
        warn = self.retry.delay_warning
        if warn > 0 and now >= message.created + warn:
            late = [
                r for r in message.recipients if r.status == "deferred" and not r.delay_notified
            ]
            if late:
                self.queue.report(
                    message,
                    late,
                    "delay",
                    reporting_mta=self.hostname,
                    now=now,
                    retry_until=message.created + self.retry.queue_lifetime,
                )
        owed = [r for r in message.recipients if r.success_owed]
        if owed:  # NOTIFY=SUCCESS (RFC 3461 §4.1); report() checks who asked
            self.queue.report(message, owed, "success", reporting_mta=self.hostname, now=now)
        if message.finished:  # after the reports: nothing owed is removed unreported
            self.queue.remove(queue_id)


def _answer_all(
    batch: Batch, outcomes: dict[tuple[str, str], RecipientResult], reply: Reply
) -> None:
    for message, rcpts in batch:
        for r in rcpts:
            outcomes[message.id, r.address] = _result(r.address, reply, None)


def _result(
    recipient: str, reply: Reply, host: str | None, detail: object = None
) -> RecipientResult:
    text = f"{reply.text}: {detail}" if detail else reply.text
    return RecipientResult(recipient, reply.code, reply.enhanced, text, host)


def _rcpt_params(recipient: QueuedRecipient) -> dict[str, str | None]:
    """NOTIFY and ORCPT passed on to the next hop (RFC 3461 §6.2)."""
    params: dict[str, str | None] = {}
    if recipient.dsn.notify:
        params["NOTIFY"] = ",".join(sorted(recipient.dsn.notify))
    if recipient.dsn.orcpt:
        addr_type, address = recipient.dsn.orcpt
        params["ORCPT"] = f"{addr_type};{xtext_encode(address)}"
    return params
