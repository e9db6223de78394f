"""Python modules that setup.py also compiles, unchanged, under another name.

``protocol/server.py`` is built as ``fastsmtp.protocol._server_c`` and
``connection.py`` as ``fastsmtp._connection_c`` (Cython's pure-Python mode,
shaped by the ``.pxd`` named after the compiled module). A compiled module
named like its source would shadow the .py even under
FASTSMTP_NO_EXTENSIONS, hence the other name; the .py stays the pure twin
and, at the end, takes every name from the compiled one.
"""

from __future__ import annotations

import importlib
from typing import Any


def compiled_names(module: str, compiled: str) -> dict[str, Any]:
    """Every name of the compiled twin, for the .py to take; or none.

    ``module`` is the ``__name__`` of the module asking: the compiled module
    runs the same code under its own name, ``compiled``, and keeps its own.
    The twin is used when the wire layer is compiled, so one switch governs
    every compiled module. Every name is replaced, not only ``__all__``:
    compiled classes work with the compiled tables next to them, and
    whoever imports any name gets those. Type checkers see the pure module.
    """
    from . import wire

    if module == compiled or wire.IMPLEMENTATION != "c":
        return {}
    try:
        twin = importlib.import_module(compiled)
    except ImportError:  # not built: a dev tree where only the wire layer is
        return {}
    return {k: v for k, v in vars(twin).items() if not k.startswith("__")}
