"""HAProxy in front of fastsmtp: the PROXY protocol from a real balancer.

HAProxy accepts smtplib's connection and opens its own to fastsmtp with
``send-proxy`` (v1) or ``send-proxy-v2``. The proof that the header was
read is the port: ``Session.peer`` must be smtplib's own socket address,
not the one HAProxy connected from. HAProxy's listening socket is made here
and handed over as ``fd@N``, so there is no port to race for and no
readiness to wait on: connections queue in the backlog until it accepts.
"""

from __future__ import annotations

import smtplib
import socket
import subprocess
from pathlib import Path

import pytest

from fastsmtp import Collect
from fastsmtp.testing import parse_message, running

CONFIG = """\
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend smtp_in
    bind fd@{fd}
    default_backend fastsmtp

backend fastsmtp
    server smtp1 {host}:{port} {send_proxy}
"""


@pytest.mark.parametrize("send_proxy", ["send-proxy", "send-proxy-v2"])
def test_client_address_through_haproxy(tmp_path: Path, haproxy: str, send_proxy: str) -> None:
    handler = Collect()
    with running(handler, hostname="mx.test", proxy_protocol=True) as (host, port):
        front = socket.create_server(("127.0.0.1", 0))
        config = tmp_path / "haproxy.cfg"
        config.write_text(
            CONFIG.format(fd=front.fileno(), host=host, port=port, send_proxy=send_proxy)
        )
        proc = subprocess.Popen(
            [haproxy, "-db", "-f", str(config)],
            pass_fds=[front.fileno()],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            with smtplib.SMTP(
                *front.getsockname(), local_hostname="client.example", timeout=10
            ) as smtp:
                client = smtp.sock.getsockname()
                smtp.sendmail("a@example.com", ["b@example.com"], b"Subject: lb\r\n\r\nvia lb\r\n")
        finally:
            front.close()
            proc.terminate()
            output = proc.communicate(timeout=10)[0].decode(errors="replace")
        [envelope] = handler.wait_for(1)
    assert handler.sessions[0].peer == tuple(client[:2]), output
    assert parse_message(envelope.content)["Received"].startswith(
        "from client.example ([127.0.0.1])"
    )
