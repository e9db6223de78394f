"""Settings: one typed object, the same names as keywords, TOML keys and CLI flags.

``Settings`` is the single source of every setting. ``Server(handler,
max_message_size=...)`` takes its fields as keywords, a TOML file uses them
as keys (``fastsmtp serve --config FILE``), and the CLI derives its flags
from them: ``max_message_size`` is ``--max-message-size``; a list field is a
repeatable flag named by its ``flag`` metadata (``listen`` is ``--listen``);
a boolean is ``--name``/``--no-name``. ``fastsmtp settings`` prints this
table, so the reference cannot drift from the code.
"""

from __future__ import annotations

import socket
import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "Settings", "load_toml"]

#: a ``listen`` value starting with this names a Unix socket path
UNIX_PREFIX = "unix:"
#: the settings that choose a local handler (one at most)
_LOCAL_HANDLERS = ("maildir", "mbox", "sink", "print", "lmtp_forward", "webhook", "pipe")


class ConfigError(ValueError):
    """A setting has a bad name or value; the message says which and why."""


def _setting(default: Any, help: str, *, flag: str | None = None, factory: bool = False) -> Any:
    meta = {"help": help, "flag": flag}
    if factory:
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True, slots=True)
class Settings:
    """Every fastsmtp setting, with its default."""

    # --- listeners and identity ---
    listen: tuple[str, ...] = _setting(
        ("127.0.0.1:8025",),
        "plain listener as HOST:PORT, or unix:/PATH for a Unix socket (repeatable)",
        flag="listen",
    )
    hostname: str = _setting(
        socket.gethostname, "name in the greeting, EHLO reply and Received:", factory=True
    )

    # --- TLS (RFC 3207, RFC 8314) ---
    tls_cert: str | None = _setting(None, "PEM certificate chain for STARTTLS and implicit TLS")
    tls_key: str | None = _setting(None, "PEM private key for tls_cert")
    implicit_tls_listen: tuple[str, ...] = _setting(
        (),
        "implicit-TLS listener as HOST:PORT, port 465 style (repeatable)",
        flag="implicit_tls_listen",
    )
    require_tls: bool = _setting(False, "refuse MAIL with 530 5.7.0 until STARTTLS")
    tls_handshake_timeout: float = _setting(30.0, "seconds allowed for a TLS handshake")

    # --- AUTH (RFC 4954) ---
    auth_file: str | None = _setting(
        None, "users for AUTH, one user:hash per line (write it with 'fastsmtp passwd')"
    )
    auth_without_tls: bool = _setting(
        False, "offer AUTH without TLS too (passwords in clear: for tests or loopback only)"
    )
    require_auth: bool = _setting(False, "refuse MAIL with 530 5.7.0 until AUTH succeeds")
    auth_max_failures: int = _setting(
        5, "failed AUTH attempts per client IP within auth_failure_window before 421 4.7.0"
    )
    auth_failure_window: float = _setting(300.0, "seconds failed AUTH attempts are remembered")

    # --- relay access control (never an open relay) ---
    local_domains: tuple[str, ...] = _setting(
        (),
        "domain whose mail is local; others need AUTH or a relay network (repeatable)",
        flag="local_domain",
    )
    relay_networks: tuple[str, ...] = _setting(
        (),
        "client network (CIDR) allowed to relay to non-local domains (repeatable)",
        flag="relay_network",
    )

    # --- the local handler (serve) ---
    maildir: str | None = _setting(None, "deliver into this Maildir (created if missing)")
    mbox: str | None = _setting(None, "append to this mbox file")
    sink: bool = _setting(False, "accept and discard every message")
    print: bool = _setting(False, "write every message to standard output")
    lmtp_forward: str | None = _setting(
        None, "hand mail to this LMTP server: HOST:PORT or unix:/PATH (Dovecot, Cyrus)"
    )
    webhook: str | None = _setting(None, "POST every message to this http(s) URL; non-2xx: retry")
    webhook_headers: tuple[str, ...] = _setting(
        (),
        "'Name: value' header added to each web hook request (repeatable)",
        flag="webhook_header",
    )
    pipe: str | None = _setting(
        None, "run this command (split like a shell, no shell) with the message on stdin"
    )

    # --- outbound delivery: queue, routing, retries (RFC 5321 §4.5.4, §5) ---
    queue_dir: str | None = _setting(
        None,
        "durable outbound queue directory; with it, accepted mail is queued, local-domain "
        "mail goes to the local handler and the rest by MX or smarthost",
    )
    aliases: str | None = _setting(None, "aliases(5) file: forwarding and lists (with queue_dir)")
    forwarding: str = _setting(
        "accept",
        "RCPT of an alias that forwards off this host: accept (250), announce "
        "(251 User not local) or refuse (551 5.1.6)",
    )
    vrfy_expn: bool = _setting(
        False, "answer VRFY and EXPN from the aliases (off: 252 and 502, for privacy)"
    )
    etrn: bool = _setting(
        False,
        "accept ETRN (RFC 1985) from clients that may relay (AUTH or relay_networks): "
        "retry the queued mail of their domain now",
    )
    atrn_domains: tuple[str, ...] = _setting(
        (),
        "DOMAIN=USER: hold DOMAIN's mail in the queue until USER, authenticated, "
        "fetches it with ATRN (RFC 2645, On-Demand Mail Relay) (repeatable)",
        flag="atrn_domain",
    )
    smarthost: str | None = _setting(
        None, "relay all non-local mail through this HOST:PORT instead of MX delivery"
    )
    smarthost_routes: tuple[str, ...] = _setting(
        (),
        "DOMAIN=HOST:PORT: relay one recipient domain through that host (repeatable)",
        flag="smarthost_route",
    )
    smarthost_auth_file: str | None = _setting(
        None, "file holding USER:PASSWORD for AUTH at the smarthost (keep it mode 0600)"
    )
    smarthost_tls: str = _setting(
        "required", "STARTTLS to the smarthost: required, opportunistic or none"
    )
    smarthost_ca_file: str | None = _setting(
        None, "PEM CA certificates to verify the smarthost with (default: the system's)"
    )
    dns_servers: tuple[str, ...] = _setting(
        (),
        "DNS server for MX lookups as IP:PORT (repeatable; default: the system resolver)",
        flag="dns_server",
    )
    delivery_port: int = _setting(25, "TCP port that outbound MX delivery connects to")
    retry_first: float = _setting(
        300.0, "seconds before the first retry of a deferred recipient (doubles each time)"
    )
    retry_max: float = _setting(4000.0, "longest wait between two retries, in seconds")
    queue_lifetime: float = _setting(
        5 * 86400.0, "seconds a recipient may stay undeliverable before it bounces"
    )
    delay_warning: float = _setting(
        4 * 3600.0, "seconds undelivered before a DSN delay notice to the sender (0: never)"
    )
    bounce_size_limit: int = _setting(
        50_000,
        "a failure report returns the whole message up to this many octets, "
        "only its header beyond (0: always whole)",
    )
    max_received_headers: int = _setting(
        100,
        "messages with more Received: headers (ours included) are refused as looping (554 5.4.6)",
    )

    # --- limits (RFC 5321 §4.5.3) ---
    max_message_size: int = _setting(
        32 * 1024 * 1024, "largest message accepted, in octets (advertised by SIZE)"
    )
    max_recipients: int = _setting(100, "recipients per transaction; more get 452 4.5.3")
    max_command_line: int = _setting(512, "longest command line, in octets with CRLF")
    max_line_length: int = _setting(
        1000, "longest message text line, in octets with CRLF (0: no limit)"
    )
    max_errors: int = _setting(10, "bad commands before the server says 421 and closes")
    max_junk_commands: int = _setting(
        100,
        "NOOP, RSET, HELP, VRFY, EXPN and ETRN since the last message; each one "
        "more counts as a bad command (0: no limit)",
    )
    command_timeout: float = _setting(300.0, "seconds to wait for a command (RFC: 5 min)")
    data_timeout: float = _setting(180.0, "seconds to wait for more message data (RFC: 3 min)")

    # --- abuse limits (0 turns one off) and the PROXY protocol ---
    max_connections: int = _setting(
        1000, "clients served at once; more get 421 4.7.0 (0: no limit)"
    )
    max_connections_per_ip: int = _setting(
        50, "clients at once from one address, relay_networks exempt (0: no limit)"
    )
    max_connection_rate_per_ip: int = _setting(
        0, "new connections per minute from one address, relay_networks exempt (0: no limit)"
    )
    max_transactions: int = _setting(
        0, "mail transactions per connection; the next MAIL gets 421 4.7.0 (0: no limit)"
    )
    min_data_rate: int = _setting(
        500, "octets/s a message must average beyond data_timeout, against trickling (0: off)"
    )
    greet_pause: float = _setting(
        0.0, "seconds to wait before the greeting; a client talking first gets 554 5.5.1 (0: off)"
    )
    proxy_protocol: bool = _setting(
        False, "expect a HAProxy PROXY v1/v2 header on the plain listeners (not implicit TLS)"
    )
    proxy_timeout: float = _setting(5.0, "seconds to wait for the PROXY header")

    # --- wire strictness ---
    strict_crlf: bool = _setting(
        True, "refuse bare CR/LF in commands and messages (against SMTP smuggling)"
    )
    lenient_addresses: bool = _setting(False, "accept MAIL/RCPT paths without angle brackets")

    # --- extensions ---
    pipelining: bool = _setting(True, "advertise PIPELINING (RFC 2920)")
    eightbitmime: bool = _setting(True, "advertise 8BITMIME (RFC 6152)")
    smtputf8: bool = _setting(True, "advertise SMTPUTF8 (RFC 6531)")
    chunking: bool = _setting(True, "advertise CHUNKING and take BDAT (RFC 3030)")
    binarymime: bool = _setting(True, "advertise BINARYMIME (RFC 3030 §3; needs chunking)")
    dsn: bool = _setting(
        False,
        "advertise DSN (RFC 3461) and take RET/ENVID/NOTIFY/ORCPT; handlers get them "
        "typed and must honour them",
    )

    # --- LMTP (RFC 2033) ---
    lmtp: bool = _setting(
        False, "speak LMTP (RFC 2033): LHLO, and one reply per recipient after the message"
    )

    # --- message bodies ---
    spool_threshold: int = _setting(
        1024 * 1024, "bodies larger than this many octets are spooled to a temporary file"
    )
    spool_dir: str | None = _setting(
        None, "directory for spooled bodies (default: the system's temporary directory)"
    )

    # --- runtime ---
    loop: str = _setting("auto", "event loop: auto (uvloop when installed), asyncio or uvloop")
    workers: int = _setting(1, "server processes sharing the listeners (SO_REUSEPORT)")
    log_level: str = _setting("INFO", "logging level: DEBUG, INFO, WARNING, ERROR")

    def __post_init__(self) -> None:
        for name in ("max_message_size", "max_recipients", "max_errors", "workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.max_command_line < 64:
            raise ConfigError("max_command_line must be at least 64 octets (RFC 5321 §4.5.3.1.4)")
        if self.max_line_length and self.max_line_length < 3:
            raise ConfigError("max_line_length must be 0 (no limit) or at least 3 octets")
        if self.command_timeout <= 0 or self.data_timeout <= 0:
            raise ConfigError("command_timeout and data_timeout must be positive seconds")
        if self.auth_max_failures < 1 or self.auth_failure_window <= 0:
            raise ConfigError("auth_max_failures must be at least 1, auth_failure_window positive")
        for name in _ZERO_TURNS_OFF:
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 (off) or more, not {getattr(self, name)}")
        if self.proxy_timeout <= 0:
            raise ConfigError("proxy_timeout must be positive seconds")
        if self.loop not in ("auto", "asyncio", "uvloop"):
            raise ConfigError(f"loop must be 'auto', 'asyncio' or 'uvloop', not {self.loop!r}")
        chosen = [n for n in _LOCAL_HANDLERS if getattr(self, n)]
        if len(chosen) > 1:
            raise ConfigError(f"choose one local handler, not {' and '.join(chosen)}")
        for spec in self.listen:
            if not spec.startswith(UNIX_PREFIX):
                parse_hostport(spec, setting="listen")
            elif not spec[len(UNIX_PREFIX) :]:
                raise ConfigError("listen needs a path after 'unix:', as in unix:/run/lmtp.sock")
            elif self.workers > 1:
                raise ConfigError(f"listen {spec!r}: workers > 1 cannot share a Unix socket")
        if self.spool_threshold < 0:
            raise ConfigError(
                f"spool_threshold must be 0 or more octets, not {self.spool_threshold}"
            )
        for spec in self.implicit_tls_listen:
            parse_hostport(spec, setting="implicit_tls_listen")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls_cert and tls_key go together: give both or neither")
        if self.queue_dir:
            _check_delivery(self)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], base: Settings | None = None) -> Settings:
        """Build settings from keywords or TOML keys, naming any unknown one."""
        known = {f.name: f for f in fields(cls)}
        changes: dict[str, Any] = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ConfigError(f"unknown setting {key!r}; see 'fastsmtp settings' for the list")
            changes[name] = _coerce(name, known[name].type, value)
        return replace(base, **changes) if base else cls(**changes)

    def handler_name(self) -> str | None:
        """Which local handler the settings choose, if any."""
        for name in _LOCAL_HANDLERS:
            if getattr(self, name):
                return name
        return None


_ZERO_TURNS_OFF = (
    "max_connections",
    "max_connections_per_ip",
    "max_connection_rate_per_ip",
    "max_transactions",
    "max_junk_commands",
    "min_data_rate",
    "greet_pause",
    "bounce_size_limit",
)


def _coerce(name: str, kind: Any, value: Any) -> Any:
    """Check a value's type against the field's annotation (a string here)."""
    text = str(kind)
    if text.startswith("tuple"):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name} must be a list of strings, not {value!r}")
        return tuple(value)
    expected: tuple[type, ...]
    if text == "bool":
        expected = (bool,)
    elif text == "int":
        expected = (int,)
    elif text == "float":
        expected = (int, float)
    else:
        expected = (str, type(None)) if "None" in text else (str,)
    if not isinstance(value, expected) or (text != "bool" and isinstance(value, bool)):
        raise ConfigError(f"{name} must be {text}, not {value!r}")
    return float(value) if text == "float" else value  # type: ignore[arg-type]


def _check_delivery(settings: Settings) -> None:
    """The delivery settings make sense together (only checked with a queue_dir)."""
    if not settings.local_domains:
        raise ConfigError(
            "queue_dir needs local_domains (at least one, e.g. your own domain or "
            "'localhost'): without them every recipient would be relayed"
        )
    if settings.handler_name() is None:
        raise ConfigError(
            "queue_dir needs a local handler for local_domains: " + ", ".join(_LOCAL_HANDLERS)
        )
    if settings.workers > 1:
        raise ConfigError("queue_dir works with one process: set workers = 1")
    if settings.forwarding not in ("accept", "announce", "refuse"):
        raise ConfigError(
            f"forwarding must be accept, announce or refuse, not {settings.forwarding!r}"
        )
    if settings.smarthost_tls not in ("required", "opportunistic", "none"):
        raise ConfigError(
            f"smarthost_tls must be required, opportunistic or none, not {settings.smarthost_tls!r}"
        )
    if settings.smarthost:
        parse_hostport(settings.smarthost, setting="smarthost")
    for route in settings.smarthost_routes:
        domain, sep, target = route.partition("=")
        if not sep or not domain:
            raise ConfigError(f"smarthost_routes needs DOMAIN=HOST:PORT, not {route!r}")
        parse_hostport(target, setting="smarthost_routes")
    if not 0 < settings.delivery_port < 65536:
        raise ConfigError(f"delivery_port must be a TCP port, not {settings.delivery_port}")
    if min(settings.retry_first, settings.retry_max, settings.queue_lifetime) <= 0:
        raise ConfigError("retry_first, retry_max and queue_lifetime must be positive seconds")
    if settings.delay_warning < 0 or settings.max_received_headers < 1:
        raise ConfigError("delay_warning must be >= 0 and max_received_headers >= 1")


def parse_hostport(spec: str, *, setting: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` or ``[IPv6]:PORT``; raise ConfigError naming ``setting``."""
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{setting} needs HOST:PORT, not {spec!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port)


def load_toml(path: str | Path, base: Settings | None = None) -> Settings:
    """Read settings from a TOML file (top-level keys are setting names)."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return Settings.from_mapping(data, base)


def setting_fields() -> list[tuple[str, str, Any, str]]:
    """``(name, flag, default, help)`` for every setting, for the CLI and docs."""
    out = []
    for f in fields(Settings):
        default = f.default if f.default is not MISSING else "(computed)"
        flag = "--" + (f.metadata.get("flag") or f.name).replace("_", "-")
        out.append((f.name, flag, default, f.metadata["help"]))
    return out
