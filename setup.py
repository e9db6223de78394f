"""Build the Cython wire layer; FASTSMTP_NO_EXTENSIONS=1 skips it.

Without a C compiler the build falls back to the pure-Python package with a
one-line warning, so an sdist installs anywhere. Without Cython it compiles
the generated ``_c.c`` that every sdist ships (see ``SDist``).
"""

from __future__ import annotations

import os
import re
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.sdist import sdist
from setuptools.errors import CCompilerError, ExecError, PlatformError, SetupError

NO_EXTENSIONS = bool(os.environ.get("FASTSMTP_NO_EXTENSIONS"))
PYX = "src/fastsmtp/wire/_c.pyx"
GENERATED_C = "src/fastsmtp/wire/_c.c"

# What a machine without a working C toolchain raises: no compiler at all
# (PlatformError, e.g. Windows without MSVC), a compiler that cannot run
# (ExecError, e.g. CC=false), or one that fails on our C (CCompilerError:
# CompileError, LinkError). Anything else is a bug in the build and fails it.
NO_TOOLCHAIN = (CCompilerError, ExecError, PlatformError)


def _warn_pure(reason: str) -> None:
    """The one line a user sees when they get pure Python instead of C."""
    print(
        f"WARNING: fastsmtp-engine: compiled wire layer not built ({reason}); "
        "installing the pure-Python implementation (same behaviour, slower).",
        file=sys.stderr,
    )


class OptionalBuildExt(build_ext):
    """Build the extension if the toolchain allows; otherwise install pure Python."""

    warned = False

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
    """Generate ``_c.c`` before collecting files, so the sdist builds without Cython.

    ``MANIFEST.in`` includes it; this makes sure it exists and is current
    even when ``FASTSMTP_NO_EXTENSIONS=1`` skipped ``cythonize`` above.
    """

    def run(self) -> None:
        try:
            from Cython.Build import cythonize
        except ImportError:
            fresh = os.path.exists(GENERATED_C) and os.path.getmtime(
                GENERATED_C
            ) >= os.path.getmtime(PYX)
            if not fresh:
                raise SetupError(
                    f"an sdist must ship {GENERATED_C} generated from {PYX}: "
                    "install Cython>=3.1 (pip install Cython) and build it again"
                ) from None
        else:
            cythonize([PYX], compiler_directives={"language_level": "3"})
        super().run()


def extensions() -> list[Extension]:
    if NO_EXTENSIONS:
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        if os.path.exists(GENERATED_C):  # an sdist ships the generated C
            return [Extension("fastsmtp.wire._c", [GENERATED_C])]
        _warn_pure("Cython is not installed and there is no generated _c.c")
        return []
    return cythonize(
        [Extension("fastsmtp.wire._c", [PYX])],
        compiler_directives={"language_level": "3"},
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt, "sdist": SDist})
