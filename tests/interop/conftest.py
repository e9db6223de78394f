"""Real peer programs: skipped when absent, unless FASTSMTP_REQUIRE_INTEROP=1."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable

import pytest


def require_tool(name: str) -> str:
    """The path of a peer program; skip (or fail under REQUIRE_INTEROP) without it."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if path is None:
        message = f"{name} is not installed (Debian: see .ci/run for the package)"
        if os.environ.get("FASTSMTP_REQUIRE_INTEROP"):
            pytest.fail(f"FASTSMTP_REQUIRE_INTEROP=1 but {message}")
        pytest.skip(message)
    return path


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
def haproxy() -> str:
    """HAProxy, a real TCP balancer speaking the PROXY protocol (Debian package ``haproxy``)."""
    return require_tool("haproxy")
