"""Where each recipient goes: the local handler, a smarthost, or the domain's MX hosts.

``Router.decide(recipient)`` is pure and cheap (no DNS): a recipient in a
local domain (or the bare ``postmaster``) is ``Local``; a domain with a
``smarthost_routes`` entry, or any domain when ``smarthost`` is set, goes to
that ``Smarthost``; a domain in ``hold_domains`` (the ``atrn_domains``) is
``Hold``: it waits for ATRN; everything else is ``MX(domain)``. Alias expansion has
happened before (at enqueue), so the recipients seen here are final.

``Router.targets(route)`` turns a remote route into the addresses to try,
in order. For MX routes it applies RFC 5321 §5.1's loop rule: if this host
is among the MX hosts (one of our listening addresses on the delivery
port, or our host name), it and every less preferred host are dropped;
if nothing is left the best MX is us, and the mail would loop: ``MailLoop``
(554 5.4.6).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..config import parse_hostport
from ..protocol import replies as R
from ..relay import RelayPolicy
from .mx import DeliveryError, MXResolver, address_literal

__all__ = ["MX", "Hold", "Local", "MailLoop", "Route", "Router", "Smarthost", "Target"]


@dataclass(frozen=True, slots=True)
class Local:
    """Delivered by the local handler (Maildir, mbox...)."""


@dataclass(frozen=True, slots=True)
class Smarthost:
    """Relayed through a configured host, which does the MX delivery."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"smarthost {self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class MX:
    """Delivered to the MX hosts of ``domain`` (lowercase, or an address literal)."""

    domain: str

    def __str__(self) -> str:
        return f"MX of {self.domain}"


@dataclass(frozen=True, slots=True)
class Hold:
    """Kept in the queue for ``domain``'s owner to fetch with ATRN (RFC 2645)."""

    domain: str

    def __str__(self) -> str:
        return f"ATRN hold for {self.domain}"


Route = Local | Smarthost | MX | Hold


@dataclass(frozen=True, slots=True)
class Target:
    """One place to connect to: ``name`` for logs and bounces, ``address`` to connect."""

    name: str
    address: str
    port: int


class MailLoop(DeliveryError):
    """The best MX of the domain is this host (RFC 5321 §5.1)."""


def recipient_domain(address: str) -> str:
    """The domain of ``address``, lowercased (address literals kept as written)."""
    domain = address.rpartition("@")[2]
    return domain if domain.startswith("[") else domain.lower().rstrip(".")


class Router:
    """Decide a route per recipient, and the addresses to try per remote route.

    ``smarthost_routes`` maps a domain to ``"HOST:PORT"``; ``smarthost``
    (``"HOST:PORT"``) takes every other remote domain. ``hostname`` and the
    addresses given to ``set_listening`` are what counts as "this host" for
    loop detection.
    """

    def __init__(
        self,
        policy: RelayPolicy,
        resolver: MXResolver,
        *,
        hostname: str,
        delivery_port: int = 25,
        smarthost: str | None = None,
        smarthost_routes: Mapping[str, str] | None = None,
        hold_domains: Iterable[str] = (),
    ) -> None:
        self.policy = policy
        self.resolver = resolver
        self.hostname = hostname.lower().rstrip(".")
        self.delivery_port = delivery_port
        self.smarthost = _smarthost(smarthost, "smarthost") if smarthost else None
        self.routes = {
            domain.lower().rstrip("."): _smarthost(target, "smarthost_routes")
            for domain, target in (smarthost_routes or {}).items()
        }
        self.hold_domains = frozenset(d.lower().rstrip(".") for d in hold_domains)
        self._ours: set[tuple[str, int]] = set()
        self._wildcard_ports: set[int] = set()
        self._host_addresses: frozenset[str] = frozenset()

    def set_listening(self, addresses: Iterable[tuple[str, int]]) -> None:
        """Our listening ``(host, port)`` pairs: an MX on one of them is this host."""
        for host, port in addresses:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
            if ip.is_unspecified:
                self._wildcard_ports.add(port)
            else:
                self._ours.add((str(ip), port))
        if self._wildcard_ports:
            self._host_addresses = _addresses_of(self.hostname)

    def decide(self, recipient: str) -> Route:
        """The route for one (already alias-expanded) recipient."""
        if self.policy.is_local(recipient):
            return Local()
        domain = recipient_domain(recipient)
        if domain in self.hold_domains:
            return Hold(domain)
        routed = self.routes.get(domain) or self.smarthost
        if routed is not None:
            return routed
        return MX(domain)

    async def targets(self, route: Smarthost | MX) -> list[Target]:
        """Addresses to try in order; raise ``DeliveryError`` (``MailLoop`` among them)."""
        if isinstance(route, Smarthost):
            # The host name is kept: the client resolves it and verifies TLS against it.
            return [Target(route.host, route.host, route.port)]
        hosts = await self.resolver.lookup(route.domain)
        ours = [h.preference for h in hosts if self._is_us(h.name, h.address)]
        if ours:
            hosts = [h for h in hosts if h.preference < min(ours)]
            if not hosts:
                raise MailLoop(R.MX_LOOP, route.domain)
        return [Target(h.name, h.address, self.delivery_port) for h in hosts]

    def _is_us(self, name: str, address: str) -> bool:
        if address_literal(name) is None and name.lower().rstrip(".") == self.hostname:
            return True
        port = self.delivery_port
        ip = ipaddress.ip_address(address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if (str(ip), port) in self._ours:
            return True
        return port in self._wildcard_ports and (
            ip.is_loopback or ip.is_unspecified or str(ip) in self._host_addresses
        )


def _smarthost(spec: str, setting: str) -> Smarthost:
    host, port = parse_hostport(spec, setting=setting)
    return Smarthost(host, port)


def _addresses_of(hostname: str) -> frozenset[str]:
    """This host's addresses by its name (for wildcard listeners); empty if it has none."""
    try:
        infos = socket.getaddrinfo(hostname, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return frozenset()
    return frozenset(str(info[4][0]) for info in infos)
