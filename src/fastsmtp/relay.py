"""Relay access control: which recipients a client may give (never an open relay).

With ``local_domains`` set, a recipient in one of those domains (or the
bare ``<Postmaster>``, RFC 5321 §4.5.1) is local and accepted from anyone.
Any other recipient is relayed, which only an authenticated session or a
client in ``relay_networks`` may ask for; everyone else gets ``554 5.7.1
Relay access denied`` at RCPT, as Postfix answers.

With no ``local_domains`` every recipient goes to the local handler (a
catch-all, like aiosmtpd): nothing is relayed, so nothing can be abused.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from .config import ConfigError
from .protocol import replies as R
from .protocol.replies import Reply
from .session import Session

__all__ = ["RelayPolicy", "client_ip"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# How many clients RelayPolicy.client remembers before it starts afresh.
CLIENT_MEMO = 4096


def client_ip(peer: tuple[str, int] | str | None) -> IPAddress | None:
    """The client's IP address from ``Session.peer``; ``None`` for a Unix socket.

    An IPv4-mapped IPv6 address (a dual-stack listener) is the IPv4 address
    it maps, and a zone index is dropped, so that one client is one address.
    """
    if not isinstance(peer, tuple):
        return None
    try:
        ip = ipaddress.ip_address(peer[0].split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class RelayPolicy:
    """Decide at RCPT whether a recipient is local, relayable or refused."""

    __slots__ = ("_clients", "local_domains", "relay_networks")

    def __init__(self, local_domains: Iterable[str], relay_networks: Iterable[str]) -> None:
        self.local_domains = frozenset(d.lower().rstrip(".") for d in local_domains)
        networks: list[Network] = []
        for spec in relay_networks:
            try:
                networks.append(ipaddress.ip_network(spec, strict=False))
            except ValueError:
                raise ConfigError(f"relay_networks: {spec!r} is not a CIDR network") from None
        self.relay_networks = tuple(networks)
        self._clients: dict[str, tuple[str | None, bool]] = {}

    @property
    def enabled(self) -> bool:
        """True when recipients are checked at all (``local_domains`` given)."""
        return bool(self.local_domains)

    def is_local(self, address: str) -> bool:
        """A recipient in a local domain, or the bare postmaster."""
        _, at, domain = address.rpartition("@")
        if not at:
            return address.lower() == "postmaster"
        return domain.lower().rstrip(".") in self.local_domains

    def may_relay(self, session: Session) -> bool:
        """An authenticated session, or a client inside ``relay_networks``."""
        if session.auth:
            return True
        if not self.relay_networks:
            return False
        return self.client(session.peer)[1]

    def client(self, peer: tuple[str, int] | str | None) -> tuple[str | None, bool]:
        """The client's address as text (``client_ip``'s; ``None`` if not IP), and
        whether ``relay_networks`` holds it.

        Remembered per peer address: ``ipaddress`` parsing, ``str`` and the
        network tests cost ~35k instructions, more than the rest of a
        one-message session, and clients come back. The memo starts afresh
        when it holds ``CLIENT_MEMO`` addresses.
        """
        if not isinstance(peer, tuple):
            return None, False
        known = self._clients.get(peer[0])
        if known is None:
            ip = client_ip(peer)
            known = (None, False) if ip is None else (str(ip), self.in_relay_networks(ip))
            if len(self._clients) >= CLIENT_MEMO:
                self._clients.clear()
            self._clients[peer[0]] = known
        return known

    def in_relay_networks(self, ip: IPAddress | None) -> bool:
        """True when ``ip`` is inside one of ``relay_networks``."""
        return ip is not None and any(ip in network for network in self.relay_networks)

    def check(self, address: str, session: Session) -> Reply | None:
        """``None`` to go on with the recipient, or the refusal."""
        if not self.local_domains or self.is_local(address) or self.may_relay(session):
            return None
        return R.RELAY_DENIED
