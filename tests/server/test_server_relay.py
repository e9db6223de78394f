"""Relay access control over real sockets: local domains, relay networks, 554 5.7.1."""

from __future__ import annotations

import re

import pytest

from fastsmtp import Collect, ConfigError
from fastsmtp.relay import RelayPolicy
from fastsmtp.session import Session


def test_without_local_domains_every_recipient_is_local(serve, client):
    handler = Collect()
    raw = client(serve(handler))
    raw.begin("<a@example.com>", "<anyone@anywhere.example>")
    assert raw.send_message(b"Subject: x\r\n\r\nx\r\n").code == 250
    assert handler.wait_for(1)[0].rcpt_tos == ["anyone@anywhere.example"]


def test_an_outsider_cannot_relay(serve, client):
    handler = Collect()
    raw = client(serve(handler, local_domains=["example.com"]))
    raw.ehlo()
    assert raw.cmd("MAIL FROM:<spammer@elsewhere.example>").code == 250
    refused = raw.cmd("RCPT TO:<victim@other.example>")
    assert (refused.code, refused.enhanced, refused.text) == (554, "5.7.1", "Relay access denied")
    for local in ("<user@example.com>", "<User@EXAMPLE.COM>", "<Postmaster>"):
        assert raw.cmd(f"RCPT TO:{local}").code == 250, local
    assert raw.send_message(b"Subject: x\r\n\r\nx\r\n").code == 250
    assert handler.wait_for(1)[0].rcpt_tos == ["user@example.com", "User@EXAMPLE.COM", "Postmaster"]


def test_a_relay_network_may_relay(serve, client):
    raw = client(serve(Collect(), local_domains=["example.com"], relay_networks=["127.0.0.0/8"]))
    raw.begin("<a@example.com>", "<someone@other.example>")


def test_a_foreign_relay_network_does_not_help(serve, client):
    raw = client(serve(Collect(), local_domains=["example.com"], relay_networks=["10.0.0.0/8"]))
    raw.ehlo()
    assert raw.cmd("MAIL FROM:<a@example.com>").code == 250
    assert raw.cmd("RCPT TO:<someone@other.example>").code == 554


def test_relay_attempts_count_towards_the_error_limit(serve, client):
    raw = client(serve(Collect(), local_domains=["example.com"], max_errors=3))
    raw.ehlo()
    assert raw.cmd("MAIL FROM:<a@example.com>").code == 250
    assert raw.cmd("RCPT TO:<a@x.example>").code == 554
    assert raw.cmd("RCPT TO:<b@x.example>").code == 554
    raw.send(b"RCPT TO:<c@x.example>\r\n")
    assert [r.code for r in raw.replies(2)] == [554, 421]
    raw.expect_closed()


@pytest.mark.parametrize(
    ("peer", "allowed"),
    [
        (("192.0.2.7", 25), True),
        (("::ffff:192.0.2.7", 25), True),  # IPv4-mapped, from a dual-stack socket
        (("2001:db8::1", 25), True),
        (("198.51.100.1", 25), False),
        ("/run/fastsmtp.sock", False),
    ],
)
def test_relay_networks_match_ipv4_ipv6_and_mapped(peer, allowed):
    policy = RelayPolicy(["example.com"], ["192.0.2.0/24", "2001:db8::/32"])
    session = Session(id="s", peer=peer)
    assert policy.may_relay(session) is allowed
    assert (policy.check("x@other.example", session) is None) is allowed


def test_authenticated_sessions_may_relay():
    policy = RelayPolicy(["example.com"], [])
    assert policy.check("x@other.example", Session(id="s", auth="alice")) is None
    assert policy.check("x@other.example", Session(id="s")) is not None


def test_a_bad_relay_network_is_a_config_error():
    with pytest.raises(ConfigError, match=re.escape("relay_networks: '10.0.0.0/33' is not a CIDR")):
        RelayPolicy([], ["10.0.0.0/33"])
