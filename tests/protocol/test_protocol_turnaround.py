"""ETRN (RFC 1985) and ATRN (RFC 2645) in ServerConnection, without sockets.

The protocol checks syntax and sequence and asks the application with an
``Etrn``/``Atrn`` decision; without an answer the defaults are 458 and a
250 that ends the server side (the I/O layer turns the connection around).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fastsmtp.protocol import replies as R
from fastsmtp.protocol.events import Atrn, Etrn, Event
from fastsmtp.protocol.replies import Reply

# The protocol conftest's Driver (not importable by name: several conftests are on the path).
Driver = Any
Connect = Callable[..., Driver]


@pytest.mark.parametrize(
    ("argument", "event"),
    [
        ("example.org", Etrn("example.org", "example.org", "domain")),
        ("Example.ORG.", Etrn("Example.ORG.", "example.org", "domain")),
        ("@example.org", Etrn("@example.org", "example.org", "subdomains")),
        ("#outbound", Etrn("#outbound", "outbound", "queue")),
    ],
)
def test_etrn_is_a_decision_and_458_by_default(
    connect: Connect, argument: str, event: Etrn
) -> None:
    smtp = connect(etrn=True)
    assert "ETRN" in smtp.ehlo().lines
    reply = smtp.cmd(f"ETRN {argument}")
    assert (reply.code, reply.enhanced) == (458, "4.3.0")
    assert smtp.events[-1] == event


@pytest.mark.parametrize("argument", ["", "@", "#", "a..b", "-a.b", "bad domain", "a_b.test"])
def test_etrn_syntax_errors_are_501(connect: Connect, argument: str) -> None:
    smtp = connect(etrn=True)
    smtp.ehlo()
    assert smtp.cmd(f"ETRN {argument}".strip()).code == 501
    assert not any(isinstance(e, Etrn) for e in smtp.events)


def test_etrn_off_is_502_and_not_advertised(smtp: Driver) -> None:
    assert "ETRN" not in smtp.ehlo().lines
    assert smtp.cmd("ETRN example.org").code == 502


def test_atrn_needs_auth_then_is_a_decision_that_ends_the_server_side(connect: Connect) -> None:
    smtp = connect(atrn_domains=("example.org=alice",))
    assert "ATRN" in smtp.ehlo().lines
    assert smtp.cmd("ATRN").code == 530
    smtp.conn.session.auth = "alice"  # as an AUTH exchange would leave it
    assert smtp.cmd("ATRN a.test,,b.test").code == 501
    reply = smtp.cmd("ATRN Example.org,b.test,example.org")
    assert (reply.code, reply.text) == (250, "OK now reversing the connection")
    assert smtp.events[-1] == Atrn(("example.org", "b.test"))
    assert smtp.conn.closed  # what follows is the I/O layer's, as the client


def test_a_refused_atrn_keeps_the_session(connect: Connect) -> None:
    def decide(event: Event) -> Reply | None:
        return R.ATRN_NO_MAIL if isinstance(event, Atrn) else None

    smtp = connect(decide, atrn_domains=("example.org=alice",))
    smtp.ehlo()
    smtp.conn.session.auth = "alice"
    assert smtp.cmd("ATRN").code == 453
    assert not smtp.conn.closed
    assert smtp.cmd("NOOP").code == 250
