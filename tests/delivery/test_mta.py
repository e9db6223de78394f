"""fastsmtp as a complete MTA, end to end over real sockets.

A fastsmtp server with a queue (in a thread, or ``fastsmtp serve --config
example.toml`` as a process) takes mail from smtplib; dnsmasq serves the MX
records; fastsmtp test servers on 127.0.0.2 and 127.0.0.3 are the
destination MXs (on the ``delivery_port``); aiosmtpd with STARTTLS and AUTH
is a smarthost. Waits are on events: a test server's arrivals, or a line
in the server's log.
"""

from __future__ import annotations

import errno
import re
import smtplib
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trustme
from dnsmasq import DNSMasq
from peers import MXServers, delivery_status, free_port

from cli.test_serve import serve, stop
from fastsmtp.auth import set_password
from fastsmtp.config import Settings
from fastsmtp.handlers import Collect
from fastsmtp.handlers.relay import Relay
from fastsmtp.protocol.replies import Reply
from fastsmtp.testing import parse_message, running

pytestmark = pytest.mark.interop

HOSTNAME = "mta.here.test"
REPO = Path(__file__).resolve().parents[2]
StartDNS = Callable[..., DNSMasq]
StartMX = Callable[..., MXServers]


def message(subject: str, received: int = 0) -> bytes:
    trace = b"".join(
        b"Received: from hop%d.test by hop%d.test; Mon, 1 Jan 2024 00:00:00 +0000\r\n" % (i, i)
        for i in range(received)
    )
    return trace + f"From: alice@here.test\r\nSubject: {subject}\r\n\r\nbody\r\n".encode()


def two_mx_dns(dnsmasq: StartDNS) -> DNSMasq:
    return dnsmasq(
        mx={"a.test": [("mx1.a.test", 10), ("mx2.a.test", 20)]},
        hosts={"mx1.a.test": ["127.0.0.2"], "mx2.a.test": ["127.0.0.3"]},
    )


@contextmanager
def mta(
    tmp_path: Path, dns: DNSMasq, port: int, **settings: Any
) -> Iterator[tuple[tuple[str, int], Collect]]:
    """A fastsmtp MTA in a thread: here.test is local (kept by ``Collect``), 127.0.0.0/8 relays."""
    config = Settings.from_mapping(
        {
            "hostname": HOSTNAME,
            "queue_dir": str(tmp_path / "queue"),
            "sink": True,  # replaced by the Collect below as the local handler
            "local_domains": ["here.test"],
            "relay_networks": ["127.0.0.0/8"],
            "dns_servers": [dns.address],
            "delivery_port": port,
            **settings,
        }
    )
    local = Collect()
    with running(Relay(config, local), settings=config) as address:
        yield address, local


def test_alias_forwarding_is_announced_and_delivered_to_the_mx(
    tmp_path: Path, dnsmasq: StartDNS, mx_servers: StartMX
) -> None:
    mx = mx_servers("127.0.0.2")
    aliases = tmp_path / "aliases"
    aliases.write_text("carol: bob@a.test, dave\n")
    with mta(
        tmp_path, two_mx_dns(dnsmasq), mx.port, aliases=str(aliases), forwarding="announce"
    ) as (address, local):
        with smtplib.SMTP(*address, timeout=10) as client:
            client.ehlo("client.test")
            client.mail("alice@here.test")
            code, text = client.rcpt("carol@here.test")
            assert (code, text) == (251, b"2.1.5 User not local; will forward to <bob@a.test>")
            assert client.rcpt("erin@here.test")[0] == 250  # not an alias
            code, text = client.data(message("forwarded"))
            assert code == 250 and text.startswith(b"2.0.0 OK: queued as ")
        mx["127.0.0.2"].wait_for(1)
        [local_envelope] = local.wait_for(1)
    [envelope] = mx["127.0.0.2"].envelopes
    assert envelope.mail_from == "alice@here.test"
    assert envelope.rcpt_tos == ["bob@a.test"]
    received = parse_message(envelope.content or b"").get_all("Received")
    assert len(received) == 2  # ours, then the MX's own
    assert f"by {HOSTNAME} (fastsmtp)" in received[1]
    # carol's local target and erin, in one local delivery
    assert sorted(local_envelope.rcpt_tos) == ["dave@here.test", "erin@here.test"]


def test_forwarding_refused_is_551(tmp_path: Path, dnsmasq: StartDNS) -> None:
    aliases = tmp_path / "aliases"
    aliases.write_text("carol: bob@a.test\n")
    settings = {"aliases": str(aliases), "forwarding": "refuse"}
    with (
        mta(tmp_path, dnsmasq(), 2525, **settings) as (address, _),
        smtplib.SMTP(*address, timeout=10) as client,
    ):
        client.ehlo("client.test")
        client.mail("alice@here.test")
        code, text = client.rcpt("carol@here.test")
    assert (code, text) == (551, b"5.1.6 User not local; forwarding refused")


def test_no_open_relay_with_a_queue(tmp_path: Path, dnsmasq: StartDNS) -> None:
    with (
        mta(tmp_path, dnsmasq(), 2525, relay_networks=["192.0.2.0/24"]) as (address, _),
        smtplib.SMTP(*address, timeout=10) as client,
    ):
        client.ehlo("client.test")
        client.mail("spammer@elsewhere.test")
        assert client.rcpt("victim@a.test") == (554, b"5.7.1 Relay access denied")
        assert client.rcpt("carol@here.test")[0] == 250  # local mail is welcome


@pytest.mark.parametrize("enabled", [False, True])
def test_vrfy_and_expn_answer_from_the_aliases_only_when_enabled(
    tmp_path: Path, dnsmasq: StartDNS, enabled: bool
) -> None:
    aliases = tmp_path / "aliases"
    aliases.write_text("team: carol, bob@a.test\n")
    settings = {"aliases": str(aliases), "vrfy_expn": enabled}
    with (
        mta(tmp_path, dnsmasq(), 2525, **settings) as (address, _),
        smtplib.SMTP(*address, timeout=10) as client,
    ):
        client.ehlo("client.test")
        vrfy_team = client.verify("<team@here.test>")
        expn_team = client.expn("team")
        vrfy_user = client.verify("carol")
        expn_user = client.expn("carol@here.test")
    if enabled:
        expanded = (250, b"2.1.5 <carol@here.test>\n2.1.5 <bob@a.test>")
        assert vrfy_team == expn_team == expanded
        assert vrfy_user[0] == 252
        assert expn_user == (550, b"5.1.1 Not a mailing list or alias")
    else:  # the defaults keep the alias map private
        assert vrfy_team[0] == vrfy_user[0] == 252
        assert expn_team[0] == expn_user[0] == 502


def test_a_message_with_too_many_received_headers_is_refused(
    tmp_path: Path, dnsmasq: StartDNS
) -> None:
    with (
        mta(tmp_path, dnsmasq(), 2525, max_received_headers=10) as (address, _),
        smtplib.SMTP(*address, timeout=10) as client,
    ):
        client.ehlo("client.test")
        # 9 + ours = 10: at the limit, accepted
        client.mail("alice@here.test")
        client.rcpt("carol@here.test")
        assert client.data(message("nine hops", received=9))[0] == 250
        client.mail("alice@here.test")
        client.rcpt("carol@here.test")
        code, text = client.data(message("ten hops", received=10))
    assert code == 554 and text.startswith(b"5.4.6 ")


def test_a_queue_that_cannot_store_answers_451_and_keeps_serving(
    tmp_path: Path, dnsmasq: StartDNS, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastsmtp.delivery.queue import Queue

    def disk_full(*args: Any, **kwargs: Any) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    with (
        mta(tmp_path, dnsmasq(), 2525) as (address, _),
        smtplib.SMTP(*address, timeout=10) as client,
    ):
        monkeypatch.setattr(Queue, "enqueue", disk_full)
        client.ehlo("client.test")
        client.mail("alice@here.test")
        client.rcpt("carol@here.test")
        assert client.data(message("no room")) == (
            451,
            b"4.3.0 Error: local error in processing, try again later",
        )
        assert client.noop()[0] == 250


def test_smarthost_with_starttls_and_auth(
    tmp_path: Path,
    dnsmasq: StartDNS,
    ca: trustme.CA,
    server_context: ssl.SSLContext,
) -> None:
    aiosmtpd = pytest.importorskip("aiosmtpd.controller")
    from aiosmtpd.smtp import AuthResult, LoginPassword

    received: list[tuple[Any, Any, list[str], bool]] = []
    arrived = threading.Event()

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"me", b"s3cret")
        return AuthResult(success=ok, auth_data=data)

    class Smarthost:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            tls = session.ssl is not None
            login = session.auth_data.login if session.authenticated else None
            received.append((login, envelope.mail_from, envelope.rcpt_tos, tls))
            arrived.set()
            return "250 2.0.0 OK"

    port = free_port(("127.0.0.1",))
    controller = aiosmtpd.Controller(
        Smarthost(),
        hostname="127.0.0.1",
        port=port,
        tls_context=server_context,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=True,
    )
    auth_file = tmp_path / "smarthost-auth"
    auth_file.write_text("me:s3cret\n")
    auth_file.chmod(0o600)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    controller.start()
    try:
        with mta(
            tmp_path,
            dnsmasq(),
            2525,
            smarthost=f"127.0.0.1:{port}",
            smarthost_auth_file=str(auth_file),
            smarthost_ca_file=str(ca_file),
        ) as (address, _):
            with smtplib.SMTP(*address, timeout=10) as client:
                client.sendmail("alice@here.test", ["bob@far.test"], message("via smarthost"))
            assert arrived.wait(10), "the smarthost got nothing"
    finally:
        controller.stop()
    assert received == [(b"me", "alice@here.test", ["bob@far.test"], True)]


# --- the example configuration, as a process -----------------------------------


@contextmanager
def example_mta(
    tmp_path: Path, ca: trustme.CA, dns: DNSMasq, port: int, *flags: str
) -> Iterator[tuple[Any, Any, tuple[str, int]]]:
    """``fastsmtp serve --config example.toml`` with paths, DNS and ports for the test.

    Its certificate comes from ``ca`` (which ``client_context`` trusts) and
    its one user is ``alice`` with the password ``wonderland``.
    """
    tls = tmp_path / "tls.pem"
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(tls))
    users = tmp_path / "users"
    set_password(str(users), "alice", "wonderland")
    with serve(
        "--config",
        str(REPO / "example.toml"),
        "--tls-cert",
        str(tls),
        "--tls-key",
        str(tls),
        "--auth-file",
        str(users),
        "--hostname",
        HOSTNAME,
        "--local-domain",
        "here.test",
        "--maildir",
        str(tmp_path / "Maildir"),
        "--queue-dir",
        str(tmp_path / "queue"),
        "--dns-server",
        dns.address,
        "--delivery-port",
        str(port),
        *flags,
    ) as (proc, log, address):
        yield proc, log, address
        stop(proc, log)


def test_example_config_delivers_to_the_best_mx_and_falls_back(
    tmp_path: Path, ca: trustme.CA, dnsmasq: StartDNS, mx_servers: StartMX
) -> None:
    mx = mx_servers("127.0.0.2", "127.0.0.3")
    dns = dnsmasq(
        mx={
            "a.test": [("mx1.a.test", 10), ("mx2.a.test", 20)],
            "b.test": [("down.b.test", 10), ("mx2.a.test", 20)],
        },
        hosts={
            "mx1.a.test": ["127.0.0.2"],
            "mx2.a.test": ["127.0.0.3"],
            "down.b.test": ["127.0.0.4"],
        },
    )
    with example_mta(tmp_path, ca, dns, mx.port) as (_, log, address):
        with smtplib.SMTP(*address, timeout=10) as client:
            client.sendmail("alice@here.test", ["bob@a.test"], message("best"))
            client.sendmail("alice@here.test", ["bob@b.test"], message("fallback"))
        mx["127.0.0.2"].wait_for(1)
        mx["127.0.0.3"].wait_for(1)
        log.until(
            re.compile(r"to=<bob@b.test> via=MX of b.test host=mx2.a.test status=delivered"), 10
        )
    assert [m["Subject"] for m in mx["127.0.0.2"].messages] == ["best"]
    assert [m["Subject"] for m in mx["127.0.0.3"].messages] == ["fallback"]


def test_example_config_retries_a_4xx_and_bounces_a_5xx_to_the_local_sender(
    tmp_path: Path, ca: trustme.CA, dnsmasq: StartDNS, mx_servers: StartMX
) -> None:
    mx = mx_servers("127.0.0.2")
    dns = dnsmasq(mx={"a.test": [("mx1.a.test", 10)]}, hosts={"mx1.a.test": ["127.0.0.2"]})
    mx["127.0.0.2"].fail_next_rcpt(Reply(451, "4.7.1", "Greylisted, come back later"))
    with example_mta(tmp_path, ca, dns, mx.port, "--retry-first", "0.2") as (_, log, address):
        with smtplib.SMTP(*address, timeout=10) as client:
            client.sendmail("alice@here.test", ["grey@a.test"], message("greylisted"))
            log.until(re.compile(r"to=<grey@a.test> .* status=deferred \(451 4.7.1"), 10)
            [retried] = mx["127.0.0.2"].wait_for(1)  # retried 0.2 s later, accepted
            mx["127.0.0.2"].fail_next_rcpt(Reply(550, "5.1.1", "No such user"))
            client.sendmail("alice@here.test", ["nobody@a.test"], message("refused"))
        log.until(re.compile(r"to=<nobody@a.test> .* status=failed \(550 5.1.1"), 10)
        log.until(re.compile(r"to=<alice@here.test> via=local host=- status=delivered"), 10)
    assert retried["Subject"] == "greylisted"
    [bounce] = (tmp_path / "Maildir" / "new").iterdir()
    report = parse_message(bounce.read_bytes())
    assert report["Return-Path"] == "<>"
    blocks = delivery_status(report)
    assert blocks[1]["Final-Recipient"] == "rfc822; nobody@a.test"
    assert (blocks[1]["Action"], blocks[1]["Status"]) == ("failed", "5.1.1")
    [original] = [p for p in report.walk() if p.get_content_type() == "message/rfc822"]
    assert original.get_payload()[0]["Subject"] == "refused"


def test_example_config_relays_for_authenticated_users_only(
    tmp_path: Path,
    ca: trustme.CA,
    client_context: ssl.SSLContext,
    dnsmasq: StartDNS,
    mx_servers: StartMX,
) -> None:
    mx = mx_servers("127.0.0.2")
    dns = dnsmasq(mx={"a.test": [("mx1.a.test", 10)]}, hosts={"mx1.a.test": ["127.0.0.2"]})
    # This client (127.0.0.1) is not in the trusted networks here: only AUTH lets it relay.
    flags = ("--relay-network", "192.0.2.0/24")
    with example_mta(tmp_path, ca, dns, mx.port, *flags) as (_, log, address):
        with smtplib.SMTP(*address, timeout=10) as client:
            client.starttls(context=client_context)
            client.ehlo()
            client.mail("alice@here.test")
            assert client.rcpt("bob@a.test") == (554, b"5.7.1 Relay access denied")
            client.rset()
            with pytest.raises(smtplib.SMTPAuthenticationError):
                client.login("alice", "looking-glass")
            client.login("alice", "wonderland")
            client.sendmail("alice@here.test", ["bob@a.test"], message("authenticated"))
        [delivered] = mx["127.0.0.2"].wait_for(1)
        log.until(re.compile(r"to=<bob@a.test> .* status=delivered"), 10)
    assert delivered["Subject"] == "authenticated"
    assert " with ESMTPSA id " in delivered.as_string()


QUEUED = ["--sink", "--local-domain", "h.test"]


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (["--sink"], "queue_dir needs local_domains"),
        (["--local-domain", "here.test"], "queue_dir needs a local handler"),
        ([*QUEUED, "--forwarding", "maybe"], "forwarding must be"),
        (
            [*QUEUED, "--smarthost", "relay"],
            "smarthost needs HOST:PORT",
        ),
        (
            [*QUEUED, "--smarthost-route", "x.test"],
            "smarthost_routes needs DOMAIN=HOST:PORT",
        ),
        ([*QUEUED, "--dns-server", "dns.test:53"], "dns_servers"),
        ([*QUEUED, "--retry-first", "0"], "must be positive"),
        ([*QUEUED, "--workers", "2"], "one process"),
    ],
)
def test_bad_delivery_settings_are_clear_errors(
    tmp_path: Path, flags: list[str], error: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fastsmtp", "serve", "--queue-dir", str(tmp_path / "q"), *flags],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert error in result.stderr
    assert "Traceback" not in result.stderr


def test_a_queue_dir_that_cannot_be_opened_is_a_clear_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "queue"
    not_a_dir.write_text("a file, not a directory\n")
    result = subprocess.run(
        [sys.executable, "-m", "fastsmtp", "serve", "--queue-dir", str(not_a_dir), *QUEUED],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert f"cannot open the queue in queue_dir '{not_a_dir}'" in result.stderr
    assert "Traceback" not in result.stderr
