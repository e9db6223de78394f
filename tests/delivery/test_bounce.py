"""RFC 3464 reports, parsed back with the standard library's email package."""

from __future__ import annotations

import email
import email.policy
import io
from email.message import Message
from email.utils import parsedate_to_datetime

import pytest

from fastsmtp.delivery.bounce import make_bounce, report_envelope, wants_bounce
from fastsmtp.delivery.queue import QueuedMessage, QueuedRecipient
from fastsmtp.session import RecipientDSN

T0 = 1_800_000_000.0
ORIGINAL = (
    b"Received: from client.example.com\r\n"
    b"From: Alice <alice@example.com>\r\n"
    b"Subject: quarterly numbers\r\n"
    b"\r\n"
    b"Line one.\r\nLine two.\r\n"
)


def message(**changes: object) -> QueuedMessage:
    fields: dict[str, object] = dict(
        id="Q1",
        mail_from="alice@example.com",
        created=T0,
        dsn_ret=None,
        dsn_envid=None,
        smtputf8=False,
        body_type=None,
        size=len(ORIGINAL),
        recipients=[],
    )
    fields.update(changes)
    return QueuedMessage(**fields)  # type: ignore[arg-type]


def failed(address: str = "bob@example.org", **changes: object) -> QueuedRecipient:
    fields: dict[str, object] = dict(
        address=address,
        status="failed",
        attempts=3,
        last_code=550,
        last_enhanced="5.1.1",
        last_text="<bob@example.org>: Recipient address rejected:\nUser unknown",
        remote_host="mx1.example.org",
        last_attempt=T0 + 3600,
    )
    fields.update(changes)
    return QueuedRecipient(**fields)  # type: ignore[arg-type]


def parse(report: bytes) -> Message:
    assert b"\r\n" in report and b"\n" not in report.replace(b"\r\n", b"")  # CRLF only
    return email.message_from_bytes(report, policy=email.policy.compat32)


def status_blocks(report: Message) -> list[Message]:
    part = report.get_payload()[1]
    assert part.get_content_type() == "message/delivery-status"
    return part.get_payload()  # type: ignore[no-any-return]


def test_failure_report_fields_ret_full_with_envid_and_orcpt() -> None:
    bob = failed(dsn=RecipientDSN(frozenset({"FAILURE"}), ("rfc822", "Bob@Example.ORG")))
    carol = failed("carol@example.net", last_code=None, last_enhanced=None,
                   last_text="Host not found", remote_host=None, last_attempt=None)  # fmt: skip
    original = message(dsn_ret="FULL", dsn_envid="QQ314159")
    raw = make_bounce(
        original, [bob, carol], io.BytesIO(ORIGINAL), reporting_mta="mx.test", now=T0 + 7200
    )
    report = parse(raw)
    assert report["From"] == "Mail Delivery System <MAILER-DAEMON@mx.test>"
    assert report["To"] == "<alice@example.com>"
    assert report["Auto-Submitted"] == "auto-replied"
    assert report["Subject"]
    assert report["Message-ID"].endswith("@mx.test>")
    assert parsedate_to_datetime(report["Date"]).timestamp() == T0 + 7200
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    human, _status, returned = report.get_payload()
    assert human.get_content_type() == "text/plain"
    text = human.get_payload(decode=True).decode()
    assert "<bob@example.org>: 550 5.1.1 <bob@example.org>: Recipient address" in text
    assert "<carol@example.net>: Host not found" in text

    per_message, first, second = status_blocks(report)
    assert per_message["Reporting-MTA"] == "dns; mx.test"
    assert per_message["Original-Envelope-Id"] == "QQ314159"
    assert parsedate_to_datetime(per_message["Arrival-Date"]).timestamp() == T0
    assert first["Original-Recipient"] == "rfc822; Bob@Example.ORG"
    assert first["Final-Recipient"] == "rfc822; bob@example.org"
    assert first["Action"] == "failed"
    assert first["Status"] == "5.1.1"
    assert first["Remote-MTA"] == "dns; mx1.example.org"
    assert first["Diagnostic-Code"] == (
        "smtp; 550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown"
    )
    assert parsedate_to_datetime(first["Last-Attempt-Date"]).timestamp() == T0 + 3600
    assert first["Will-Retry-Until"] is None
    # no reply, no remote host, never tried: those fields are left out
    assert second["Original-Recipient"] is None
    assert (second["Final-Recipient"], second["Status"]) == ("rfc822; carol@example.net", "5.0.0")
    assert second["Remote-MTA"] is None and second["Diagnostic-Code"] is None

    assert returned.get_content_type() == "message/rfc822"
    assert raw.split(b"Content-Transfer-Encoding: 7bit\r\n\r\n")[-1].startswith(ORIGINAL)
    inner = returned.get_payload()[0]
    assert inner["Subject"] == "quarterly numbers"
    assert report_envelope(raw, utf8=False) == (False, None)


@pytest.mark.parametrize(
    ("limit", "whole"), [(0, True), (len(ORIGINAL), True), (len(ORIGINAL) - 1, False)]
)
def test_size_limit_returns_a_bigger_message_as_its_header(limit: int, whole: bool) -> None:
    raw = make_bounce(
        message(size=len(ORIGINAL)), [failed()], io.BytesIO(ORIGINAL),
        reporting_mta="mx.test", size_limit=limit,
    )  # fmt: skip
    human, _status, returned = parse(raw).get_payload()
    said = f"larger than {limit} octets" in human.get_payload(decode=True).decode()
    if whole:
        assert returned.get_content_type() == "message/rfc822" and not said
        assert ORIGINAL in raw
    else:
        assert returned.get_content_type() == "text/rfc822-headers" and said
        assert b"Line one." not in raw


def test_ret_hdrs_returns_only_the_header_and_no_envid_field() -> None:
    raw = make_bounce(
        message(dsn_ret="HDRS"), [failed()], io.BytesIO(ORIGINAL), reporting_mta="mx.test"
    )
    report = parse(raw)
    per_message = status_blocks(report)[0]
    assert per_message["Original-Envelope-Id"] is None
    returned = report.get_payload()[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    assert returned.get_payload() == ORIGINAL.split(b"\r\n\r\n")[0].decode() + "\r\n\r\n"
    assert b"Line one." not in raw


def test_default_ret_is_full_and_8bit_content_is_returned_verbatim() -> None:
    original = ORIGINAL + b"caf\xc3\xa9 and a stray \xff byte\r\n"
    raw = make_bounce(message(body_type="8BITMIME"), [failed()], io.BytesIO(original),
                      reporting_mta="mx.test")  # fmt: skip
    assert original in raw
    report = parse(raw)
    assert report.get_payload()[2].get_content_type() == "message/rfc822"
    assert report.get_payload()[2]["Content-Transfer-Encoding"] == "8bit"
    assert report_envelope(raw, utf8=False) == (False, "8BITMIME")


def test_delay_notice() -> None:
    deferred = failed(status="deferred", last_code=451, last_enhanced="4.4.1",
                      last_text="Connection timed out")  # fmt: skip
    raw = make_bounce(
        message(dsn_ret="FULL"),
        [deferred],
        io.BytesIO(ORIGINAL),
        reporting_mta="mx.test",
        kind="delay",
        now=T0 + 4 * 3600,
        retry_until=T0 + 5 * 86400,
    )
    report = parse(raw)
    assert "delay" in report["Subject"].lower()
    rcpt = status_blocks(report)[1]
    assert (rcpt["Action"], rcpt["Status"]) == ("delayed", "4.4.1")
    assert rcpt["Diagnostic-Code"] == "smtp; 451 4.4.1 Connection timed out"
    assert parsedate_to_datetime(rcpt["Will-Retry-Until"]).timestamp() == T0 + 5 * 86400
    # RET applies to failure reports only (RFC 3461 §4.3): a delay notice has the header
    assert report.get_payload()[2].get_content_type() == "text/rfc822-headers"
    assert b"Line one." not in raw


def test_smtputf8_original_gets_the_rfc6533_global_types() -> None:
    original = "From: José <josé@exämple.com>\r\nSubject: ça va\r\n\r\nbody\r\n".encode()
    rcpt = failed("zoë@exämple.org", dsn=RecipientDSN(orcpt=("utf-8", "zoë@exämple.org")))
    msg = message(mail_from="josé@exämple.com", smtputf8=True)
    for ret, returned_type in (("FULL", "message/global"), ("HDRS", "message/global-headers")):
        msg.dsn_ret = ret
        raw = make_bounce(msg, [rcpt], io.BytesIO(original), reporting_mta="mx.test")
        report = parse(raw)
        assert report.get_param("report-type") == "global-delivery-status"
        _human, status, returned = report.get_payload()
        assert status.get_content_type() == "message/global-delivery-status"
        assert returned.get_content_type() == returned_type
        # the stdlib parses message/global-* as one message: check the fields in the bytes
        fields = raw.split(b"Content-Type: message/global-delivery-status\r\n")[1]
        assert "Final-Recipient: utf-8; zoë@exämple.org\r\n".encode() in fields
        assert "Original-Recipient: utf-8; zoë@exämple.org\r\n".encode() in fields
        assert "To: <josé@exämple.com>".encode() in raw
        assert report_envelope(raw, utf8=True) == (True, "8BITMIME")


def test_binarymime_original_is_returned_as_headers_only() -> None:
    raw = make_bounce(message(body_type="BINARYMIME"), [failed()],
                      io.BytesIO(ORIGINAL + b"\x00\x01"), reporting_mta="mx.test")  # fmt: skip
    assert parse(raw).get_payload()[2].get_content_type() == "text/rfc822-headers"
    assert b"\x00" not in raw


def test_non_ascii_diagnostic_is_made_ascii_in_a_plain_report() -> None:
    raw = make_bounce(message(), [failed(last_text="Benutzer unbekannt: Müller\r\n")],
                      io.BytesIO(ORIGINAL), reporting_mta="mx.test")  # fmt: skip
    assert status_blocks(parse(raw))[1]["Diagnostic-Code"] == (
        "smtp; 550 5.1.1 Benutzer unbekannt: M?ller"
    )


def test_needs_recipients() -> None:
    with pytest.raises(ValueError):
        make_bounce(message(), [], io.BytesIO(ORIGINAL), reporting_mta="mx.test")


@pytest.mark.parametrize(
    ("notify", "failure", "delay"),
    [
        (frozenset(), True, False),
        (frozenset({"NEVER"}), False, False),
        (frozenset({"FAILURE"}), True, False),
        (frozenset({"DELAY"}), False, True),
        (frozenset({"SUCCESS"}), False, False),
        (frozenset({"FAILURE", "DELAY"}), True, True),
    ],
)
def test_wants_bounce_follows_notify(notify: frozenset[str], failure: bool, delay: bool) -> None:
    rcpt = failed(dsn=RecipientDSN(notify))
    assert wants_bounce(message(), rcpt, "failure") is failure
    assert wants_bounce(message(), rcpt, "delay") is delay
    # never a report about a report
    assert not wants_bounce(message(mail_from=""), rcpt, "failure")
    assert not wants_bounce(message(mail_from=""), rcpt, "delay")
