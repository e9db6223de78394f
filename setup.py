"""Build the Cython extensions; FASTSMTP_NO_EXTENSIONS=1 skips them.

Three modules are compiled: the wire layer (``wire/_c.pyx``, the twin of
``wire/_py.py``); the SMTP state machine, ``protocol/server.py`` compiled as
it is, in Cython's pure-Python mode, under the name
``fastsmtp.protocol._server_c``; and the asyncio connection around it,
``connection.py`` as ``fastsmtp._connection_c``. Each .py stays importable as
its pure twin and takes the compiled names (see ``fastsmtp/_twin.py``).

Without a C compiler the build falls back to the pure-Python package with a
one-line warning, so an sdist installs anywhere. Without Cython it compiles
the generated C that every sdist ships (see ``SDist``).
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Callable

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.sdist import sdist
from setuptools.errors import CCompilerError, ExecError, PlatformError, SetupError

NO_EXTENSIONS = bool(os.environ.get("FASTSMTP_NO_EXTENSIONS"))
# Each compiled module and its Cython source. Cython writes the C next to
# the source (``protocol/server.c`` for ``protocol/server.py``) and reads the
# declarations in the .pxd named after the module (``protocol/_server_c.pxd``).
SOURCES = {
    "fastsmtp.wire._c": "src/fastsmtp/wire/_c.pyx",
    "fastsmtp.protocol._server_c": "src/fastsmtp/protocol/server.py",
    "fastsmtp._connection_c": "src/fastsmtp/connection.py",
}
GENERATED_C = {name: os.path.splitext(source)[0] + ".c" for name, source in SOURCES.items()}
DECLARATIONS = {
    name: os.path.join(os.path.dirname(source), name.rpartition(".")[2] + ".pxd")
    for name, source in SOURCES.items()
}
DIRECTIVES = {
    "fastsmtp.wire._c": {"language_level": "3"},
    # Annotations stay documentation, as in CPython: with annotation typing
    # Cython would reject a str subclass where ``str`` is written and turn a
    # ``bool`` argument into True/False, so the twins could differ (it saves
    # <2% of the compiled state machine's instructions).
    "fastsmtp.protocol._server_c": {"language_level": "3", "annotation_typing": False},
    "fastsmtp._connection_c": {"language_level": "3", "annotation_typing": False},
}
# connection.py's C also comes from the compiled ServerConnection's
# declarations, which it cimports (found on the include path, src/).
CIMPORTS = {"fastsmtp._connection_c": ["fastsmtp.protocol._server_c"]}

# What a machine without a working C toolchain raises: no compiler at all
# (PlatformError, e.g. Windows without MSVC), a compiler that cannot run
# (ExecError, e.g. CC=false), or one that fails on our C (CCompilerError:
# CompileError, LinkError). Anything else is a bug in the build and fails it.
NO_TOOLCHAIN = (CCompilerError, ExecError, PlatformError)


def _warn_pure(reason: str) -> None:
    """The one line a user sees when they get pure Python instead of C.

    Written at once, newline included (print() writes the newline apart): the
    other compiler threads log their commands meanwhile and must not land
    inside the line.
    """
    sys.stderr.write(
        f"WARNING: fastsmtp-engine: compiled extensions not built ({reason}); "
        "installing the pure-Python implementation (same behaviour, slower).\n"
    )


class OptionalBuildExt(build_ext):
    """Build the extensions if the toolchain allows; otherwise install pure Python.

    The three modules compile in parallel (one thread per CPU, each running
    the compiler): the two Cython state machines are over a megabyte of C
    each, and two cores compile all three in about two thirds of the time.
    ``build_ext -j N`` still chooses otherwise.
    """

    warned = False
    _warning = threading.Lock()  # the parallel builds may fail at once

    def finalize_options(self) -> None:
        super().finalize_options()
        if self.parallel is None:  # neither build_ext -j nor build -j
            self.parallel = True  # os.cpu_count() threads

    def run(self) -> None:
        try:
            super().run()
        except NO_TOOLCHAIN as exc:
            self._fallback(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except NO_TOOLCHAIN as exc:
            self._fallback(exc)

    def _fallback(self, exc: BaseException) -> None:
        with OptionalBuildExt._warning:
            if OptionalBuildExt.warned:
                return
            OptionalBuildExt.warned = True
        detail = (str(exc).strip().splitlines() or [""])[0]
        # A compiler that cannot run reports its whole argv; its name is enough.
        argv = re.match(r"Command '\[['\"]([^'\"]+)['\"].*exit status (\d+)", detail)
        if argv:
            detail = f"command {argv[1]!r} failed with exit code {argv[2]}"
        _warn_pure(f"{type(exc).__name__}: {detail[:200]}")


class SDist(sdist):
    """Generate the C before collecting files, so the sdist builds without Cython.

    ``MANIFEST.in`` includes it; this makes sure it exists and is current
    even when ``FASTSMTP_NO_EXTENSIONS=1`` skipped ``cythonize`` above.
    """

    def run(self) -> None:
        try:
            from Cython.Build import cythonize
        except ImportError:
            for name, source in SOURCES.items():
                if _stale(name):
                    raise SetupError(
                        f"an sdist must ship {GENERATED_C[name]} generated from {source} "
                        f"and {DECLARATIONS[name]}: install Cython>=3.1 (pip install Cython) "
                        "and build it again"
                    ) from None
        else:
            _cythonize(cythonize)
        super().run()


def _stale(name: str) -> bool:
    """True when the module's C is missing or older than its source or .pxd."""
    c = GENERATED_C[name]
    if not os.path.exists(c):
        return True
    inputs = [SOURCES[name], DECLARATIONS[name]]
    inputs += [DECLARATIONS[other] for other in CIMPORTS.get(name, ())]
    return any(os.path.getmtime(c) < os.path.getmtime(i) for i in inputs)


def _cythonize(cythonize: Callable[..., list[Extension]]) -> list[Extension]:
    # Cython does not count protocol/_server_c.pxd among server.py's
    # dependencies (it goes by the file's name), so staleness is ours to judge.
    return [
        ext
        for name, source in SOURCES.items()
        for ext in cythonize(
            [Extension(name, [source])],
            compiler_directives=DIRECTIVES[name],
            force=_stale(name),
            include_path=["src"],
        )
    ]


def extensions() -> list[Extension]:
    if NO_EXTENSIONS:
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        # An sdist ships the generated C; all of it, or the build is pure.
        missing = [c for c in GENERATED_C.values() if not os.path.exists(c)]
        if not missing:
            return [Extension(name, [c]) for name, c in GENERATED_C.items()]
        _warn_pure(f"Cython is not installed and there is no generated {', '.join(missing)}")
        return []
    return _cythonize(cythonize)


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt, "sdist": SDist})
