"""The scheduler against real parts: dnsmasq for MX records, fastsmtp servers as the MXs.

Each test builds the ``Relay`` handler (queue, router, scheduler) as ``fastsmtp
serve`` would, with a ``Clock`` for ``now``: retries and expiry move the clock
instead of waiting. ``run_pending`` delivers everything due and waits for it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from dnsmasq import DNSMasq
from peers import Clock, MXServers, delivery_status, free_port

from fastsmtp.config import Settings
from fastsmtp.handler import Handler
from fastsmtp.handlers.maildir import Maildir
from fastsmtp.handlers.relay import Relay
from fastsmtp.protocol.replies import Reply
from fastsmtp.session import Envelope, RecipientDSN, Session
from fastsmtp.testing import parse_message, running

pytestmark = pytest.mark.interop

HOSTNAME = "mta.here.test"
MESSAGE = b"From: alice@here.test\r\nTo: bob@a.test\r\nSubject: hello\r\n\r\nHi Bob.\r\n"
StartDNS = Callable[..., DNSMasq]
StartMX = Callable[..., MXServers]


def two_mx_dns(dnsmasq: StartDNS, **extra: Any) -> DNSMasq:
    """a.test: MX 10 mx1.a.test (127.0.0.2), MX 20 mx2.a.test (127.0.0.3)."""
    return dnsmasq(
        mx={"a.test": [("mx1.a.test", 10), ("mx2.a.test", 20)], **extra.pop("mx", {})},
        hosts={"mx1.a.test": ["127.0.0.2"], "mx2.a.test": ["127.0.0.3"], **extra.pop("hosts", {})},
        **extra,
    )


def make_relay(tmp_path: Path, dns: DNSMasq, port: int, clock: Clock, **settings: Any) -> Relay:
    config = Settings(
        hostname=HOSTNAME,
        queue_dir=str(tmp_path / "queue"),
        maildir=str(tmp_path / "Maildir"),
        local_domains=("here.test",),
        dns_servers=(dns.address,),
        delivery_port=port,
        **settings,
    )
    assert config.maildir is not None
    return Relay(config, Maildir(config.maildir), now=clock)


def run(relay: Relay, body: Callable[[], Awaitable[None]]) -> None:
    """Run ``body`` in one loop, bounded, then close the relay."""

    async def main() -> None:
        try:
            await asyncio.wait_for(body(), 30)
        finally:
            await relay.server_stopping()

    asyncio.run(main())


def maildir_messages(tmp_path: Path) -> list[EmailMessage]:
    new = tmp_path / "Maildir" / "new"
    return [parse_message(p.read_bytes()) for p in sorted(new.iterdir())]


def enqueue(relay: Relay, clock: Clock, *rcpts: str, **kwargs: Any) -> str:
    return relay.queue.enqueue(
        "alice@here.test", list(rcpts or ["bob@a.test"]), MESSAGE, now=clock(), **kwargs
    )


def test_delivers_to_the_best_mx(
    tmp_path: Path, dnsmasq: StartDNS, mx_servers: StartMX, clock: Clock
) -> None:
    mx = mx_servers("127.0.0.2", "127.0.0.3")
    relay = make_relay(tmp_path, two_mx_dns(dnsmasq), mx.port, clock)

    async def body() -> None:
        enqueue(relay, clock)
        await relay.scheduler.run_pending()

    run(relay, body)
    [envelope] = mx["127.0.0.2"].envelopes
    assert (envelope.mail_from, envelope.rcpt_tos) == ("alice@here.test", ["bob@a.test"])
    assert envelope.content is not None and MESSAGE in envelope.content
    assert mx["127.0.0.3"].envelopes == []
    assert not (tmp_path / "queue" / "spool").exists() or not any(
        (tmp_path / "queue" / "spool").iterdir()
    )


def test_falls_back_to_the_next_mx_when_the_best_does_not_answer(
    tmp_path: Path, dnsmasq: StartDNS, mx_servers: StartMX, clock: Clock
) -> None:
    mx = mx_servers("127.0.0.3")  # nothing listens on 127.0.0.2
    relay = make_relay(tmp_path, two_mx_dns(dnsmasq), mx.port, clock)

    async def body() -> None:
        enqueue(relay, clock)
        await relay.scheduler.run_pending()
        assert relay.queue.list() == []

    run(relay, body)
    assert len(mx["127.0.0.3"].envelopes) == 1


def test_a_4xx_from_the_best_mx_moves_on_to_the_next(
    tmp_path: Path, dnsmasq: StartDNS, mx_servers: StartMX, clock: Clock
) -> None:
    mx = mx_servers("127.0.0.2", "127.0.0.3")
    mx["127.0.0.2"].fail_next_rcpt(Reply(451, "4.3.0", "Try again later"))
    relay = make_relay(tmp_path, two_mx_dns(dnsmasq), mx.port, clock)

    async def body() -> None:
        enqueue(relay, clock)
        await relay.scheduler.run_pending()

    run(relay, body)
    assert mx["127.0.0.2"].envelopes == []
    assert len(mx["127.0.0.3"].envelopes) == 1


def test_retries_after_a_4xx_with_exponential_backoff(
    tmp_path: Path, dnsmasq: StartDNS, mx_servers: StartMX, clock: Clock
) -> None:
    mx = mx_servers("127.0.0.2")
    dns = dnsmasq(mx={"a.test": [("mx1.a.test", 10)]}, hosts={"mx1.a.test": ["127.0.0.2"]})
    mx["127.0.0.2"].fail_next_rcpt(Reply(451, "4.3.0", "Greylisted"), times=2)
    relay = make_relay(tmp_path, dns, mx.port, clock, retry_first=300.0, retry_max=4000.0)

    async def body() -> None:
        queue_id = enqueue(relay, clock)
        start = clock()
        await relay.scheduler.run_pending()
        [rcpt] = relay.queue.get(queue_id).recipients  # type: ignore[union-attr]
        assert (rcpt.status, rcpt.last_code, rcpt.next_attempt) == ("deferred", 451, start + 300)
        assert rcpt.remote_host == "mx1.a.test"
        clock.advance(299)
        await relay.scheduler.run_pending()  # not due yet: nothing tried
        assert relay.queue.get(queue_id).recipients[0].attempts == 1  # type: ignore[union-attr]
        clock.advance(1)
        await relay.scheduler.run_pending()
        [rcpt] = relay.queue.get(queue_id).recipients  # type: ignore[union-attr]
        assert (rcpt.attempts, rcpt.next_attempt) == (2, start + 300 + 600)  # doubled
        clock.advance(600)
        await relay.scheduler.run_pending()
        assert relay.queue.get(queue_id) is None

    run(relay, body)
    assert len(mx["127.0.0.2"].envelopes) == 1


def test_a_5xx_bounces_to_the_local_sender_with_a_parseable_dsn(
    tmp_path: Path, dnsmasq: StartDNS, mx_servers: StartMX, clock: Clock
) -> None:
    mx = mx_servers("127.0.0.2", "127.0.0.3")
    mx["127.0.0.2"].fail_next_rcpt(Reply(550, "5.1.1", "No such user here"))
    relay = make_relay(tmp_path, two_mx_dns(dnsmasq), mx.port, clock)

    async def body() -> None:
        enqueue(relay, clock, rcpt_dsn=[RecipientDSN(orcpt=("rfc822", "bob@a.test"))])
        await relay.scheduler.run_pending()
        assert relay.queue.list() == []

    run(relay, body)
    assert mx["127.0.0.3"].envelopes == [], "a 5xx must not be tried on the next MX"
    [bounce] = maildir_messages(tmp_path)
    assert bounce["Return-Path"] == "<>"
    assert bounce["To"] == "alice@here.test"
    blocks = delivery_status(bounce)
    assert blocks[0]["Reporting-MTA"] == f"dns; {HOSTNAME}"
    rcpt = blocks[1]
    assert rcpt["Final-Recipient"] == "rfc822; bob@a.test"
    assert rcpt["Original-Recipient"] == "rfc822; bob@a.test"
    assert (rcpt["Action"], rcpt["Status"]) == ("failed", "5.1.1")
    assert rcpt["Remote-MTA"] == "dns; mx1.a.test"
    assert "550 5.1.1 No such user here" in rcpt["Diagnostic-Code"]


@pytest.mark.parametrize("limit", [0, 2_000])
def test_a_big_bounced_message_comes_back_as_its_header_only(
    tmp_path: Path, dnsmasq: StartDNS, mx_servers: StartMX, clock: Clock, limit: int
) -> None:
    mx = mx_servers("127.0.0.2", "127.0.0.3")
    mx["127.0.0.2"].fail_next_rcpt(Reply(550, "5.1.1", "No such user here"))
    relay = make_relay(tmp_path, two_mx_dns(dnsmasq), mx.port, clock, bounce_size_limit=limit)
    big = MESSAGE + b"attachment line of the big message\r\n" * 100

    async def body() -> None:
        relay.queue.enqueue("alice@here.test", ["bob@a.test"], big, now=clock())
        await relay.scheduler.run_pending()

    run(relay, body)
    [bounce] = maildir_messages(tmp_path)
    human, _status, returned = bounce.get_payload()
    raw = bounce.as_bytes()
    if limit:
        assert returned.get_content_type() == "text/rfc822-headers"
        assert b"attachment line" not in raw
        assert "larger than 2000 octets" in human.get_payload(decode=True).decode()
    else:
        assert returned.get_content_type() == "message/rfc822"
        assert raw.count(b"attachment line") == 100


def test_undeliverable_mail_bounces_after_the_queue_lifetime(
    tmp_path: Path, dnsmasq: StartDNS, mx_servers: StartMX, clock: Clock
) -> None:
    mx = mx_servers("127.0.0.9")  # only for a port: the MXs of a.test do not listen
    relay = make_relay(
        tmp_path, two_mx_dns(dnsmasq), mx.port, clock, queue_lifetime=3600.0, delay_warning=0.0
    )

    async def body() -> None:
        queue_id = enqueue(relay, clock)
        await relay.scheduler.run_pending()
        [rcpt] = relay.queue.get(queue_id).recipients  # type: ignore[union-attr]
        assert (rcpt.status, rcpt.last_enhanced) == ("deferred", "4.4.1")
        clock.advance(3600)
        await relay.scheduler.run_pending()
        assert relay.queue.list() == []

    run(relay, body)
    [bounce] = maildir_messages(tmp_path)
    [_, rcpt] = delivery_status(bounce)
    assert (rcpt["Action"], rcpt["Status"]) == ("failed", "5.4.7")


def test_delay_notice_when_the_sender_asked_for_it(
    tmp_path: Path, dnsmasq: StartDNS, mx_servers: StartMX, clock: Clock
) -> None:
    mx = mx_servers("127.0.0.9")
    relay = make_relay(tmp_path, two_mx_dns(dnsmasq), mx.port, clock, delay_warning=3600.0)
    notify = RecipientDSN(notify=frozenset({"DELAY", "FAILURE"}))

    async def body() -> None:
        queue_id = enqueue(relay, clock, rcpt_dsn=[notify])
        await relay.scheduler.run_pending()
        assert maildir_messages(tmp_path) == []
        for _ in range(3):  # the notice is sent once, not at every retry
            clock.advance(4000)
            await relay.scheduler.run_pending()
        assert relay.queue.get(queue_id) is not None

    run(relay, body)
    [notice] = maildir_messages(tmp_path)
    [_, rcpt] = delivery_status(notice)
    assert (rcpt["Action"], rcpt["Final-Recipient"]) == ("delayed", "rfc822; bob@a.test")
    assert "Will-Retry-Until" in rcpt


def bounced_at_once(tmp_path: Path, relay: Relay, clock: Clock, rcpt: str) -> dict[str, str]:
    """Queue mail to ``rcpt``, run one delivery pass; the bounce's recipient block."""

    async def body() -> None:
        enqueue(relay, clock, rcpt)
        await relay.scheduler.run_pending()

    run(relay, body)
    [bounce] = maildir_messages(tmp_path)
    [_, block] = delivery_status(bounce)
    assert block["Action"] == "failed"
    return block


def test_null_mx_bounces_at_once(tmp_path: Path, dnsmasq: StartDNS, clock: Clock) -> None:
    relay = make_relay(tmp_path, dnsmasq(null_mx=["null.test"]), 2525, clock)
    assert bounced_at_once(tmp_path, relay, clock, "bob@null.test")["Status"] == "5.1.10"


def test_an_mx_pointing_back_at_us_is_a_loop(
    tmp_path: Path, dnsmasq: StartDNS, clock: Clock
) -> None:
    dns = dnsmasq(mx={"loop.test": [("us.loop.test", 10)]}, hosts={"us.loop.test": ["127.0.0.1"]})
    relay = make_relay(tmp_path, dns, 2525, clock)
    relay.router.set_listening([("127.0.0.1", 2525)])
    assert bounced_at_once(tmp_path, relay, clock, "bob@loop.test")["Status"] == "5.4.6"


def test_local_and_remote_recipients_of_one_message(
    tmp_path: Path, dnsmasq: StartDNS, mx_servers: StartMX, clock: Clock
) -> None:
    mx = mx_servers("127.0.0.2")
    relay = make_relay(tmp_path, two_mx_dns(dnsmasq), mx.port, clock)

    async def body() -> None:
        enqueue(relay, clock, "carol@here.test", "bob@a.test")
        await relay.scheduler.run_pending()
        assert relay.queue.list() == []

    run(relay, body)
    [local] = maildir_messages(tmp_path)
    assert local["Subject"] == "hello" and local["Return-Path"] == "<alice@here.test>"
    [envelope] = mx["127.0.0.2"].envelopes
    assert envelope.rcpt_tos == ["bob@a.test"]


def test_a_bounce_that_cannot_be_delivered_is_not_bounced(
    tmp_path: Path, dnsmasq: StartDNS, mx_servers: StartMX, clock: Clock
) -> None:
    dns = dnsmasq(null_mx=["null.test"])
    relay = make_relay(tmp_path, dns, 2525, clock)

    async def body() -> None:
        relay.queue.enqueue("bob@null.test", ["carol@null.test"], MESSAGE, now=clock())
        await relay.scheduler.run_pending()
        # the bounce to bob@null.test failed too; it is dropped, not bounced again
        assert relay.queue.list() == []

    run(relay, body)
    assert not (tmp_path / "Maildir" / "new").exists() or maildir_messages(tmp_path) == []


class SlowMX(Handler):
    """An MX that holds each message until the test releases it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.envelopes: list[Envelope] = []

    def on_message(self, session: Session, envelope: Envelope) -> None:  # in a thread
        self.entered.set()
        assert self.release.wait(10)
        self.envelopes.append(envelope)


def test_stopping_lets_a_delivery_in_progress_finish(
    tmp_path: Path, dnsmasq: StartDNS, clock: Clock
) -> None:
    dns = dnsmasq(mx={"a.test": [("mx1.a.test", 10)]}, hosts={"mx1.a.test": ["127.0.0.2"]})
    slow = SlowMX()
    port = free_port(("127.0.0.2",))
    with running(slow, "127.0.0.2", port):
        relay = make_relay(tmp_path, dns, port, clock)

        async def body() -> None:
            relay.scheduler.start()
            enqueue(relay, clock)
            relay.scheduler.wake()
            assert await asyncio.to_thread(slow.entered.wait, 10)
            stopping = asyncio.ensure_future(relay.scheduler.stop(grace=10))
            await asyncio.sleep(0)  # let stop() begin: it must wait, not cancel
            slow.release.set()
            await stopping
            assert relay.queue.list() == []  # delivered and recorded before stop returned

        run(relay, body)
    assert len(slow.envelopes) == 1


def test_stop_is_not_lost_when_a_wake_up_comes_with_it(
    tmp_path: Path, dnsmasq: StartDNS, clock: Clock
) -> None:
    # A delivery that ends wakes the scheduler; SIGTERM often comes just then.
    # On 3.11, asyncio.wait_for swallowed that cancel and stop() never returned.
    relay = make_relay(tmp_path, two_mx_dns(dnsmasq), 9, clock)

    async def body() -> None:
        for _ in range(20):
            relay.scheduler.start()
            for _ in range(5):  # an empty queue: it soon waits for a wake-up
                await asyncio.sleep(0.01)
            relay.scheduler.wake()
            async with asyncio.timeout(5):
                await relay.scheduler.stop()

    run(relay, body)


def test_a_per_domain_smarthost_route_bypasses_mx(
    tmp_path: Path, dnsmasq: StartDNS, mx_servers: StartMX, clock: Clock
) -> None:
    mx = mx_servers("127.0.0.2", "127.0.0.3")
    route = f"b.test=127.0.0.3:{mx.port}"  # b.test has no DNS records at all
    relay = make_relay(
        tmp_path,
        two_mx_dns(dnsmasq),
        mx.port,
        clock,
        smarthost_routes=(route,),
        smarthost_tls="none",
    )

    async def body() -> None:
        enqueue(relay, clock, "bob@a.test", "carol@b.test")
        await relay.scheduler.run_pending()
        assert relay.queue.list() == []

    run(relay, body)
    assert [e.rcpt_tos for e in mx["127.0.0.2"].envelopes] == [["bob@a.test"]]
    assert [e.rcpt_tos for e in mx["127.0.0.3"].envelopes] == [["carol@b.test"]]


def test_a_temporary_dns_failure_is_retried_not_bounced(
    tmp_path: Path, dnsmasq: StartDNS, clock: Clock
) -> None:
    relay = make_relay(tmp_path, dnsmasq(), 2525, clock)  # REFUSED for example.org

    async def body() -> None:
        queue_id = enqueue(relay, clock, "bob@example.org")
        await relay.scheduler.run_pending()
        [rcpt] = relay.queue.get(queue_id).recipients  # type: ignore[union-attr]
        assert (rcpt.status, rcpt.last_code, rcpt.last_enhanced) == ("deferred", 451, "4.4.3")
        assert rcpt.next_attempt == clock() + 300

    run(relay, body)
    assert not (tmp_path / "Maildir" / "new").exists() or maildir_messages(tmp_path) == []
