"""The compiled state machine keeps its state in the slots its .pxd declares.

(tests/test_compiled_loaded.py checks that it is the one in use.)
"""

from __future__ import annotations

import os

import pytest


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
