"""``--workers N``: N server processes sharing the listeners (SO_REUSEPORT).

Each worker is a forked process running its own event loop and its own
``Server``; the kernel spreads new connections across them. The parent only
supervises: it reserves ports given as 0 (so every worker binds the same
one), restarts a worker that dies, and on SIGINT/SIGTERM asks every worker
to stop gracefully (each answers its clients with 421 and finishes what it
is storing) before it exits.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import time
from dataclasses import replace
from multiprocessing.process import BaseProcess
from types import FrameType

from .config import ConfigError, Settings, parse_hostport

__all__ = ["run_workers"]

log = logging.getLogger("fastsmtp")

RESTART_DELAY = 1.0  # seconds before a crashed worker is started again


def _reserve(specs: tuple[str, ...], setting: str, held: list[socket.socket]) -> tuple[str, ...]:
    """Turn ``HOST:0`` into ``HOST:PORT`` by binding a port every worker can share."""
    out = []
    for spec in specs:
        host, port = parse_hostport(spec, setting=setting)
        if port == 0:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, 0))
            held.append(sock)
            port = sock.getsockname()[1]
        out.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return tuple(out)


def _worker(settings: Settings, handler: object | None) -> None:
    from .server import Server, run_until_signal

    run_until_signal(Server(handler, settings=settings))


def run_workers(settings: Settings, handler: object | None = None) -> None:
    """Run ``settings.workers`` server processes until SIGINT/SIGTERM."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigError("workers > 1 needs SO_REUSEPORT, which this platform lacks")
    held: list[socket.socket] = []
    try:
        settings = replace(
            settings,
            listen=_reserve(settings.listen, "listen", held),
            implicit_tls_listen=_reserve(settings.implicit_tls_listen, "implicit_tls_listen", held),
        )
        _supervise(settings, handler)
    finally:
        for sock in held:
            sock.close()


def _supervise(settings: Settings, handler: object | None) -> None:
    # fork: the handler object is inherited as it is, with no pickling.
    context = multiprocessing.get_context("fork")

    def start(index: int) -> BaseProcess:
        process = context.Process(
            target=_worker, args=(settings, handler), name=f"fastsmtp-worker-{index}"
        )
        process.start()
        return process

    workers = [start(i) for i in range(settings.workers)]
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stopping:
            for index, process in enumerate(workers):
                process.join(timeout=0.2)
                if stopping:
                    break
                if not process.is_alive():
                    log.error("worker %d exited with %s; restarting", index, process.exitcode)
                    time.sleep(RESTART_DELAY)
                    workers[index] = start(index)
        log.info("stopping %d workers", len(workers))
        for process in workers:
            if process.is_alive() and process.pid is not None:
                process.terminate()  # SIGTERM: each worker closes gracefully
        for process in workers:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
                process.join()
    finally:
        for sig, handler_before in previous.items():
            signal.signal(sig, handler_before)
