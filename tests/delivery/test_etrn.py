"""ETRN (RFC 1985) over real sockets: a client that may relay starts the queue of a domain.

The MTA's queue holds deferred mail for a.test, sub.a.test and b.test
(routed to test MX servers by ``smarthost_routes``), not due for an hour
on the test clock; ETRN makes only the asked domain's mail due at once.
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from peers import Clock, MXServers, defer

from fastsmtp.config import Settings
from fastsmtp.delivery.queue import Queue
from fastsmtp.handlers import Collect
from fastsmtp.handlers.relay import Relay
from fastsmtp.testing import running

StartMX = Callable[..., MXServers]
MESSAGE = b"From: alice@here.test\r\nSubject: held\r\n\r\nbody\r\n"


def hold(queue_dir: Path, clock: Clock, *rcpts: str) -> None:
    """Queue one message per recipient, deferred for an hour (as after a failed try)."""
    with Queue(queue_dir) as queue:
        for rcpt in rcpts:
            queue_id = queue.enqueue("alice@here.test", [rcpt], MESSAGE, now=clock())
            defer(queue, queue_id, rcpt, clock())


@contextmanager
def mta(tmp_path: Path, mx: MXServers, clock: Clock, **settings: Any) -> Iterator[tuple[str, int]]:
    routes = {"a.test": "127.0.0.2", "sub.a.test": "127.0.0.2", "b.test": "127.0.0.3"}
    config = Settings(
        hostname="mta.here.test",
        queue_dir=str(tmp_path / "queue"),
        sink=True,
        local_domains=("here.test",),
        relay_networks=("127.0.0.1/32",),
        smarthost_routes=tuple(f"{d}={h}:{mx.port}" for d, h in routes.items()),
        smarthost_tls="none",
        **settings,
    )
    with running(Relay(config, Collect(), now=clock), settings=config) as address:
        yield address


@pytest.fixture
def held(tmp_path: Path, mx_servers: StartMX, clock: Clock) -> MXServers:
    hold(tmp_path / "queue", clock, "bob@a.test", "carol@sub.a.test", "dave@b.test")
    return mx_servers("127.0.0.2", "127.0.0.3")


def test_etrn_flushes_only_that_domain_and_the_mail_arrives(
    tmp_path: Path, held: MXServers, clock: Clock
) -> None:
    with mta(tmp_path, held, clock, etrn=True) as address, smtplib.SMTP(*address) as client:
        client.ehlo("client.test")
        assert client.has_extn("etrn")
        assert client.docmd("ETRN", "a.test") == (
            252,
            b"2.0.0 OK, pending messages for node a.test started",
        )
        [arrived] = held["127.0.0.2"].wait_for(1)
        assert held["127.0.0.2"].envelopes[0].rcpt_tos == ["bob@a.test"]
        assert arrived["Subject"] == "held"
        # Nothing else was due: sub.a.test and b.test still wait.
        assert client.docmd("ETRN", "c.test") == (
            251,
            b"2.0.0 OK, no messages waiting for node c.test",
        )
        assert client.docmd("ETRN", "@a.test")[0] == 252  # subdomains: carol's
        held["127.0.0.2"].wait_for(2)
        assert held["127.0.0.2"].envelopes[1].rcpt_tos == ["carol@sub.a.test"]
        assert held["127.0.0.3"].envelopes == []
        assert client.docmd("ETRN", "#outbound")[0] == 458  # no named queues
        assert client.docmd("ETRN", "B.TEST.")[0] == 252
        held["127.0.0.3"].wait_for(1)
        assert held["127.0.0.3"].envelopes[0].rcpt_tos == ["dave@b.test"]


def test_etrn_from_a_client_that_may_not_relay_is_459(
    tmp_path: Path, held: MXServers, clock: Clock
) -> None:
    with (
        mta(tmp_path, held, clock, etrn=True) as address,
        smtplib.SMTP(*address, source_address=("127.0.0.5", 0)) as client,
    ):
        client.ehlo("client.test")
        assert client.docmd("ETRN", "a.test") == (
            459,
            b"4.7.1 Node a.test not allowed: ETRN not permitted for this client",
        )
    with Queue(tmp_path / "queue") as queue:
        assert all(r.status == "deferred" for m in queue.list() for r in m.recipients)


def test_etrn_syntax_sequence_and_the_default_off(
    tmp_path: Path, held: MXServers, clock: Clock
) -> None:
    with mta(tmp_path, held, clock, etrn=True) as address, smtplib.SMTP(*address) as client:
        assert client.docmd("ETRN", "a.test")[0] == 503  # before EHLO
        client.ehlo("client.test")
        assert client.docmd("ETRN")[0] == 501
        assert client.docmd("ETRN", "not a domain")[0] == 501
        assert client.docmd("ETRN", "@")[0] == 501
        client.mail("alice@here.test")
        assert client.docmd("ETRN", "a.test") == (
            503,
            b"5.5.1 Error: ETRN not permitted during a mail transaction",
        )
    with mta(tmp_path, held, clock) as address, smtplib.SMTP(*address) as client:
        client.ehlo("client.test")
        assert not client.has_extn("etrn")
        assert client.docmd("ETRN", "a.test")[0] == 502
