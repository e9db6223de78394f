"""Real peer programs: skipped when absent, unless FASTSMTP_REQUIRE_INTEROP=1."""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest


def require_tool(name: str) -> str:
    """The path of a peer program; skip (or fail under REQUIRE_INTEROP) without it."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if path is None:
        missing(f"{name} is not installed (Debian: see .ci/run for the package)")
    return path


def missing(message: str) -> NoReturn:
    """Skip for want of a peer program, or fail if FASTSMTP_REQUIRE_INTEROP is set."""
    if os.environ.get("FASTSMTP_REQUIRE_INTEROP"):
        pytest.fail(f"FASTSMTP_REQUIRE_INTEROP=1 but {message}")
    pytest.skip(message)


def _run_tool(*argv: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a peer program with a deadline; its output is kept for assertions."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


RunTool = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def run_tool() -> RunTool:
    """``run_tool(*argv, timeout=60)``: run a peer program and capture its output."""
    return _run_tool


@pytest.fixture
def swaks() -> str:
    """The swaks SMTP client (Debian package ``swaks``)."""
    return require_tool("swaks")


@pytest.fixture
def smtp_source() -> str:
    """Postfix's smtp-source load client (Debian package ``postfix``)."""
    return require_tool("smtp-source")


@pytest.fixture
def exim() -> str:
    """Exim's binary, extracted from Debian's exim4-daemon-light by .ci/run.

    The package conflicts with postfix (both are the system MTA), so it is
    unpacked, not installed: ``FASTSMTP_EXIM`` or .ci/cache/exim has it.
    """
    default = Path(__file__).parents[2] / ".ci/cache/exim/usr/sbin/exim4"
    path = Path(os.environ.get("FASTSMTP_EXIM", default))
    if not os.access(path, os.X_OK):
        missing(f"exim is not at {path} (set FASTSMTP_EXIM; .ci/run unpacks it)")
    return str(path)


@pytest.fixture
def nss_wrapper() -> str:
    """libnss_wrapper (Debian ``libnss-wrapper``): gives exim its compiled-in user."""
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    for folder in (f"/usr/lib/{multiarch}", "/usr/lib", "/usr/lib64"):
        library = Path(folder, "libnss_wrapper.so")
        if library.exists():
            return str(library)
    missing("libnss_wrapper.so is not installed (Debian: libnss-wrapper)")


@pytest.fixture
def haproxy() -> str:
    """HAProxy, a real TCP balancer speaking the PROXY protocol (Debian package ``haproxy``)."""
    return require_tool("haproxy")
