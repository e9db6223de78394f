"""swaks speaking LMTP (``--protocol LMTP``) to fastsmtp, over a Unix socket and TCP."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from fastsmtp import Handler, Reply
from fastsmtp.testing import running

REFUSED = Reply(550, "5.1.1", "No such mailbox")


class SecondRefused(Handler):
    """Delivers to every recipient but the second, which it refuses."""

    def __init__(self) -> None:
        self.contents: list[bytes] = []

    async def on_message(self, session: Any, envelope: Any) -> list[Reply | None]:
        self.contents.append(envelope.content)
        return [REFUSED if i == 1 else None for i in range(len(envelope.rcpt_tos))]


def _swaks_lmtp(swaks: str, run_tool: Any, *target: str) -> Any:
    return run_tool(
        swaks,
        "--to", "one@b.example,two@b.example,three@b.example",
        "--from", "sender@c.example",
        "--protocol", "LMTP",
        *target,
    )  # fmt: skip


def _after_data(stdout: str) -> list[str]:
    """The reply lines swaks printed after sending the message's final dot."""
    lines = stdout.splitlines()
    end = lines.index(" -> .")
    replies = []
    for line in lines[end + 1 :]:
        if line.startswith(" -> "):
            break
        replies.append(line)
    return replies


def test_swaks_lmtp_over_a_unix_socket_sees_one_reply_per_recipient(
    swaks: str, run_tool: Any
) -> None:
    handler = SecondRefused()
    with tempfile.TemporaryDirectory(prefix="fsmtp") as directory:
        path = os.path.join(directory, "lmtp.sock")
        with running(handler, lmtp=True, listen=[f"unix:{path}"], hostname="mx.test"):
            result = _swaks_lmtp(swaks, run_tool, "--socket", path)
    assert "<-  220 mx.test LMTP fastsmtp" in result.stdout, result.stdout + result.stderr
    assert " -> LHLO " in result.stdout
    replies = _after_data(result.stdout)
    assert len(replies) == 3, result.stdout
    assert replies[0].startswith("<-  250 2.0.0 OK: queued as ")
    assert replies[1] == "<** 550 5.1.1 No such mailbox"
    assert replies[2].startswith("<-  250 2.0.0 OK: queued as ")
    [content] = handler.contents
    assert b"with LMTP id" in content


def test_swaks_lmtp_over_tcp_with_pipelining(swaks: str, run_tool: Any) -> None:
    handler = SecondRefused()
    with running(handler, lmtp=True, hostname="mx.test") as (host, port):
        result = _swaks_lmtp(swaks, run_tool, "--server", f"{host}:{port}", "--pipeline")
    replies = _after_data(result.stdout)
    assert [line[:7] for line in replies] == ["<-  250", "<** 550", "<-  250"], result.stdout
    assert len(handler.contents) == 1
