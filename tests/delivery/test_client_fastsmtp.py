"""SMTPClient against a real fastsmtp Server over loopback: what arrives, per recipient."""

from __future__ import annotations

import io
import ssl
from pathlib import Path
from typing import Any

import pytest
from client_peers import run

from fastsmtp import Collect, Reply
from fastsmtp.delivery.client import ClientOptions, ConnectFailed, SMTPClient
from fastsmtp.session import Address, Envelope, Session
from fastsmtp.testing import running
from server.test_server_tls import Recorder

PLAIN = ClientOptions(helo_name="client.test", tls="none", command_timeout=10)
# Leading dots, a lone dot line, a line of dots, no final CRLF on purpose elsewhere.
DOTTY = b"Subject: dots\r\n\r\n.leading\r\n.\r\n..\r\nmiddle . dot\r\n...end\r\n"


def body(envelope: Envelope) -> bytes:
    """The content as the client sent it (without the server's Received: header)."""
    assert envelope.content is not None
    received, rest = envelope.content.split(b"\r\n", 1)
    assert received.startswith(b"Received: ")
    while rest.startswith(b"\t"):  # the header's folded lines
        rest = rest.split(b"\r\n", 1)[1]
    return rest


class Picky(Collect):
    """Refuses recipients named nobody@ and messages that contain SPAM."""

    async def on_rcpt(self, session: Session, envelope: Envelope, rcpt: Address) -> Reply | None:
        if rcpt.address.startswith("nobody@"):
            return Reply(550, "5.1.1", "No such user here")
        if rcpt.address.startswith("later@"):
            return Reply(450, "4.2.1", "Mailbox busy, try later")
        return None

    async def on_message(self, session: Session, envelope: Envelope) -> Reply | None:
        if envelope.content and b"SPAM" in envelope.content:
            return Reply(554, "5.7.1", "Message refused as spam")
        await super().on_message(session, envelope)
        return None


@pytest.fixture(params=["asyncio", "uvloop"])
def loop(request: pytest.FixtureRequest) -> str:
    """Every client test that matters runs on both loops: public asyncio APIs only."""
    return str(request.param)


# --- extensions on and off ----------------------------------------------------
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "no-pipelining"])
@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
def test_delivers_byte_exact_with_and_without_pipelining_and_chunking(
    pipelining: bool, chunking: bool, loop: str
) -> None:
    handler = Collect()
    with running(handler, pipelining=pipelining, chunking=chunking) as (host, port):

        async def main() -> list[str]:
            async with await SMTPClient.connect(host, port, PLAIN) as client:
                results = await client.send("a@x.test", ["b@y.test", "c@y.test"], DOTTY)
            assert client.closed
            return [r.status for r in results]

        assert run(main(), loop) == ["delivered", "delivered"]
    [envelope] = handler.wait_for(1)
    assert body(envelope) == DOTTY
    assert envelope.rcpt_tos == ["b@y.test", "c@y.test"]


@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
def test_a_big_file_is_streamed_in_chunks_and_arrives_intact(
    chunking: bool, tmp_path: Path
) -> None:
    # 3 MiB of lines, many starting with a dot, and no CRLF at the very end.
    content = b"".join(b".%06d line of the big message\r\n" % i for i in range(90_000)) + b"end"
    path = tmp_path / "spooled.eml"
    path.write_bytes(content)
    handler = Collect()
    with running(handler, chunking=chunking) as (host, port):

        async def main() -> str:
            client = await SMTPClient.connect(host, port, PLAIN)
            with path.open("rb") as spooled:
                [result] = await client.send("a@x.test", ["b@y.test"], spooled)
            await client.quit()
            return result.status

        assert run(main()) == "delivered"
    [envelope] = handler.wait_for(1)
    # DATA: the dot-stuffer ends a body without a final CRLF with CRLF . CRLF.
    assert body(envelope) == content + (b"" if chunking else b"\r\n")


# --- per-recipient results ------------------------------------------------------
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "no-pipelining"])
def test_each_recipient_gets_its_own_result(pipelining: bool) -> None:
    handler = Picky()
    with running(handler, pipelining=pipelining) as (host, port):

        async def main() -> list[tuple[str, int, str | None, str | None]]:
            client = await SMTPClient.connect(host, port, PLAIN)
            rcpts = ["b@y.test", "nobody@y.test", "later@y.test", "c@y.test"]
            results = await client.send("a@x.test", rcpts, b"Subject: x\r\n\r\nhi\r\n")
            await client.quit()
            return [(r.status, r.code, r.enhanced, r.remote_host) for r in results]

        results = run(main())
    assert results == [
        ("delivered", 250, "2.0.0", "127.0.0.1"),
        ("failed", 550, "5.1.1", "127.0.0.1"),
        ("deferred", 450, "4.2.1", "127.0.0.1"),
        ("delivered", 250, "2.0.0", "127.0.0.1"),
    ]
    [envelope] = handler.wait_for(1)
    assert envelope.rcpt_tos == ["b@y.test", "c@y.test"]


@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
def test_a_message_refused_after_data_fails_every_accepted_recipient(chunking: bool) -> None:
    handler = Picky()
    with running(handler, chunking=chunking) as (host, port):

        async def main() -> list[tuple[int, str | None, str]]:
            client = await SMTPClient.connect(host, port, PLAIN)
            rcpts = ["b@y.test", "nobody@y.test", "c@y.test"]
            results = await client.send("a@x.test", rcpts, b"Subject: SPAM\r\n\r\nbuy\r\n")
            # The connection is still good for the next message.
            [ok] = await client.send("a@x.test", ["d@y.test"], b"Subject: fine\r\n\r\nhi\r\n")
            await client.quit()
            return [(r.code, r.enhanced, r.text) for r in [*results, ok]]

        results = run(main())
    assert results[:3] == [
        (554, "5.7.1", "Message refused as spam"),
        (550, "5.1.1", "No such user here"),
        (554, "5.7.1", "Message refused as spam"),
    ]
    assert results[3][0] == 250
    assert [e.rcpt_tos for e in handler.wait_for(1)] == [["d@y.test"]]


def test_one_connection_carries_several_messages() -> None:
    handler = Picky()
    with running(handler) as (host, port):

        async def main() -> list[str]:
            client = await SMTPClient.connect(host, port, PLAIN)
            statuses = []
            for i, rcpts in enumerate([["b@y.test"], ["nobody@y.test"], ["c@y.test", "d@y.test"]]):
                content = b"Subject: %d\r\n\r\nbody %d\r\n" % (i, i)
                statuses += [r.status for r in await client.send("a@x.test", rcpts, content)]
            assert not client.closed
            await client.quit()
            assert client.closed
            return statuses

        assert run(main()) == ["delivered", "failed", "delivered", "delivered"]
    envelopes = handler.wait_for(2)
    assert len({session.id for session in handler.sessions}) == 1  # one SMTP session
    assert [body(e) for e in envelopes] == [
        b"Subject: 0\r\n\r\nbody 0\r\n",
        b"Subject: 2\r\n\r\nbody 2\r\n",
    ]


# --- refused before sending -------------------------------------------------------
@pytest.mark.parametrize(
    ("settings", "send", "expected"),
    [
        ({"max_message_size": 100}, {"content": b"x" * 101}, (552, "5.3.4")),
        ({"smtputf8": False}, {"smtputf8": True}, (553, "5.6.7")),
        ({"smtputf8": False}, {"recipients": ["jürgen@y.test"]}, (553, "5.6.7")),
        ({"eightbitmime": False}, {"content": "Subject: é\r\n\r\n".encode()}, (554, "5.6.3")),
        ({"eightbitmime": False}, {"body_type": "8BITMIME"}, (554, "5.6.3")),
        ({"binarymime": False}, {"body_type": "BINARYMIME"}, (554, "5.6.3")),
    ],
    ids=["size", "smtputf8", "utf8-address", "8bit-bytes", "8bit-declared", "binarymime"],
)
def test_a_message_the_server_cannot_take_is_refused_and_never_sent(
    settings: dict[str, Any], send: dict[str, Any], expected: tuple[int, str]
) -> None:
    handler = Collect()
    with running(handler, **settings) as (host, port):

        async def main() -> list[tuple[int, str | None, str | None, str]]:
            client = await SMTPClient.connect(host, port, PLAIN)
            args: dict[str, Any] = {"recipients": ["b@y.test"], "content": b"hi\r\n", **send}
            results = await client.send("a@x.test", **args)
            # Nothing was said about it: the next message goes on the same connection.
            [ok] = await client.send("a@x.test", ["c@y.test"], b"ok\r\n")
            await client.quit()
            return [(r.code, r.enhanced, r.remote_host, r.status) for r in [*results, ok]]

        results = run(main())
    assert results[0] == (*expected, None, "failed")
    assert results[1][3] == "delivered"
    assert [e.rcpt_tos for e in handler.wait_for(1)] == [["c@y.test"]]


@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
def test_an_8bit_file_to_a_7bit_server_is_dropped_before_its_end(chunking: bool) -> None:
    # A file is checked as it streams: the connection is cut before the message
    # ends, so the server discards what it got, and the result is the 5.6.3 refusal.
    content = b"Subject: x\r\n\r\n" + b"ascii line\r\n" * 20_000 + "é\r\n".encode()
    handler = Collect()
    with running(handler, eightbitmime=False, chunking=chunking) as (host, port):

        async def main() -> tuple[int, str | None, bool]:
            client = await SMTPClient.connect(host, port, PLAIN)
            [result] = await client.send("a@x.test", ["b@y.test"], io.BytesIO(content))
            return result.code, result.enhanced, client.closed

        assert run(main()) == (554, "5.6.3", True)
    assert handler.envelopes == []


# --- STARTTLS ---------------------------------------------------------------------


def _tls_send(host: str, port: int, options: ClientOptions, loop: str = "asyncio") -> bool:
    async def main() -> bool:
        client = await SMTPClient.connect(host, port, options)
        [result] = await client.send("a@x.test", ["b@y.test"], DOTTY)
        assert result.status == "delivered", result
        await client.quit()
        return client.tls

    return run(main(), loop)


def test_opportunistic_tls_is_used_when_offered_without_verifying(
    server_context: ssl.SSLContext, loop: str
) -> None:
    handler = Recorder()
    # The server stays on asyncio: a client on another loop sends its EHLO in
    # the handshake's last flight, which the server must not drop.
    with running(handler, tls_context=server_context) as (host, port):
        options = ClientOptions(helo_name="client.test", command_timeout=10)
        assert _tls_send(host, port, options, loop) is True
    assert handler.tls == [True]
    assert body(handler.envelopes[0]) == DOTTY


def test_opportunistic_tls_falls_back_to_plaintext_when_the_handshake_fails(
    server_context: ssl.SSLContext,
) -> None:
    # A verifying context that does not trust the test CA: the handshake fails,
    # and "may" TLS reconnects without it (as Postfix does).
    handler = Recorder()
    with running(handler, tls_context=server_context) as (host, port):
        options = ClientOptions(
            helo_name="client.test", tls_context=ssl.create_default_context(), command_timeout=10
        )
        assert _tls_send(host, port, options) is False
    assert handler.tls == [False]


def test_opportunistic_tls_to_a_server_without_starttls_stays_plaintext() -> None:
    handler = Recorder()
    with running(handler) as (host, port):
        assert _tls_send(host, port, ClientOptions(helo_name="client.test")) is False
    assert handler.tls == [False]


def test_required_tls_verifies_the_certificate(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext, loop: str
) -> None:
    handler = Recorder()
    with running(handler, tls_context=server_context) as (host, port):
        options = ClientOptions(helo_name="client.test", tls="required", tls_context=client_context)
        assert _tls_send(host, port, options, loop) is True
        # The default context trusts the system CAs only: the test CA fails it.
        untrusted = ClientOptions(helo_name="client.test", tls="required")
        with pytest.raises(ConnectFailed) as failed:
            _tls_send(host, port, untrusted)
        assert failed.value.temporary
        assert "certificate" in str(failed.value).lower()
    assert handler.tls == [True]


def test_required_tls_fails_a_server_without_starttls(client_context: ssl.SSLContext) -> None:
    with running(Collect()) as (host, port):
        options = ClientOptions(helo_name="h.test", tls="required", tls_context=client_context)
        with pytest.raises(ConnectFailed, match="does not offer STARTTLS") as failed:
            _tls_send(host, port, options)
        assert failed.value.temporary


def test_connect_to_a_closed_port_is_a_temporary_failure() -> None:
    with running(Collect()) as (host, port):
        pass  # the server is gone, its port closed

    async def main() -> None:
        await SMTPClient.connect(host, port, PLAIN)

    with pytest.raises(ConnectFailed) as failed:
        run(main())
    assert failed.value.temporary and failed.value.reply is None


# --- parameters passed on ---------------------------------------------------------------
def test_null_sender_8bit_body_and_smtputf8_arrive_as_declared() -> None:
    handler = Collect()
    content = "Subject: Grüße\r\n\r\nnaïve\r\n".encode()
    with running(handler) as (host, port):

        async def main() -> list[str]:
            client = await SMTPClient.connect(host, port, PLAIN)
            bounce = await client.send("", ["b@y.test"], content, body_type="8BITMIME")
            utf8 = await client.send("jürgen@x.test", ["zoë@y.test"], content, smtputf8=True)
            await client.quit()
            return [r.status for r in [*bounce, *utf8]]

        assert run(main()) == ["delivered", "delivered"]
    first, second = handler.wait_for(2)
    assert (first.mail_from, first.body_type, body(first)) == ("", "8BITMIME", content)
    assert (second.mail_from, second.rcpt_tos, second.smtputf8) == (
        "jürgen@x.test",
        ["zoë@y.test"],
        True,
    )


@pytest.mark.parametrize("dsn", [True, False], ids=["dsn", "no-dsn"])
def test_dsn_parameters_reach_a_dsn_server_and_are_dropped_for_others(dsn: bool) -> None:
    handler = Collect()
    with running(handler, dsn=dsn) as (host, port):

        async def main() -> str:
            client = await SMTPClient.connect(host, port, PLAIN)
            [result] = await client.send(
                "a@x.test",
                ["b@y.test"],
                b"Subject: dsn\r\n\r\nx\r\n",
                mail_params={"RET": "HDRS", "ENVID": "QQ314159"},
                rcpt_params=[{"NOTIFY": "FAILURE,DELAY", "ORCPT": "rfc822;b@y.test"}],
            )
            await client.quit()
            return result.status

        assert run(main()) == "delivered"
    [envelope] = handler.wait_for(1)
    if dsn:
        assert (envelope.dsn_ret, envelope.dsn_envid) == ("HDRS", "QQ314159")
        assert envelope.rcpt_dsn[0].notify == {"FAILURE", "DELAY"}
        assert envelope.rcpt_dsn[0].orcpt == ("rfc822", "b@y.test")
    else:
        assert (envelope.dsn_ret, envelope.rcpt_options) == (None, [{}])


def test_server_name_is_what_tls_verifies_and_results_report(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    # The route connects to an MX's address; its name is what the certificate holds.
    options = ClientOptions(helo_name="client.test", tls="required", tls_context=client_context)
    with running(Collect(), tls_context=server_context) as (host, port):

        async def main(name: str) -> str | None:
            client = await SMTPClient.connect(host, port, options, server_name=name)
            [result] = await client.send("a@x.test", ["b@y.test"], b"x\r\n")
            await client.quit()
            return result.remote_host

        assert run(main("localhost")) == "localhost"
        with pytest.raises(ConnectFailed, match=r"(?i)certificate"):
            run(main("mx.elsewhere.test"))


@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
def test_a_size_the_client_could_not_know_is_refused_by_the_server(chunking: bool) -> None:
    # A stream without a file descriptor has no known size, so no SIZE check
    # before sending: the server refuses it (mid-BDAT or after DATA), and the
    # connection stays usable.
    handler = Collect()
    with running(handler, max_message_size=100_000, chunking=chunking) as (host, port):

        async def main() -> list[tuple[int, str | None, str | None]]:
            client = await SMTPClient.connect(host, port, PLAIN)
            big = io.BytesIO(b"0123456789abcdef\r\n" * 20_000)  # 360 kB, many chunks
            results = await client.send("a@x.test", ["b@y.test", "c@y.test"], big)
            results += await client.send("a@x.test", ["d@y.test"], b"small\r\n")
            await client.quit()
            return [(r.code, r.enhanced, r.remote_host) for r in results]

        assert run(main()) == [
            (552, "5.3.4", "127.0.0.1"),
            (552, "5.3.4", "127.0.0.1"),
            (250, "2.0.0", "127.0.0.1"),
        ]
    assert [e.rcpt_tos for e in handler.wait_for(1)] == [["d@y.test"]]
