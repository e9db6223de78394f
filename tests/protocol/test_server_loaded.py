"""The guard: the compiled state machine is the one in use unless pure Python is forced.

setup.py compiles ``protocol/server.py`` itself as ``fastsmtp.protocol._server_c``;
the .py then takes every name from it. A build that lost the extension must
fail here, not pass quietly on the pure module.
"""

from __future__ import annotations

import importlib
import os
import types

import pytest

import fastsmtp.connection
import fastsmtp.protocol.server as server


def test_compiled_server_loaded() -> None:
    if os.environ.get("FASTSMTP_NO_EXTENSIONS"):
        assert server.ServerConnection.__module__ == "fastsmtp.protocol.server"
        assert type(server.ServerConnection.next_event) is types.FunctionType
        return
    try:
        compiled = importlib.import_module("fastsmtp.protocol._server_c")
    except ImportError as exc:
        raise AssertionError(
            f"the extension fastsmtp.protocol._server_c was not built ({exc}): run "
            "`python setup.py build_ext --inplace`, or set FASTSMTP_NO_EXTENSIONS=1 "
            "for a pure-Python run"
        ) from None
    assert compiled.__file__ is not None and compiled.__file__.endswith((".so", ".pyd"))
    # Compiled code, not the .py run again under another name.
    assert type(compiled.ServerConnection.next_event) is not types.FunctionType
    names = [name for name in vars(compiled) if not name.startswith("__")]
    assert set(server.__all__) <= set(names)
    for name in names:
        assert getattr(server, name) is getattr(compiled, name), name
    # The I/O layer and the tables run on the compiled classes.
    assert fastsmtp.connection.ServerConnection is compiled.ServerConnection
    assert server.State is compiled.State


def test_compiled_connection_keeps_its_state_in_declared_slots(connect) -> None:
    # protocol/_server_c.pxd declares ServerConnection's attributes so the
    # compiled code reaches them without a dict lookup; one set but not declared
    # still works, through __dict__, slower. This names it.
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
    undeclared = sorted(vars(smtp.conn))
    assert not undeclared, f"declare {undeclared} in src/fastsmtp/protocol/_server_c.pxd"
