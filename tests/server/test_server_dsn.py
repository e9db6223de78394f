"""DSN parameters (RFC 3461) over real sockets: advertised, parsed, typed, refused."""

from __future__ import annotations

import smtplib

import pytest

from fastsmtp import Collect
from fastsmtp.protocol.dsn import parse_envid, parse_notify, parse_orcpt, parse_ret
from fastsmtp.session import Address, Envelope, RecipientDSN, Session


class SeesRecipients(Collect):
    def __init__(self) -> None:
        super().__init__()
        self.rcpts: list[Address] = []

    async def on_rcpt(self, session: Session, envelope: Envelope, rcpt: Address) -> None:
        self.rcpts.append(rcpt)


def test_dsn_is_advertised_only_when_enabled(serve, client):
    assert "DSN" not in client(serve(Collect())).ehlo().lines
    assert "DSN" in client(serve(Collect(), dsn=True)).ehlo().lines


def test_smtplib_dsn_parameters_reach_the_handler_typed(serve):
    handler = SeesRecipients()
    host, port = serve(handler, dsn=True)
    with smtplib.SMTP(host, port, timeout=10) as smtp:
        smtp.ehlo()
        smtp.sendmail(
            "a@example.com",
            ["b@example.com", "c@example.com"],
            b"Subject: dsn\r\n\r\nx\r\n",
            mail_options=["RET=HDRS", "ENVID=QQ314159+2Bx"],
            rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;b+2Bx@example.com"],
        )
    envelope = handler.wait_for(1)[0]
    assert (envelope.dsn_ret, envelope.dsn_envid) == ("HDRS", "QQ314159+x")
    expected = RecipientDSN(frozenset({"SUCCESS", "FAILURE"}), ("rfc822", "b+x@example.com"))
    assert envelope.rcpt_dsn == [expected, expected]
    assert [r.dsn for r in handler.rcpts] == [expected, expected]


def test_without_dsn_parameters_the_fields_are_empty(serve, client):
    handler = Collect()
    raw = client(serve(handler, dsn=True))
    raw.begin()
    assert raw.send_message(b"x\r\n").code == 250
    envelope = handler.wait_for(1)[0]
    assert (envelope.dsn_ret, envelope.dsn_envid) == (None, None)
    assert envelope.rcpt_dsn == [RecipientDSN()]


@pytest.mark.parametrize(
    ("command", "code"),
    [
        ("MAIL FROM:<a@example.com> RET=ALL", 501),
        ("MAIL FROM:<a@example.com> RET", 501),
        ("MAIL FROM:<a@example.com> ENVID=bad+ZZ", 501),
        ("MAIL FROM:<a@example.com> ENVID=" + "x" * 101, 501),
    ],
)
def test_malformed_mail_dsn_parameters(serve, client, command, code):
    raw = client(serve(Collect(), dsn=True))
    raw.ehlo()
    reply = raw.cmd(command)
    assert (reply.code, reply.enhanced) == (code, "5.5.4")
    assert raw.cmd("MAIL FROM:<a@example.com>").code == 250  # no transaction was opened


@pytest.mark.parametrize(
    "params",
    ["NOTIFY=NEVER,SUCCESS", "NOTIFY=SOMETIMES", "NOTIFY=DELAY,DELAY", "ORCPT=b@example.com",
     "ORCPT=rfc822;", "NOTIFY"],
)  # fmt: skip
def test_malformed_rcpt_dsn_parameters(serve, client, params):
    raw = client(serve(Collect(), dsn=True))
    raw.ehlo()
    assert raw.cmd("MAIL FROM:<a@example.com>").code == 250
    reply = raw.cmd(f"RCPT TO:<b@example.com> {params}")
    assert (reply.code, reply.enhanced) == (501, "5.5.4")


def test_dsn_parameters_are_unknown_when_dsn_is_off(serve, client):
    raw = client(serve(Collect()))
    raw.ehlo()
    assert raw.cmd("MAIL FROM:<a@example.com> RET=FULL").code == 555
    assert raw.cmd("MAIL FROM:<a@example.com>").code == 250
    assert raw.cmd("RCPT TO:<b@example.com> NOTIFY=NEVER").code == 555


def test_parsers_directly():
    assert parse_ret("full") == "FULL"
    assert parse_envid("a+20b") == "a b"
    assert parse_notify("never") == frozenset({"NEVER"})
    assert parse_notify("delay,success") == frozenset({"DELAY", "SUCCESS"})
    assert parse_orcpt("UTF-8;j+C3+B6rg@example.com") == ("utf-8", "jörg@example.com")
    for bad in (lambda: parse_ret("x"), lambda: parse_notify(""), lambda: parse_orcpt(";x")):
        with pytest.raises(ValueError):
            bad()
