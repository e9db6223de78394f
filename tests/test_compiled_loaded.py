"""The guard: the compiled modules are the ones in use unless pure Python is forced.

setup.py compiles ``protocol/server.py`` as ``fastsmtp.protocol._server_c``
and ``connection.py`` as ``fastsmtp._connection_c``; each .py then takes
every name from its compiled twin (``fastsmtp._twin``). A build that lost an
extension must fail here, not pass quietly on the pure module.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import types

import pytest

# (the .py, its compiled twin, a class and one of its methods, and names that
# other modules import from the .py and so must be the compiled ones)
TWINS = [
    (
        "fastsmtp.protocol.server",
        "fastsmtp.protocol._server_c",
        "ServerConnection",
        "next_event",
        [("fastsmtp.connection", "ServerConnection"), ("fastsmtp.protocol.server", "State")],
    ),
    (
        "fastsmtp.connection",
        "fastsmtp._connection_c",
        "SMTPProtocol",
        "_process",
        [("fastsmtp.server", "BufferedSMTPProtocol")],
    ),
]


@pytest.mark.parametrize(("source", "compiled_name", "cls", "method", "users"), TWINS)
def test_compiled_twin_loaded(
    source: str, compiled_name: str, cls: str, method: str, users: list[tuple[str, str]]
) -> None:
    module = importlib.import_module(source)
    if os.environ.get("FASTSMTP_NO_EXTENSIONS"):
        assert getattr(module, cls).__module__ == source
        assert type(getattr(getattr(module, cls), method)) is types.FunctionType
        return
    try:
        compiled = importlib.import_module(compiled_name)
    except ImportError as exc:
        raise AssertionError(
            f"the extension {compiled_name} was not built ({exc}): run "
            "`python setup.py build_ext --inplace`, or set FASTSMTP_NO_EXTENSIONS=1 "
            "for a pure-Python run"
        ) from None
    assert compiled.__file__ is not None and compiled.__file__.endswith((".so", ".pyd"))
    # Compiled code, not the .py run again under another name.
    assert type(getattr(getattr(compiled, cls), method)) is not types.FunctionType
    names = [name for name in vars(compiled) if not name.startswith("__")]
    assert set(module.__all__) <= set(names)
    for name in names:
        assert getattr(module, name) is getattr(compiled, name), name
    for user, name in users:
        assert getattr(importlib.import_module(user), name) is getattr(compiled, name), user


def test_the_server_makes_protocols_asyncio_reads_into_a_buffer() -> None:
    # Compiled, SMTPProtocol is an extension type, which cannot derive from
    # asyncio's Python class: the server's protocol class must still be one.
    from fastsmtp.server import BufferedSMTPProtocol

    assert issubclass(BufferedSMTPProtocol, asyncio.BufferedProtocol)
