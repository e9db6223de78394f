"""Test kit for code that sends mail: a server in a thread, and a pytest fixture.

::

    with fastsmtp.testing.running(Collect(), port=0) as (host, port):
        smtplib.SMTP(host, port).sendmail(...)

The context manager returns once the server listens (it waits on that,
never on a sleep) and stops the server, its loop and its thread on exit.

With pytest, the ``smtp_server`` fixture (this module is a pytest plugin,
registered by the ``pytest11`` entry point) gives each test a running
``SMTPTestServer``::

    def test_signup_sends_a_welcome_mail(smtp_server):
        signup("zoe@example.com", smtp=smtp_server.address)
        [message] = smtp_server.wait_for(1)
        assert message["Subject"] == "Welcome!"

pytest itself is imported only when pytest loads the plugin: ``import
fastsmtp`` works without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import EmailPolicy
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .handler import Handler
from .handlers.collect import Collect
from .protocol.replies import Reply
from .server import Server, new_event_loop
from .session import Address, Envelope, Session

if TYPE_CHECKING:
    import pytest

__all__ = ["SMTPTestServer", "parse_message", "running"]


@contextmanager
def running(
    handler: object | None = None, host: str = "127.0.0.1", port: int = 0, **settings: Any
) -> Iterator[tuple[str, int]]:
    """Serve ``handler`` on ``host:port`` in a thread; yield the bound ``(host, port)``."""
    server = Server(handler, **settings)
    loop = new_event_loop(server.settings.loop)
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


class _ParsePolicy(EmailPolicy):
    """``email.policy.default``, reading 8-bit header values as UTF-8 (RFC 6532)."""

    def header_source_parse(self, sourcelines: list[str]) -> tuple[str, str]:
        name, value = super().header_source_parse(sourcelines)
        # The bytes parser hands non-ASCII octets over as surrogate escapes.
        with contextlib.suppress(UnicodeError):
            value = value.encode("ascii", "surrogateescape").decode("utf-8")
        return name, value


_PARSE_POLICY = _ParsePolicy()


def parse_message(content: bytes) -> EmailMessage:
    """A received message as an ``EmailMessage`` with ``email.policy.default``.

    Lines end in ``"\n"`` (as ``email`` works with), and header values
    that are raw UTF-8 (SMTPUTF8 mail, RFC 6532) read as text, addresses
    included.
    """
    message = BytesParser(EmailMessage, policy=_PARSE_POLICY).parsebytes(
        content.replace(b"\r\n", b"\n")
    )
    assert isinstance(message, EmailMessage)
    for part in message.walk():
        part.policy = email.policy.default
    return message


class _FailingCollect(Handler):
    """Like ``Collect``, and refuses the next RCPTs or messages with chosen replies."""

    def __init__(self) -> None:
        self.collect = Collect()
        self.messages: list[EmailMessage] = []
        self.rcpt_failures: deque[Reply] = deque()
        self.data_failures: deque[Reply] = deque()
        self.lock = threading.Lock()

    def _next(self, failures: deque[Reply]) -> Reply | None:
        with self.lock:
            return failures.popleft() if failures else None

    async def on_rcpt(self, session: Session, envelope: Envelope, rcpt: Address) -> Reply | None:
        return self._next(self.rcpt_failures)

    async def on_message(self, session: Session, envelope: Envelope) -> Reply | None:
        failure = self._next(self.data_failures)
        if failure is not None:
            return failure
        message = parse_message(envelope.content or b"")
        # Before the envelope: whoever sees n envelopes (wait_for) sees n messages.
        self.messages.append(message)
        await self.collect.on_message(session, envelope)
        return None


class SMTPTestServer:
    """A ``Collect`` server on a free loopback port, for tests of code that sends mail.

    ``address`` is ``(host, port)``; ``messages`` the accepted messages as
    ``email.message.EmailMessage`` (parsed with ``email.policy.default``) in
    arrival order, and ``envelopes`` their envelopes (``mail_from``,
    ``rcpt_tos``, ``content``...) at the same indexes. ``fail_next_rcpt`` and
    ``fail_next_data`` make the next recipient or message be refused;
    ``wait_for(n)`` waits until ``n`` messages have arrived.

    The ``smtp_server`` pytest fixture gives each test a started one; outside
    pytest, use it as a context manager: ``with SMTPTestServer() as server:``.
    ``settings`` are ``Server`` settings (``max_message_size=...``).
    """

    #: what ``fail_next_rcpt()`` answers when not given a reply
    RCPT_FAILURE = Reply(550, "5.1.1", "No such user here")
    #: what ``fail_next_data()`` answers when not given a reply
    DATA_FAILURE = Reply(554, "5.0.0", "Message refused")

    def __init__(self, host: str = "127.0.0.1", **settings: Any) -> None:
        self._handler = _FailingCollect()
        self._host = host
        self._settings = settings
        self._stack = ExitStack()
        self._address: tuple[str, int] | None = None

    def start(self) -> None:
        """Listen on a free port; return once the server accepts connections."""
        if self._address is not None:
            raise RuntimeError("the test server is already running")
        self._settings.setdefault("hostname", "fastsmtp.test")
        self._address = self._stack.enter_context(
            running(self._handler, self._host, 0, **self._settings)
        )

    def stop(self) -> None:
        """Stop the server (idle clients get 421) and its thread."""
        self._stack.close()
        self._address = None

    def __enter__(self) -> SMTPTestServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` to give to the code under test."""
        if self._address is None:
            raise RuntimeError("the test server is not running; call start() first")
        return self._address

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return self.address[0]

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return self.address[1]

    @property
    def messages(self) -> list[EmailMessage]:
        """Accepted messages, parsed, in arrival order (the list grows as mail arrives)."""
        return self._handler.messages

    @property
    def envelopes(self) -> list[Envelope]:
        """The envelope of each message in ``messages``, at the same index."""
        return self._handler.collect.envelopes

    def fail_next_rcpt(self, reply: Reply | None = None, *, times: int = 1) -> None:
        """Refuse the next ``times`` RCPT commands with ``reply`` (``RCPT_FAILURE``).

        A 4xx reply is a temporary failure the sender should retry later; a
        5xx one a permanent refusal.
        """
        self._queue(self._handler.rcpt_failures, reply or self.RCPT_FAILURE, times)

    def fail_next_data(self, reply: Reply | None = None, *, times: int = 1) -> None:
        """Refuse the next ``times`` messages (after their data) with ``reply`` (``DATA_FAILURE``).

        Nothing is added to ``messages`` for a refused message.
        """
        self._queue(self._handler.data_failures, reply or self.DATA_FAILURE, times)

    def _queue(self, failures: deque[Reply], reply: Reply, times: int) -> None:
        if reply.code < 400:
            raise ValueError(f"a failure needs a 4xx or 5xx reply, not {reply}")
        with self._handler.lock:
            failures.extend([reply] * times)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:
        """Wait until ``count`` messages arrived; return them. ``TimeoutError`` otherwise."""
        self._handler.collect.wait_for(count, timeout)
        return list(self.messages)


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``smtp_server`` fixture; pytest calls this when it loads the plugin.

    The fixture is defined here, not at import time, so that importing this
    module never imports pytest.
    """
    import pytest

    class Fixtures:
        @pytest.fixture
        def smtp_server(self) -> Iterator[SMTPTestServer]:
            """A running ``fastsmtp.testing.SMTPTestServer``: address, messages, failures."""
            with SMTPTestServer() as server:
                yield server

    name = "fastsmtp.testing.fixtures"
    if not config.pluginmanager.has_plugin(name):
        config.pluginmanager.register(Fixtures(), name)
