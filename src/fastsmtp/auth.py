"""SASL mechanisms and authenticators for SMTP AUTH (RFC 4954).

Theory of operation
===================

The mechanisms here are sans-IO, like ``protocol/``: no asyncio, no socket.
``SASLServer`` runs one AUTH exchange for ``ServerConnection``: it takes the
AUTH command's arguments and then each client line (base64, or ``*`` to
cancel), and returns what to do next:

- a ``Reply``: a 334 challenge (the exchange goes on), or a refusal that
  ends it (bad base64, malformed response, cancel, unknown mechanism);
- an ``Authenticate`` decision event: the application must check a
  password (PLAIN, LOGIN) or give the user's SCRAM secrets (SCRAM-SHA-256);
  its answer comes back through ``SASLServer.answer``;
- an ``AuthResult`` notice: the exchange is over, ``identity`` is who the
  client proved to be, or ``None`` for bad credentials.

An *authenticator* is what the application plugs in: a callable
``(session, mechanism, username, password) -> bool | str | None`` (sync or
async; a ``str`` is the identity to record, ``True`` means the username,
``False``/``None`` refuse). SCRAM never shows the server a password, so it
is offered only when the authenticator also has a method
``scram_secrets(username) -> ScramSecrets | None`` (sync or async).
``FileAuthenticator`` is both, backed by a file ``fastsmtp passwd`` writes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import re
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ConfigError, Settings
from .protocol import replies as R
from .protocol.events import Authenticate, AuthResult
from .protocol.replies import Reply
from .session import Session

__all__ = [
    "Authenticator",
    "FailureLimiter",
    "FileAuthenticator",
    "SASLServer",
    "ScramSecrets",
    "authenticator_from",
    "mechanisms_for",
    "set_password",
]

PLAIN, LOGIN, SCRAM = "PLAIN", "LOGIN", "SCRAM-SHA-256"
#: what AUTH advertises for a password authenticator, strongest first
PASSWORD_MECHANISMS = (PLAIN, LOGIN)

AuthAnswer = bool | str | None
Authenticator = Callable[[Session, str, str, str], AuthAnswer | Awaitable[AuthAnswer]]
"""``(session, mechanism, username, password) -> bool | str | None``, sync or async."""


class SASLSyntaxError(ValueError):
    """The client's response does not follow the mechanism's syntax (501 5.5.2)."""


class SASLFailure(ValueError):
    """The client failed to authenticate (535 5.7.8)."""


# --- SCRAM secrets (RFC 5802 §3, RFC 7677) ----------------------------------
SCRAM_ITERATIONS = 4096  # RFC 7677 §4: at least 4096
_SCRAM_TEXT = re.compile(
    r"SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)"
)


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class ScramSecrets:
    """What a server keeps to check SCRAM-SHA-256 without knowing the password.

    The text form is PostgreSQL's:
    ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` (base64).
    """

    salt: bytes
    iterations: int
    stored_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)

    @classmethod
    def from_password(
        cls, password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS
    ) -> ScramSecrets:
        """Derive the secrets (RFC 5802 §3); the password is used as UTF-8, without SASLprep."""
        salt = os.urandom(16) if salt is None else salt
        salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
        stored = hashlib.sha256(_hmac(salted, b"Client Key")).digest()
        return cls(salt, iterations, stored, _hmac(salted, b"Server Key"))

    @classmethod
    def parse(cls, text: str) -> ScramSecrets:
        """Read the text form; ValueError when it is not one."""
        match = _SCRAM_TEXT.fullmatch(text)
        if match is None:
            raise ValueError("not SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>")
        salt, stored, server = (base64.b64decode(match[i], validate=True) for i in (2, 3, 4))
        if len(stored) != 32 or len(server) != 32 or int(match[1]) < 1:
            raise ValueError("SCRAM-SHA-256 keys are 32 octets and iterations at least 1")
        return cls(salt, int(match[1]), stored, server)

    def __str__(self) -> str:
        salt, stored, server = (
            base64.b64encode(v).decode() for v in (self.salt, self.stored_key, self.server_key)
        )
        return f"SCRAM-SHA-256${self.iterations}:{salt}${stored}:{server}"


# --- mechanisms ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Challenge:
    data: bytes


@dataclass(frozen=True, slots=True)
class _Credentials:
    """Ask the application: check ``password``, or (``None``) give SCRAM secrets."""

    username: str
    password: str | None = field(repr=False)


@dataclass(frozen=True, slots=True)
class _Success:
    identity: str


_Step = _Challenge | _Credentials | _Success


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SASLSyntaxError("not UTF-8") from None


def _authorize(authzid: str, username: str) -> None:
    # Acting for another identity (RFC 4616 §2) is not supported: refuse it.
    if authzid and authzid != username:
        raise SASLFailure("authorization identity differs from the username")


class _Plain:
    """PLAIN (RFC 4616): ``authzid NUL authcid NUL passwd`` in one response."""

    name = PLAIN
    username = ""

    def start(self, initial: bytes | None) -> _Step:
        return _Challenge(b"") if initial is None else self.step(initial)

    def step(self, data: bytes) -> _Step:
        parts = _text(data).split("\0")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise SASLSyntaxError("PLAIN wants authzid NUL authcid NUL passwd")
        self.username = parts[1]
        _authorize(parts[0], parts[1])
        return _Credentials(parts[1], parts[2])


class _Login:
    """LOGIN (draft-murchison-sasl-login): username, then password, each prompted."""

    name = LOGIN

    def __init__(self) -> None:
        self.username = ""
        self._prompted = False

    def start(self, initial: bytes | None) -> _Step:
        # Clients such as smtplib send the username as initial response.
        return _Challenge(b"Username:") if initial is None else self.step(initial)

    def step(self, data: bytes) -> _Step:
        if not self._prompted:
            self.username = _text(data)
            if not self.username:
                raise SASLSyntaxError("empty username")
            self._prompted = True
            return _Challenge(b"Password:")
        password = _text(data)
        if not password:
            raise SASLSyntaxError("empty password")
        return _Credentials(self.username, password)


_SASLNAME = re.compile(r"(?:[^=,]|=2C|=3D)+")
# A key that only this process knows: fake salts for unknown users are stable
# per user but unpredictable, so SCRAM does not tell who has an account.
_FAKE_SALT_KEY = os.urandom(32)


def _attributes(message: str) -> list[tuple[str, str]]:
    out = []
    for part in message.split(","):
        if len(part) < 2 or part[1] != "=" or not part[0].isalpha():
            raise SASLSyntaxError(f"bad SCRAM attribute {part[:20]!r}")
        out.append((part[0], part[2:]))
    return out


class _Scram:
    """SCRAM-SHA-256 (RFC 5802, RFC 7677) without channel binding."""

    name = SCRAM

    def __init__(self, nonce: Callable[[], str] | None = None) -> None:
        self._nonce = nonce or (lambda: base64.b64encode(os.urandom(18)).decode())
        self._gs2_header = ""
        self._client_first_bare = ""
        self._server_first = ""
        self.username = ""
        self._secrets: ScramSecrets | None = None
        self._verified = False

    def start(self, initial: bytes | None) -> _Step:
        return _Challenge(b"") if initial is None else self._client_first(initial)

    def step(self, data: bytes) -> _Step:
        if not self._client_first_bare:
            return self._client_first(data)
        if not self._verified:
            return self._client_final(data)
        if data:  # RFC 4954 §4: additional data with success is answered empty
            raise SASLSyntaxError("expected an empty response after the server signature")
        return _Success(self.username)

    def _client_first(self, data: bytes) -> _Step:
        # RFC 5802 §7: gs2-header = cbind-flag "," [authzid] ","
        flag, sep, rest = _text(data).partition(",")
        authzid, sep2, bare = rest.partition(",")
        if flag.startswith("p="):
            # Channel binding is SCRAM-SHA-256-PLUS, which is not offered.
            raise SASLFailure("channel binding not supported")
        if not sep or not sep2 or flag not in ("n", "y"):
            raise SASLSyntaxError("bad gs2 header")
        attrs = _attributes(bare)
        if len(attrs) < 2 or attrs[0][0] != "n" or attrs[1][0] != "r" or not attrs[1][1]:
            raise SASLSyntaxError("client-first-message needs n= and r=")
        if not _SASLNAME.fullmatch(attrs[0][1]) or (authzid and authzid[:2] != "a="):
            raise SASLSyntaxError("bad saslname")
        self.username = attrs[0][1].replace("=2C", ",").replace("=3D", "=")
        _authorize(authzid[2:].replace("=2C", ",").replace("=3D", "="), self.username)
        self._gs2_header = f"{flag},{authzid},"
        self._client_first_bare = bare
        self._server_first = f"r={attrs[1][1]}{self._nonce()}"
        return _Credentials(self.username, None)

    def secrets(self, secrets: ScramSecrets | None) -> _Step:
        """Go on with the user's secrets; for an unknown user, with fakes that fail later."""
        if secrets is None:
            fake_salt = _hmac(_FAKE_SALT_KEY, self.username.encode("utf-8"))[:16]
            secrets = ScramSecrets(fake_salt, SCRAM_ITERATIONS, os.urandom(32), os.urandom(32))
        self._secrets = secrets
        salt = base64.b64encode(secrets.salt).decode()
        self._server_first += f",s={salt},i={secrets.iterations}"
        return _Challenge(self._server_first.encode())

    def _client_final(self, data: bytes) -> _Step:
        secrets = self._secrets
        assert secrets is not None
        message = _text(data)
        without_proof, sep, proof_b64 = message.rpartition(",p=")
        attrs = _attributes(without_proof) if sep else []
        if len(attrs) < 2 or attrs[0][0] != "c" or attrs[1][0] != "r":
            raise SASLSyntaxError("client-final-message needs c=, r= and p=")
        try:
            proof = base64.b64decode(proof_b64, validate=True)
        except binascii.Error:
            raise SASLSyntaxError("proof is not base64") from None
        channel = base64.b64encode(self._gs2_header.encode()).decode()
        nonce = self._server_first[2:].split(",", 1)[0]
        if attrs[0][1] != channel or attrs[1][1] != nonce or len(proof) != 32:
            raise SASLFailure("channel binding or nonce mismatch")
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        signature = _hmac(secrets.stored_key, auth_message)
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), secrets.stored_key):
            raise SASLFailure("invalid proof")
        self._verified = True
        server_signature = _hmac(secrets.server_key, auth_message)
        return _Challenge(b"v=" + base64.b64encode(server_signature))


_MECHANISMS: dict[str, Callable[[], _Plain | _Login | _Scram]] = {
    PLAIN: _Plain,
    LOGIN: _Login,
    SCRAM: _Scram,
}


def mechanisms_for(authenticator: object | None) -> tuple[str, ...]:
    """What AUTH advertises: SCRAM only when the authenticator can give secrets.

    An authenticator with a ``sasl_mechanisms`` attribute narrows the choice
    to those it names (an operator's "never LOGIN", say).
    """
    if authenticator is None:
        return ()
    offered: tuple[str, ...] = PASSWORD_MECHANISMS
    if callable(getattr(authenticator, "scram_secrets", None)):
        offered = (SCRAM, *PASSWORD_MECHANISMS)
    allowed = getattr(authenticator, "sasl_mechanisms", None)
    if allowed is not None:
        offered = tuple(m for m in offered if m in allowed)
    return offered


def _b64decode(data: bytes) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error:
        raise SASLSyntaxError("not base64") from None


class SASLServer:
    """One AUTH exchange (RFC 4954 §4), sans-IO; see the module doc."""

    def __init__(self, offered: Sequence[str]) -> None:
        self.offered = offered
        self._mechanism: _Plain | _Login | _Scram | None = None

    def begin(self, args: bytes) -> Reply | Authenticate | AuthResult:
        """``AUTH mechanism [initial-response]``."""
        parts = args.split()
        if not 1 <= len(parts) <= 2:
            return R.SYNTAX_AUTH
        name = parts[0].decode("ascii", "replace").upper()
        if name not in self.offered:
            return R.UNKNOWN_MECHANISM
        self._mechanism = mechanism = _MECHANISMS[name]()
        if len(parts) == 1:
            return self._run(lambda: mechanism.start(None))
        # RFC 4954 §4: "=" is an initial response of zero length.
        initial = parts[1]
        return self._run(lambda: mechanism.start(b"" if initial == b"=" else _b64decode(initial)))

    def line(self, line: bytes) -> Reply | Authenticate | AuthResult:
        """A client line during the exchange: base64, or ``*`` to cancel."""
        mechanism = self._mechanism
        assert mechanism is not None
        if line.strip() == b"*":
            return R.AUTH_CANCELLED
        return self._run(lambda: mechanism.step(_b64decode(line.strip())))

    def answer(self, result: str | ScramSecrets | None) -> Reply | Authenticate | AuthResult:
        """The application's answer to ``Authenticate``: identity, SCRAM secrets or None."""
        mechanism = self._mechanism
        assert mechanism is not None
        if isinstance(mechanism, _Scram):
            secrets = result if isinstance(result, ScramSecrets) else None
            return self._run(lambda: mechanism.secrets(secrets))
        identity = result if isinstance(result, str) and result else None
        return AuthResult(mechanism.name, mechanism.username, identity)

    def _run(self, step: Callable[[], _Step]) -> Reply | Authenticate | AuthResult:
        mechanism = self._mechanism
        assert mechanism is not None
        try:
            outcome = step()
        except SASLSyntaxError:
            return R.AUTH_MALFORMED
        except SASLFailure:
            return AuthResult(mechanism.name, mechanism.username, None)
        if isinstance(outcome, _Challenge):
            return R.auth_challenge(base64.b64encode(outcome.data).decode())
        if isinstance(outcome, _Credentials):
            return Authenticate(mechanism.name, outcome.username, outcome.password)
        return AuthResult(mechanism.name, mechanism.username, outcome.identity)


# --- the file-backed authenticator -------------------------------------------
_USERNAME = re.compile(r"[^\s:#][^\s:]*")


def _password_hasher() -> Any:
    try:
        from argon2 import PasswordHasher
    except ImportError:
        raise ConfigError(
            "auth_file and 'fastsmtp passwd' need argon2-cffi: pip install 'fastsmtp-engine[auth]'"
        ) from None
    return PasswordHasher()


@dataclass(frozen=True, slots=True)
class _User:
    password_hash: str = field(repr=False)
    scram: ScramSecrets | None = field(repr=False)


def _parse_auth_file(path: str) -> dict[str, _User]:
    """``user:argon2-hash[:scram-secrets]`` per line; ``#`` comments; ConfigError names the line."""
    try:
        text = Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read auth_file {path}: {exc}") from None
    users: dict[str, _User] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, _, rest = line.partition(":")
        password_hash, _, scram_text = rest.partition(":")
        try:
            if not _USERNAME.fullmatch(user) or not password_hash.startswith("$argon2"):
                raise ValueError("want user:$argon2...; write lines with 'fastsmtp passwd'")
            scram = ScramSecrets.parse(scram_text) if scram_text else None
        except ValueError as exc:
            raise ConfigError(f"auth_file {path} line {number}: {exc}") from None
        users[user] = _User(password_hash, scram)
    return users


class FileAuthenticator:
    """Users from a file that ``fastsmtp passwd`` writes (the ``auth_file`` setting).

    Each line is ``user:$argon2id$...:SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>``;
    the SCRAM part is optional. The file is read again when it changes, so
    ``fastsmtp passwd`` takes effect without a restart. Both methods are
    sync: the server runs them in a thread (argon2 is slow on purpose).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._hasher = _password_hasher()
        # Checked against for unknown users, so they cost the same time.
        self._dummy_hash = self._hasher.hash("not a password")
        self._stamp = self._file_stamp()
        self._users = _parse_auth_file(path)

    def _file_stamp(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise ConfigError(f"cannot read auth_file {self.path}: {exc.strerror}") from None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _current(self) -> dict[str, _User]:
        stamp = self._file_stamp()
        if stamp != self._stamp:
            # Replaced by fastsmtp passwd (rename), or edited: read it again.
            self._users = _parse_auth_file(self.path)
            self._stamp = stamp
        return self._users

    def __call__(self, session: Session, mechanism: str, username: str, password: str) -> bool:
        """Check the password against the user's argon2 hash."""
        from argon2.exceptions import InvalidHashError, VerificationError

        user = self._current().get(username)
        try:
            self._hasher.verify(user.password_hash if user else self._dummy_hash, password)
        except (VerificationError, InvalidHashError):
            return False
        return user is not None

    def scram_secrets(self, username: str) -> ScramSecrets | None:
        """The user's SCRAM-SHA-256 secrets, if the file has them."""
        user = self._current().get(username)
        return user.scram if user else None


def set_password(path: str, username: str, password: str) -> None:
    """Add or replace ``username`` in the auth file (argon2 hash and SCRAM secrets).

    The file is rewritten atomically (a temporary file, fsync, rename) with
    mode 0600; other lines, comments included, are kept as they are.
    """
    if not _USERNAME.fullmatch(username):
        raise ConfigError(f"bad user name {username!r}: no spaces, no ':' and not empty")
    if not password:
        raise ConfigError("refusing an empty password")
    line = f"{username}:{_password_hasher().hash(password)}:{ScramSecrets.from_password(password)}"
    target = Path(path)
    try:
        old = target.read_text("utf-8").splitlines() if target.exists() else []
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read auth_file {path}: {exc}") from None
    # The user keeps its place in the file; a new one goes last.
    kept = [line if entry.partition(":")[0] == username else entry for entry in old]
    if line not in kept:
        kept.append(line)
    directory = target.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=directory)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(kept) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)


# --- what the server plugs in ------------------------------------------------
def authenticator_from(
    settings: Settings, authenticator: Authenticator | None, tls: bool
) -> Authenticator | None:
    """The authenticator a server uses (``authenticator=`` or ``auth_file``), checked."""
    if authenticator is not None and settings.auth_file:
        raise ConfigError("give either an authenticator or auth_file, not both")
    if settings.auth_file:
        authenticator = FileAuthenticator(settings.auth_file)
    if authenticator is not None and not callable(authenticator):  # a typo'd keyword
        raise ConfigError(f"authenticator must be callable, not {authenticator!r}")
    if authenticator is None and settings.require_auth:
        raise ConfigError("require_auth needs users: set auth_file (or pass authenticator)")
    if authenticator is not None and not tls and not settings.auth_without_tls:
        raise ConfigError(
            "AUTH needs TLS: set tls_cert and tls_key, or auth_without_tls = true "
            "(passwords then cross the network in clear)"
        )
    return authenticator


class FailureLimiter:
    """Failed AUTH attempts per client: ``blocked`` after too many in a window.

    Sans-IO: the caller passes the time. At most ``max_clients`` clients are
    remembered; the oldest is forgotten first, so memory stays bounded.
    """

    def __init__(self, max_failures: int, window: float, max_clients: int = 10_000) -> None:
        self.max_failures = max_failures
        self.window = window
        self.max_clients = max_clients
        self._failures: dict[str, list[float]] = {}

    def _recent(self, client: str, now: float) -> list[float]:
        times = [t for t in self._failures.get(client, ()) if t > now - self.window]
        if times:
            self._failures[client] = times
        else:
            self._failures.pop(client, None)
        return times

    def blocked(self, client: str, now: float) -> bool:
        """True while ``client`` has ``max_failures`` failures within the window."""
        return len(self._recent(client, now)) >= self.max_failures

    def failed(self, client: str, now: float) -> None:
        """Count one failure of ``client``."""
        times = self._recent(client, now)
        times.append(now)
        self._failures.pop(client, None)
        self._failures[client] = times  # most recent last
        if len(self._failures) > self.max_clients:
            del self._failures[next(iter(self._failures))]
