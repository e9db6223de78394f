"""swaks authenticating with PLAIN and LOGIN after STARTTLS, and failing with 535."""

from __future__ import annotations

import ssl
from typing import Any

import pytest

from fastsmtp import Collect
from fastsmtp.session import Session
from fastsmtp.testing import running


def check_password(session: Session, mechanism: str, username: str, password: str) -> bool:
    return (username, password) == ("alice", "wonder land")


def swaks_auth(swaks: str, run_tool: Any, addr: tuple[str, int], *options: str) -> Any:
    return run_tool(
        swaks,
        "--server", f"{addr[0]}:{addr[1]}",
        "--to", "x@example.com",
        "--from", "alice@example.com",
        "--tls",
        "--auth-user", "alice",
        *options,
        timeout=30,
    )  # fmt: skip


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_swaks_authenticates_after_starttls(
    swaks: str, run_tool: Any, server_context: ssl.SSLContext, mechanism: str
) -> None:
    handler = Collect()
    with running(handler, tls_context=server_context, authenticator=check_password) as addr:
        result = swaks_auth(
            swaks, run_tool, addr, "--auth", mechanism, "--auth-password", "wonder land"
        )
        assert result.returncode == 0, result.stdout + result.stderr
        [envelope] = handler.wait_for(1)
    assert "235 2.7.0" in result.stdout
    assert handler.sessions[0].auth == "alice"
    assert b"with ESMTPSA id " in (envelope.content or b"")


def test_swaks_wrong_password_gets_535(
    swaks: str, run_tool: Any, server_context: ssl.SSLContext
) -> None:
    handler = Collect()
    with running(handler, tls_context=server_context, authenticator=check_password) as addr:
        result = swaks_auth(swaks, run_tool, addr, "--auth", "PLAIN", "--auth-password", "no")
    assert result.returncode != 0
    assert "535 5.7.8" in result.stdout
    assert handler.envelopes == []
