"""Fixtures for the aiosmtpd compatibility tests: controllers stopped at teardown.

``fastsmtp_controller(handler, **kwargs)`` starts
``fastsmtp.compat.aiosmtpd.Controller`` on a free loopback port;
``aiosmtpd_controller(handler, **kwargs)`` starts the real aiosmtpd's
controller the same way (the test is skipped when aiosmtpd is not
installed). Both return ``(host, port)``. ``server_context`` and
``client_context`` are TLS contexts from a trustme test CA.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fastsmtp.compat.aiosmtpd import Controller

HOST = "127.0.0.1"
HOSTNAME = "mx.test"

Address = tuple[str, int]
Start = Callable[..., Address]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def fastsmtp_controller() -> Iterator[Start]:
    """``start(handler, **kwargs)``: a running compat Controller's address."""
    started: list[Controller] = []

    def start(handler: object, **kwargs: Any) -> Address:
        kwargs.setdefault("server_hostname", HOSTNAME)
        controller = Controller(handler, hostname=HOST, port=0, **kwargs)
        controller.start()
        started.append(controller)
        return controller.hostname, controller.port

    yield start
    for controller in started:
        controller.stop()


@pytest.fixture
def aiosmtpd_controller() -> Iterator[Start]:
    """``start(handler, **kwargs)``: a running aiosmtpd Controller's address."""
    module = pytest.importorskip(
        "aiosmtpd.controller", reason="aiosmtpd is needed to compare against it"
    )
    started: list[Any] = []

    def start(handler: object, **kwargs: Any) -> Address:
        kwargs.setdefault("server_hostname", HOSTNAME)
        # aiosmtpd 1.4's controller cannot start on port 0 (it connects to the
        # port it was given to check readiness), so take a free one first.
        port = _free_port()
        controller = module.Controller(handler, hostname=HOST, port=port, **kwargs)
        controller.start()
        started.append(controller)
        return HOST, port

    yield start
    for controller in started:
        controller.stop()
