"""Postfix's smtp-source, a real load client, against fastsmtp over loopback."""

from __future__ import annotations

from typing import Any

import pytest

from fastsmtp import Collect
from fastsmtp.testing import running


@pytest.mark.parametrize(
    ("flags", "recipients"),
    [
        ([], 1),  # a new connection per message
        (["-d"], 1),  # connection reuse
        (["-d", "-r", "5"], 5),  # several recipients per message
    ],
    ids=["new-connection", "reuse", "5-recipients"],
)
def test_smtp_source_delivers_every_message(
    flags: list[str], recipients: int, smtp_source: str, run_tool: Any
) -> None:
    handler = Collect()
    with running(handler, hostname="mx.test") as (host, port):
        result = run_tool(
            smtp_source,
            "-s", "4",  # concurrent sessions
            "-m", "40",  # messages in all
            "-l", "2048",  # message length
            "-f", "load@source.example",
            "-t", "sink@mx.test",
            *flags,
            f"{host}:{port}",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        envelopes = handler.wait_for(40)
    assert len(envelopes) == 40
    for envelope in envelopes:
        assert envelope.mail_from == "load@source.example"
        assert len(envelope.rcpt_tos) == recipients
        assert envelope.content is not None
        # The body smtp-source generated, after our Received: header.
        body = envelope.content.split(b"\r\n\r\n", 1)[1]
        assert len(body) >= 2048 - 200


def test_smtp_source_lmtp_flag_is_refused_cleanly(smtp_source: str, run_tool: Any) -> None:
    # smtp-source -L speaks LMTP (LHLO); an SMTP server answers 500 and the
    # client gives up without a single message being accepted.
    handler = Collect()
    with running(handler) as (host, port):
        result = run_tool(smtp_source, "-L", "-m", "1", f"{host}:{port}", timeout=30)
    assert result.returncode != 0
    assert handler.envelopes == []
