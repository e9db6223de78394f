"""A SCRAM-SHA-256 client (RFC 5802, RFC 7677) for the tests, written from the RFC.

It shares no code with ``fastsmtp.auth``, so a test that authenticates
with it checks the server against an independent implementation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


class ScramClient:
    """``first()``, then ``final(server_first)``, then ``verify(server_final)``."""

    def __init__(self, username: str, password: str, nonce: str | None = None) -> None:
        self.username = username
        self.password = password
        self.nonce = nonce or base64.b64encode(os.urandom(24)).decode()
        name = username.replace("=", "=3D").replace(",", "=2C")
        self.first_bare = f"n={name},r={self.nonce}"
        self._server_signature = b""

    def first(self) -> str:
        return "n,," + self.first_bare

    def final(self, server_first: str) -> str:
        attrs = dict(item.split("=", 1) for item in server_first.split(","))
        assert attrs["r"].startswith(self.nonce), "server nonce must extend ours"
        salt = base64.b64decode(attrs["s"])
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), salt, int(attrs["i"]))
        client_key = _hmac(salted, b"Client Key")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c={base64.b64encode(b'n,,').decode()},r={attrs['r']}"
        auth_message = f"{self.first_bare},{server_first},{without_proof}".encode()
        signature = _hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self._server_signature = _hmac(_hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}"

    def verify(self, server_final: str) -> bool:
        """True when the server proved it knows our secrets (``v=``)."""
        return server_final == "v=" + base64.b64encode(self._server_signature).decode()
