"""``Controller`` and ``build_server``: aiosmtpd's threaded controller, serving fastsmtp.

See ``fastsmtp.compat.aiosmtpd``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import sys
import threading
from typing import Any

from ..config import Settings
from ..server import Server
from ._aiosmtpd_auth import CompatAuthenticator
from ._aiosmtpd_handler import HandlerAdapter, UnsupportedError

__all__ = ["DEFAULT_READY_TIMEOUT", "Controller", "build_server", "get_localhost"]

#: seconds ``Controller.start`` waits for the server to listen
#: (``AIOSMTPD_CONTROLLER_TIMEOUT`` overrides it, as in aiosmtpd)
DEFAULT_READY_TIMEOUT = 5.0

# aiosmtpd SMTP keywords for features fastsmtp lacks, with the value that means "off".
_UNSUPPORTED_PARAMETERS: dict[str, object] = {
    "command_call_limit": None,
    "proxy_protocol_timeout": None,
}


def get_localhost() -> str:
    """``"::1"`` when this host can bind IPv6 loopback, else ``"127.0.0.1"``."""
    if not socket.has_ipv6:
        return "127.0.0.1"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return "127.0.0.1"
    return "::1"


def build_server(handler: object, **smtp_parameters: Any) -> Server:
    """A fastsmtp ``Server`` running ``handler`` with aiosmtpd's ``SMTP`` keywords.

    Understood: ``hostname``, ``data_size_limit`` (``None`` or ``0``, "no
    limit", becomes the largest limit fastsmtp can enforce), ``enable_SMTPUTF8``,
    ``decode_data``, ``ident``, ``timeout`` (the command and DATA timeouts),
    ``tls_context`` (STARTTLS) with ``require_starttls`` (fastsmtp's
    ``require_tls``: MAIL is refused with 530 until STARTTLS), and ``loop``
    (ignored). AUTH maps: ``authenticator`` or ``auth_callback`` decide
    PLAIN/LOGIN logins (see ``CompatAuthenticator``), ``auth_required`` is
    fastsmtp's ``require_auth`` (MAIL refused with 530 until AUTH),
    ``auth_require_tls=False`` its ``auth_without_tls``, and
    ``auth_exclude_mechanism`` withholds mechanisms. Every fastsmtp setting
    is accepted by its own name (``max_recipients=10``), as is
    ``received_header`` (see ``HandlerAdapter``). PROXY and call-limit
    keywords raise ``UnsupportedError``.
    """
    params = dict(smtp_parameters)
    params.pop("loop", None)
    for name, off in _UNSUPPORTED_PARAMETERS.items():
        if name in params and params.pop(name) != off:
            raise UnsupportedError(
                f"{name}=...: fastsmtp.compat.aiosmtpd does not map PROXY or call limits "
                "(fastsmtp.compat.aiosmtpd)"
            )
    # STARTTLS: as in aiosmtpd, require_starttls means something only with a context.
    tls_context = params.pop("tls_context", None)
    require_starttls = bool(params.pop("require_starttls", False))
    decode_data = bool(params.pop("decode_data", False))
    ident = params.pop("ident", None)
    received_header = bool(params.pop("received_header", False))
    authenticator = params.pop("authenticator", None)
    auth_callback = params.pop("auth_callback", None)
    auth_exclude = params.pop("auth_exclude_mechanism", None) or ()
    settings: dict[str, Any] = {}
    if params.pop("auth_required", False):
        settings["require_auth"] = True
    if not params.pop("auth_require_tls", True):
        settings["auth_without_tls"] = True
    if "data_size_limit" in params:
        limit = params.pop("data_size_limit")
        settings["max_message_size"] = limit or sys.maxsize
    if "enable_SMTPUTF8" in params:
        settings["smtputf8"] = bool(params.pop("enable_SMTPUTF8"))
    if "timeout" in params:
        timeout = float(params.pop("timeout"))
        settings["command_timeout"] = settings["data_timeout"] = timeout
    if params.get("hostname") is None:
        params.pop("hostname", None)
    if decode_data:
        # aiosmtpd does not offer 8BITMIME when it decodes the content.
        settings["eightbitmime"] = False
    if tls_context is not None and require_starttls:
        settings["require_tls"] = True
    settings.update(params)
    try:
        native = Settings.from_mapping(settings)
    except ValueError as exc:
        raise TypeError(f"Controller/SMTP keyword: {exc}") from None
    adapter = HandlerAdapter(
        handler,
        settings=native,
        decode_data=decode_data,
        ident=ident,
        received_header=received_header,
        starttls=tls_context is not None,
    )
    compat_authenticator = None
    if authenticator is not None or auth_callback is not None:
        compat_authenticator = CompatAuthenticator(
            adapter,
            authenticator=authenticator,
            auth_callback=auth_callback,
            exclude=auth_exclude,
        )
    return Server(
        adapter, settings=native, tls_context=tls_context, authenticator=compat_authenticator
    )


class Controller:
    """Run an aiosmtpd-style handler on fastsmtp in a background thread.

    ``Controller(handler, hostname=None, port=8025, loop=None, *,
    ready_timeout=5.0, ssl_context=None, server_hostname=None,
    server_kwargs=None, **SMTP_parameters)`` as in aiosmtpd: ``hostname`` is
    the address to listen on (``None``: ``get_localhost()``, ``""``: every
    IPv4 interface), ``server_hostname`` the name the server gives itself,
    ``ssl_context`` makes the listener speak TLS from the first byte
    (SMTPS), and the remaining keywords are aiosmtpd's ``SMTP`` keywords
    (see ``build_server``). ``enable_SMTPUTF8`` defaults to true, as in
    aiosmtpd's controller.

    ``start()`` returns once the server listens (or raises what stopped it),
    ``stop()`` closes it: idle clients get ``421``, a message being stored is
    finished first. With ``port=0`` the system picks a free port and ``port``
    holds it after ``start()``. ``server`` is the fastsmtp ``Server``.
    """

    def __init__(
        self,
        handler: object,
        hostname: str | None = None,
        port: int = 8025,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        ready_timeout: float = DEFAULT_READY_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        server_kwargs: dict[str, Any] | None = None,
        **smtp_parameters: Any,
    ) -> None:
        if hasattr(self, "factory"):
            raise UnsupportedError(
                "Controller.factory() is not called by fastsmtp: it builds a fastsmtp "
                "Server, never an aiosmtpd SMTP instance"
            )
        self.handler = handler
        self.hostname = get_localhost() if hostname is None else hostname
        self.port = port
        #: the loop the server runs on (the one given, else a new one per start())
        self.loop = loop
        self._given_loop = loop
        self.ready_timeout = float(os.environ.get("AIOSMTPD_CONTROLLER_TIMEOUT", ready_timeout))
        self.SMTP_kwargs: dict[str, Any] = dict(server_kwargs or {})
        self.SMTP_kwargs.update(smtp_parameters)
        if server_hostname:
            self.SMTP_kwargs["hostname"] = server_hostname
        self.SMTP_kwargs.setdefault("enable_SMTPUTF8", True)
        self.ssl_context = ssl_context
        listeners: dict[str, Any] = {}
        if ssl_context is not None:
            # SMTPS (RFC 8314): the one listener speaks TLS from the first byte.
            spec = f"[{self.hostname or '0.0.0.0'}]:{port}"
            listeners = {"listen": (), "implicit_tls_listen": (spec,), "tls_context": ssl_context}
        self.server = build_server(handler, **{**self.SMTP_kwargs, **listeners})
        assert isinstance(self.server.handler, HandlerAdapter)
        self.adapter: HandlerAdapter = self.server.handler
        self._requested_port = port
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start serving in a daemon thread; return once the server listens."""
        if self._thread is not None:
            raise RuntimeError("SMTP daemon already running")
        loop = self.loop = self._given_loop or asyncio.new_event_loop()
        own_loop = self._given_loop is None
        ready = threading.Event()
        failure: list[BaseException] = []
        host = self.hostname or "0.0.0.0"

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                if self.ssl_context is None:
                    loop.run_until_complete(self.server.start(host, self._requested_port))
                else:
                    loop.run_until_complete(self.server.start())  # implicit_tls_listen only
            except BaseException as exc:  # reported by start(), in the caller's thread
                failure.append(exc)
            else:
                loop.call_soon(ready.set)
                loop.run_forever()
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                ready.set()
                if own_loop:
                    loop.close()

        self._thread = threading.Thread(target=serve, name="fastsmtp-controller", daemon=True)
        self._thread.start()
        if not ready.wait(self.ready_timeout):
            raise TimeoutError(
                f"the SMTP server did not start within {self.ready_timeout} s; "
                "raise ready_timeout (or AIOSMTPD_CONTROLLER_TIMEOUT)"
            )
        if failure:
            raise failure[0]
        addresses = self.server.addresses or self.server.implicit_tls_addresses
        self.port = addresses[0][1]

    def stop(self, no_assert: bool = False) -> None:
        """Stop the server and its thread; ``AssertionError`` if it never started."""
        thread, loop = self._thread, self.loop
        if thread is None or loop is None:
            if no_assert:
                return
            raise AssertionError("SMTP daemon not running")
        if thread.is_alive() and loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self.server.close(grace=5.0), loop)
            future.result(timeout=30)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        self._thread = None
