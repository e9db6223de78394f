"""Run a server in a background thread, for tests of code that sends mail.

::

    with fastsmtp.testing.running(Collect(), port=0) as (host, port):
        smtplib.SMTP(host, port).sendmail(...)

The context manager returns once the server listens (it waits on that,
never on a sleep) and stops the server, its loop and its thread on exit.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .server import Server

__all__ = ["running"]


@contextmanager
def running(
    handler: object | None = None, host: str = "127.0.0.1", port: int = 0, **settings: Any
) -> Iterator[tuple[str, int]]:
    """Serve ``handler`` on ``host:port`` in a thread; yield the bound ``(host, port)``."""
    server = Server(handler, **settings)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.start(host, port))
        except BaseException as exc:  # reported in the caller's thread
            failure.append(exc)
            started.set()
            loop.close()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()

    thread = threading.Thread(target=serve, name="fastsmtp-test-server", daemon=True)
    thread.start()
    started.wait()
    if failure:
        thread.join()
        raise failure[0]
    try:
        yield server.addresses[0]
    finally:
        asyncio.run_coroutine_threadsafe(server.close(grace=5.0), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
