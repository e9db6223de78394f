"""The compiled connection keeps its state in the slots its .pxd declares.

(tests/test_compiled_loaded.py checks that it is the one in use.)
"""

from __future__ import annotations

import asyncio
import os

import pytest

import fastsmtp.connection as connection
from fastsmtp.handlers import Sink


def test_compiled_connection_keeps_its_state_in_declared_slots(
    serve, client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # _connection_c.pxd declares the attributes so the compiled code reaches
    # them without a dict lookup; one set but not declared still works, in
    # the Python subclass's __dict__, but makes every cpdef call slower
    # (see the .pxd). This names it.
    if os.environ.get("FASTSMTP_NO_EXTENSIONS"):
        pytest.skip("pure-Python run forced by FASTSMTP_NO_EXTENSIONS")
    made: list[connection.SMTPProtocol] = []
    connection_made = connection.BufferedSMTPProtocol.connection_made

    def spy(self: connection.SMTPProtocol, transport: asyncio.BaseTransport) -> None:
        made.append(self)
        connection_made(self, transport)

    monkeypatch.setattr(connection.BufferedSMTPProtocol, "connection_made", spy)
    raw = client(serve(Sink(), chunking=True))
    raw.begin()
    assert raw.send_message(b"Subject: x\r\n\r\nbody\r\n").code == 250
    raw.begin()
    raw.send(b"BDAT 4 LAST\r\nbody")
    assert raw.reply().code == 250
    assert raw.cmd("RSET").code == 250
    assert raw.cmd("QUIT").code == 221
    raw.expect_closed()
    (protocol,) = made
    undeclared = sorted(vars(protocol))
    assert not undeclared, f"declare {undeclared} in src/fastsmtp/_connection_c.pxd"
