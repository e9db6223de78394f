"""SMTPClient against other peers: scripted servers (LMTP, AUTH, failures), aiosmtpd, smtp-sink."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from client_peers import MiniServer, run

from fastsmtp.delivery.client import ClientOptions, ConnectFailed, RecipientResult, SMTPClient
from fastsmtp.protocol import replies as R
from interop.conftest import require_tool

PLAIN = ClientOptions(helo_name="client.test", tls="none", command_timeout=10)
DOTTY = b"Subject: dots\r\n\r\n.leading\r\n.\r\n..\r\nend\r\n"


async def send_one(
    server: MiniServer, recipients: list[str], options: ClientOptions = PLAIN
) -> tuple[list[RecipientResult], bool]:
    """Connect, send DOTTY, and report the results and whether the connection survived."""
    client = await SMTPClient.connect(*server.address, options)
    try:
        results = await client.send("a@x.test", recipients, DOTTY)
        return results, not client.closed
    finally:
        await client.close()


def summary(results: list[RecipientResult]) -> list[tuple[str, int, str | None]]:
    return [(r.status, r.code, r.enhanced) for r in results]


# --- LMTP -------------------------------------------------------------------------
def test_lmtp_gives_each_recipient_its_own_reply_after_the_data() -> None:
    async def main() -> tuple[list[RecipientResult], MiniServer]:
        async with MiniServer(
            ("PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME"),
            lmtp=True,
            rcpt={"gone@y.test": b"550 5.1.1 no such user\r\n"},
            final={"full@y.test": b"452 4.2.2 mailbox full\r\n"},
        ) as server:
            options = ClientOptions(helo_name="client.test", tls="none", lmtp=True)
            rcpts = ["b@y.test", "gone@y.test", "full@y.test", "c@y.test"]
            results, alive = await send_one(server, rcpts, options)
            assert alive
            return results, server

    results, server = run(main())
    assert summary(results) == [
        ("delivered", 250, "2.0.0"),
        ("failed", 550, "5.1.1"),
        ("deferred", 452, "4.2.2"),
        ("delivered", 250, "2.0.0"),
    ]
    assert results[2].text == "mailbox full" and results[2].remote_host == "127.0.0.1"
    assert server.commands[0] == b"LHLO client.test\r\n"
    assert server.messages == [DOTTY]


# --- AUTH -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("offered", "used"), [("AUTH PLAIN LOGIN", "PLAIN"), ("AUTH LOGIN", "LOGIN")]
)
def test_auth_plain_and_login_against_a_smarthost(offered: str, used: str) -> None:
    async def main() -> tuple[list[RecipientResult], list[str]]:
        async with MiniServer(("PIPELINING", offered), credentials=("relay", "s3cret")) as server:
            options = ClientOptions(helo_name="client.test", tls="none", auth=("relay", "s3cret"))
            results, _ = await send_one(server, ["b@y.test"], options)
            return results, server.logins

    results, logins = run(main())
    assert summary(results) == [("delivered", 250, None)]
    assert logins == [f"{used} relay"]


def test_a_refused_password_is_a_temporary_connect_failure() -> None:
    async def main() -> None:
        async with MiniServer(("AUTH PLAIN",), credentials=("relay", "right")) as server:
            options = ClientOptions(helo_name="client.test", tls="none", auth=("relay", "wrong"))
            await SMTPClient.connect(*server.address, options)

    with pytest.raises(ConnectFailed, match="AUTH PLAIN") as failed:
        run(main())
    assert failed.value.temporary
    assert failed.value.reply is not None and failed.value.reply.code == 535


def test_credentials_are_never_sent_in_plaintext_unless_tls_is_none() -> None:
    async def main() -> list[bytes]:
        async with MiniServer(("AUTH PLAIN",), credentials=("relay", "s3cret")) as server:
            options = ClientOptions(helo_name="client.test", auth=("relay", "s3cret"))
            with pytest.raises(ConnectFailed, match="without TLS"):
                await SMTPClient.connect(*server.address, options)
            return server.commands

    assert not any(c.startswith(b"AUTH") for c in run(main()))


def test_auth_against_aiosmtpd() -> None:
    from aiosmtpd.handlers import Sink
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

    seen: list[tuple[str, bytes]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        assert isinstance(data, LoginPassword)
        seen.append((mechanism, data.login))
        return AuthResult(success=data.password == b"s3cret")

    async def main() -> list[RecipientResult]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(Sink(), authenticator=authenticator, auth_require_tls=False),
            "127.0.0.1",
            0,
        )
        try:
            host, port = server.sockets[0].getsockname()[:2]
            options = ClientOptions(helo_name="client.test", tls="none", auth=("relay", "s3cret"))
            client = await SMTPClient.connect(host, port, options)
            results = await client.send("a@x.test", ["b@y.test"], DOTTY)
            await client.quit()
            return results
        finally:
            server.close()
            await server.wait_closed()

    assert summary(run(main())) == [("delivered", 250, None)]
    assert seen == [("PLAIN", b"relay")]


# --- HELO fallback, greetings -------------------------------------------------------
def test_a_server_that_refuses_ehlo_gets_helo() -> None:
    async def main() -> tuple[list[RecipientResult], list[bytes]]:
        async with MiniServer(None) as server:
            results, _ = await send_one(server, ["b@y.test"])
            return results, server.commands

    results, commands = run(main())
    assert summary(results) == [("delivered", 250, None)]  # no ENHANCEDSTATUSCODES: no split
    assert commands[:3] == [
        b"EHLO client.test\r\n",
        b"HELO client.test\r\n",
        b"MAIL FROM:<a@x.test>\r\n",
    ]


@pytest.mark.parametrize(
    ("greeting", "temporary"),
    [(b"554 5.7.1 go away\r\n", False), (b"421 4.3.2 busy\r\n", True)],
)
def test_a_refusing_greeting_is_a_connect_failure(greeting: bytes, temporary: bool) -> None:
    async def main() -> None:
        async with MiniServer(greeting=greeting) as server:
            await SMTPClient.connect(*server.address, PLAIN)

    with pytest.raises(ConnectFailed) as failed:
        run(main())
    assert failed.value.temporary is temporary
    assert failed.value.reply is not None and failed.value.reply.code == int(greeting[:3])


def test_a_server_that_never_greets_times_out_into_a_connect_failure() -> None:
    async def main() -> None:
        async with MiniServer(greeting=b"") as server:
            options = ClientOptions(helo_name="client.test", tls="none", command_timeout=0.5)
            await SMTPClient.connect(*server.address, options)

    with pytest.raises(ConnectFailed, match="timeout") as failed:
        run(main())
    assert failed.value.temporary


# --- servers that go away -----------------------------------------------------------
@pytest.mark.parametrize("step", ["MAIL", "RCPT", "DATA"])
def test_a_server_that_hangs_up_mid_transaction_defers(step: str) -> None:
    async def main() -> tuple[list[RecipientResult], bool]:
        async with MiniServer(hangup=step) as server:
            return await send_one(server, ["b@y.test", "c@y.test"])

    results, alive = run(main())
    assert not alive
    lost = R.REMOTE_CONNECTION_LOST
    assert [(r.status, r.code, r.enhanced, r.text, r.remote_host) for r in results] == [
        ("deferred", lost.code, lost.enhanced, lost.text, None)
    ] * 2


def test_a_hangup_after_the_dot_is_deferred_and_flagged_as_maybe_delivered() -> None:
    async def main() -> tuple[list[RecipientResult], list[bytes]]:
        async with MiniServer(hangup=".") as server:
            results, _ = await send_one(server, ["b@y.test"])
            return results, server.messages

    [result], messages = run(main())
    assert messages == [DOTTY]  # the server has it all, and never said so
    assert (result.status, result.enhanced) == ("deferred", "4.4.2")
    assert result.text == R.DELIVERY_UNCERTAIN.text


@pytest.mark.parametrize(
    ("step", "reply"), [("RCPT", R.REMOTE_TIMEOUT), (".", R.DELIVERY_UNCERTAIN)]
)
def test_a_silent_server_times_out_into_a_deferral(step: str, reply: R.Reply) -> None:
    async def main() -> tuple[list[RecipientResult], bool, float]:
        async with MiniServer(silent=step) as server:
            options = ClientOptions(helo_name="client.test", tls="none", command_timeout=0.5)
            started = time.monotonic()
            results, alive = await send_one(server, ["b@y.test"], options)
            return results, alive, time.monotonic() - started

    [result], alive, elapsed = run(main())
    assert (result.status, result.code, result.text) == ("deferred", 421, reply.text)
    assert not alive and elapsed < 5


def test_a_421_mid_transaction_defers_with_the_servers_words() -> None:
    async def main() -> tuple[list[RecipientResult], bool]:
        async with MiniServer(rcpt={"c@y.test": b"421 4.3.2 shutting down\r\n"}) as server:
            return await send_one(server, ["b@y.test", "c@y.test", "d@y.test"])

    results, alive = run(main())
    assert not alive
    assert [(r.status, r.code, r.enhanced, r.text) for r in results] == [
        ("deferred", 421, "4.3.2", "shutting down")
    ] * 3


def test_an_endless_reply_line_fails_the_host_quickly() -> None:
    handlers: list[asyncio.Task[Any]] = []

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        writer.write(b"220 ")
        try:
            for _ in range(2000):  # up to 128 MB, unless the client gives up first
                writer.write(b"x" * 65536)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(flood, "127.0.0.1", 0)
        try:
            await SMTPClient.connect(*server.sockets[0].getsockname()[:2], PLAIN)
        finally:
            await asyncio.gather(*handlers)  # it stops once the client has gone
            server.close()
            await server.wait_closed()

    with pytest.raises(ConnectFailed, match=r"4\.5\.0") as failed:
        run(main())
    assert failed.value.temporary


# --- Postfix's smtp-sink as a real peer ------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def smtp_sink() -> Iterator[Any]:
    """``smtp_sink(*flags)``: start smtp-sink dumping messages; returns (port, dump dir)."""
    binary = require_tool("smtp-sink")
    started: list[subprocess.Popen[bytes]] = []
    # smtp-sink runs as nobody, who cannot reach pytest's (0700) tmp_path.
    scratch = tempfile.TemporaryDirectory(prefix="fastsmtp-sink-")
    Path(scratch.name).chmod(0o777)

    def start(*flags: str) -> tuple[int, Path]:
        dump = Path(scratch.name) / f"dump{len(started)}"
        dump.mkdir()
        dump.chmod(0o777)
        port = _free_port()
        user = ["-u", "nobody"] if os.geteuid() == 0 else []  # required as root
        process = subprocess.Popen(
            [binary, *user, "-d", f"{dump}/%M.", *flags, f"127.0.0.1:{port}", "100"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        started.append(process)
        deadline = time.monotonic() + 10
        while True:  # listening is the readiness signal: try to connect, bounded
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return port, dump
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    _, err = process.communicate(timeout=10)
                    raise RuntimeError(f"smtp-sink did not start: {err!r}") from None
                time.sleep(0.05)

    yield start
    for process in started:
        process.terminate()
        process.communicate(timeout=10)  # reaps it and closes its stderr pipe
    scratch.cleanup()


def _dumped(dump: Path) -> list[bytes]:
    """The messages smtp-sink wrote: after its headers and Received:, LF line ends."""
    messages = []
    for path in sorted(dump.iterdir(), key=lambda p: p.stat().st_mtime_ns):
        text = path.read_bytes()
        _, after = text.split(b"\nReceived: ", 1)
        rest = b"\n".join(after.split(b"\n")[3:])  # the Received: header has 3 lines
        messages.append(rest.removesuffix(b"\n"))  # the empty line after each message
    return messages


@pytest.mark.interop
def test_smtp_sink_takes_several_messages_on_one_connection(smtp_sink: Any) -> None:
    port, dump = smtp_sink()
    contents = [DOTTY, b"Subject: two\r\n\r\n.\r\n", b"Subject: three\r\n\r\nlast\r\n"]

    async def main() -> list[str]:
        client = await SMTPClient.connect("127.0.0.1", port, PLAIN)
        statuses = []
        for content in contents:
            results = await client.send("a@x.test", ["b@y.test", "c@y.test"], content)
            statuses += [r.status for r in results]
        await client.quit()
        return statuses

    assert run(main()) == ["delivered"] * 6
    assert sorted(_dumped(dump)) == sorted(c.replace(b"\r\n", b"\n") for c in contents)


@pytest.mark.interop
@pytest.mark.parametrize(
    ("flags", "lmtp", "expected"),
    [
        (["-L"], True, [("delivered", 250, "2.2.0")] * 2),  # one reply each
        (["-e"], False, [("delivered", 250, None)] * 2),  # no ESMTP: HELO
        (["-p"], False, [("delivered", 250, "2.0.0")] * 2),  # no PIPELINING
        (["-f", "rcpt"], False, [("failed", 500, "5.3.0")] * 2),
        (["-r", "."], False, [("deferred", 450, "4.3.0")] * 2),
    ],
    ids=["lmtp", "helo", "no-pipelining", "rcpt-refused", "dot-deferred"],
)
def test_smtp_sink_variants(
    smtp_sink: Any, flags: list[str], lmtp: bool, expected: list[tuple[str, int, str | None]]
) -> None:
    port, _ = smtp_sink(*flags)
    options = ClientOptions(helo_name="client.test", tls="none", lmtp=lmtp, command_timeout=10)

    async def main() -> list[RecipientResult]:
        client = await SMTPClient.connect("127.0.0.1", port, options)
        results = await client.send("a@x.test", ["b@y.test", "c@y.test"], DOTTY)
        await client.quit()
        return results

    assert summary(run(main())) == expected


@pytest.mark.interop
def test_smtp_sink_without_smtputf8_gets_no_internationalised_mail(smtp_sink: Any) -> None:
    port, dump = smtp_sink()

    async def main() -> list[RecipientResult]:
        client = await SMTPClient.connect("127.0.0.1", port, PLAIN)
        results = await client.send("jürgen@x.test", ["b@y.test"], DOTTY)
        await client.quit()
        return results

    assert summary(run(main())) == [("failed", 553, "5.6.7")]
    assert list(dump.iterdir()) == []


def test_a_server_that_stops_reading_mid_body_times_out_the_write() -> None:
    # The server takes the envelope, then never reads again: the client's writes
    # back up, and the wait for the transport to drain is bounded too.
    released = asyncio.Event()
    handlers: list[asyncio.Task[Any]] = []

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        writer.write(b"220 stall.test\r\n")
        for reply in (b"250-stall.test\r\n250 CHUNKING\r\n", b"250 ok\r\n", b"250 ok\r\n"):
            await reader.readline()
            writer.write(reply)
        await released.wait()
        writer.close()

    async def main() -> tuple[RecipientResult, bool]:
        server = await asyncio.start_server(stall, "127.0.0.1", 0, limit=1024)
        try:
            options = ClientOptions(helo_name="client.test", tls="none", command_timeout=0.5)
            client = await SMTPClient.connect(*server.sockets[0].getsockname()[:2], options)
            [result] = await client.send("a@x.test", ["b@y.test"], b"x" * (64 << 20))
            return result, client.closed
        finally:
            released.set()
            await asyncio.gather(*handlers)
            server.close()
            await server.wait_closed()

    result, closed = run(main())
    assert closed
    assert (result.status, result.text) == ("deferred", R.REMOTE_TIMEOUT.text)


def test_leaving_the_client_block_quits_or_on_error_just_closes() -> None:
    async def main() -> tuple[list[bytes], list[bytes]]:
        async with MiniServer() as clean, MiniServer() as failing:
            async with await SMTPClient.connect(*clean.address, PLAIN) as client:
                await client.send("a@x.test", ["b@y.test"], DOTTY)
            with pytest.raises(KeyError):
                async with await SMTPClient.connect(*failing.address, PLAIN):
                    raise KeyError("the caller's own error")
            return clean.commands, failing.commands

    clean, failing = run(main())
    assert clean[-1] == b"QUIT\r\n"
    assert failing == [b"EHLO client.test\r\n"]


def test_a_connect_failure_carries_only_a_reply_the_server_gave() -> None:
    async def main() -> None:
        async with MiniServer(hangup="EHLO") as server:
            await SMTPClient.connect(*server.address, PLAIN)

    with pytest.raises(ConnectFailed) as failed:
        run(main())
    assert failed.value.temporary and failed.value.reply is None  # no reply came
