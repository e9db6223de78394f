"""Build the Cython wire layer; FASTSMTP_NO_EXTENSIONS=1 skips it.

Without a C compiler or Cython the build falls back to the pure-Python
package with a one-line warning, so an sdist installs anywhere.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

NO_EXTENSIONS = bool(os.environ.get("FASTSMTP_NO_EXTENSIONS"))
PYX = "src/fastsmtp/wire/_c.pyx"
GENERATED_C = "src/fastsmtp/wire/_c.c"


class OptionalBuildExt(build_ext):
    """Build the extension if possible; otherwise warn and install pure Python."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure means "go pure"
            self._warn(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)

    @staticmethod
    def _warn(exc: BaseException) -> None:
        print(
            f"WARNING: fastsmtp's compiled wire layer was not built ({exc}); "
            "installing the pure-Python implementation.",
            file=sys.stderr,
        )


def extensions() -> list[Extension]:
    if NO_EXTENSIONS:
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        if os.path.exists(GENERATED_C):  # an sdist ships the generated C
            return [Extension("fastsmtp.wire._c", [GENERATED_C])]
        print("WARNING: Cython is not installed; installing pure Python.", file=sys.stderr)
        return []
    return cythonize(
        [Extension("fastsmtp.wire._c", [PYX])],
        compiler_directives={"language_level": "3"},
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
