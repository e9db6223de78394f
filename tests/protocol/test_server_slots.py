"""The compiled state machine keeps its state in the slots its .pxd declares.

(tests/test_compiled_loaded.py checks that it is the one in use.)
"""

from __future__ import annotations

import os

import pytest

from fastsmtp.config import Settings
from fastsmtp.protocol.events import NEED_DATA, Hello
from fastsmtp.protocol.replies import Reply
from fastsmtp.protocol.server import ServerConnection
from fastsmtp.session import Session
from smtp_replies import parse_replies


def test_compiled_connection_keeps_its_state_in_declared_slots(connect) -> None:
    # protocol/_server_c.pxd declares ServerConnection's attributes so the
    # compiled code reaches them without a dict lookup. The compiled type has
    # no instance dict (an eager one per connection made every cpdef call
    # look its method up again, see the .pxd): an attribute set but not
    # declared fails, so this dialogue through the mail path and BDAT would.
    if os.environ.get("FASTSMTP_NO_EXTENSIONS"):
        pytest.skip("pure-Python run forced by FASTSMTP_NO_EXTENSIONS")
    smtp = connect(chunking=True)
    smtp.ehlo()
    smtp.begin("<a@example.com>", "<b@example.com>")
    assert smtp.cmd("DATA").code == 354
    assert smtp.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")[-1].code == 250
    smtp.begin("<a@example.com>", "<b@example.com>")
    assert smtp.send(b"BDAT 4 LAST\r\nbody")[-1].code == 250
    assert smtp.cmd("RSET").code == 250
    assert not hasattr(smtp.conn, "__dict__")
    with pytest.raises(AttributeError):
        smtp.conn.undeclared = True


def test_a_subclass_keeps_its_own_attributes_and_its_overrides_take_effect() -> None:
    # Compiled, ServerConnection has no instance dict and its methods are
    # C calls from inside the type; a Python subclass gets a dict, and the
    # compiled code calls the subclass's override (here of the one method
    # every reply goes through), in both twins.
    class Recording(ServerConnection):
        def _send(self, reply: Reply) -> None:
            self.sent.append(reply.code)
            super()._send(reply)

    conn = Recording(Settings(hostname="mx.test"), Session(id="S1"))
    conn.sent = []
    conn.greet()
    conn.receive_data(b"EHLO client.test\r\nNOOP\r\n")
    assert isinstance(conn.next_event(), Hello)
    conn.respond()
    assert conn.next_event() is NEED_DATA
    assert conn.sent == [220, 250, 250]
    assert [r.code for r in parse_replies(conn.data_to_send())] == [220, 250, 250]
