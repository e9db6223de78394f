"""STARTTLS in the sans-IO connection (RFC 3207 §4.2): what it forgets, and says it forgets.

Found by the fuzzer (tests/fuzz/regressions/starttls-mid-bdat): STARTTLS
accepted in the middle of a transaction dropped it without the ``Reset``
that RSET or a new EHLO gives, so the handler never heard of it and the I/O
layer kept the BDAT chunks received so far.
"""

from __future__ import annotations

import pytest

from fastsmtp.protocol.events import (
    BodyChunk,
    DataStarted,
    Hello,
    MailFrom,
    MessageEnd,
    RcptTo,
    Reset,
    StartTLS,
)
from fastsmtp.protocol.server import ServerConnection, State
from fastsmtp.session import Session

TRANSACTION = b"EHLO client.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"


@pytest.fixture
def tls(connect):
    """A greeted Driver whose connection offers STARTTLS."""
    driver = connect()
    driver.conn = ServerConnection(driver.conn.settings, Session(id="T3"), starttls=True)
    driver.conn.greet()
    driver.conn.data_to_send()
    return driver


def test_starttls_between_bdat_chunks_resets_the_transaction_first(tls):
    replies = tls.send(TRANSACTION + b"BDAT 9\r\nplaintextSTARTTLS\r\n")
    assert [r.code for r in replies] == [250, 250, 250, 250, 220]
    events = tls.events
    assert isinstance(events[-2], Reset) and isinstance(events[-1], StartTLS)
    abandoned = events[-2].envelope
    assert (abandoned.mail_from, abandoned.rcpt_tos) == ("a@example.com", ["b@example.com"])
    assert tls.conn.state is State.TLS
    tls.conn.tls_started()
    tls.events.clear()
    replies = tls.send(TRANSACTION + b"BDAT 6 LAST\r\nsecret")
    assert [r.code for r in replies] == [250, 250, 250, 250]
    assert [type(e) for e in tls.events] == [
        Hello,
        MailFrom,
        RcptTo,
        DataStarted,
        BodyChunk,
        MessageEnd,
    ]
    [(envelope, body)] = tls.delivered
    assert body == b"secret"
    assert envelope.mail_from == "a@example.com"


@pytest.mark.parametrize("after", [b"", b"RCPT TO:<b@example.com>\r\n"])
def test_starttls_during_mail_or_rcpt_resets(tls, after):
    tls.send(b"EHLO client.example\r\nMAIL FROM:<a@example.com>\r\n" + after)
    assert tls.send(b"STARTTLS\r\n")[0].code == 220
    reset, start = tls.events[-2:]
    assert isinstance(reset, Reset) and reset.envelope.mail_from == "a@example.com"
    assert isinstance(start, StartTLS)


def test_starttls_outside_a_transaction_is_just_starttls(tls):
    tls.ehlo()
    assert tls.send(b"STARTTLS\r\n")[0].code == 220
    assert [type(e) for e in tls.events] == [Hello, StartTLS]
