"""The guard: the compiled wire layer is the one in use unless pure Python is forced."""

from __future__ import annotations

import importlib
import os

import fastsmtp.wire
from fastsmtp.wire import _py


def test_c_loaded() -> None:
    if os.environ.get("FASTSMTP_NO_EXTENSIONS"):
        assert fastsmtp.wire.IMPLEMENTATION == "py"
        impl = _py
    else:
        assert fastsmtp.wire.IMPLEMENTATION == "c", (
            "fastsmtp.wire fell back to pure Python: the extension fastsmtp.wire._c was "
            "not built (run `python setup.py build_ext --inplace`, or set "
            "FASTSMTP_NO_EXTENSIONS=1 for a pure-Python run)"
        )
        impl = importlib.import_module("fastsmtp.wire._c")
    for name in _py.__all__:
        assert name in fastsmtp.wire.__all__
        assert getattr(fastsmtp.wire, name) is getattr(impl, name), name
