"""An aiosmtpd handler gets a spooled (big) message as bytes, like any other."""

from __future__ import annotations

import smtplib
from typing import Any

BIG = b"Subject: big\r\n\r\n" + b"".join(b"line %06d\r\n" % i for i in range(20000))


class Keep:
    def __init__(self) -> None:
        self.contents: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.contents.append((envelope.content, envelope.original_content))
        return "250 OK"


def test_a_spooled_message_reaches_handle_data_as_bytes(fastsmtp_controller, tmp_path):
    handler = Keep()
    host, port = fastsmtp_controller(handler, spool_threshold=1024, spool_dir=str(tmp_path))
    with smtplib.SMTP(host, port, timeout=10) as client:
        client.sendmail("a@example.com", ["b@example.com"], BIG)
    [(content, original)] = handler.contents
    assert content == original and content.endswith(BIG)
