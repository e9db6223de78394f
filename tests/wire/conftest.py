"""Fixtures for the wire tests: every test runs against both implementations.

``wire`` is the module under test, ``fastsmtp.wire._py`` (id ``py``) or
``fastsmtp.wire._c`` (id ``c``). The compiled one is skipped only when
``FASTSMTP_NO_EXTENSIONS`` forces a pure-Python run; when it should be there
and cannot be imported, its tests fail rather than skip (DESIGN.md).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from types import ModuleType

import pytest

NO_EXTENSIONS_REASON = "pure-Python run forced by FASTSMTP_NO_EXTENSIONS"


def load_c() -> ModuleType:
    """Import ``fastsmtp.wire._c``, or skip/fail the calling test as DESIGN.md says."""
    if os.environ.get("FASTSMTP_NO_EXTENSIONS"):
        pytest.skip(NO_EXTENSIONS_REASON)
    try:
        return importlib.import_module("fastsmtp.wire._c")
    except ImportError as exc:
        pytest.fail(
            "the compiled wire extension fastsmtp.wire._c was not built or cannot be "
            f"imported ({exc}); build it with `python setup.py build_ext --inplace` "
            "(or `pip install -e .`), or set FASTSMTP_NO_EXTENSIONS=1 to test pure Python only",
            pytrace=False,
        )


@pytest.fixture(scope="session", params=["py", "c"])
def wire(request: pytest.FixtureRequest) -> ModuleType:
    """The wire implementation under test (session-scoped: modules hold no state)."""
    if request.param == "py":
        return importlib.import_module("fastsmtp.wire._py")
    return load_c()


@pytest.fixture(scope="session")
def c_wire() -> ModuleType:
    """The compiled implementation, for differential tests against ``_py``."""
    return load_c()


@pytest.fixture
def rss() -> Callable[[], int]:
    """A function returning this process's resident set size in bytes (Linux)."""
    path = "/proc/self/statm"
    if not os.path.exists(path):
        pytest.skip("needs /proc/self/statm to measure memory")
    page = os.sysconf("SC_PAGE_SIZE")

    def resident() -> int:
        with open(path) as f:
            return int(f.read().split()[1]) * page

    return resident
