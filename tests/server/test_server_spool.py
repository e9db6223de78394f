"""Big messages: spooled to a temporary file, or streamed to a handler's sink.

Every test gives the server its own ``spool_dir`` and checks that it is
empty again once the server has stopped (spool files are removed by the
loop's thread pool, which the stop waits for): a spool file outlives
neither ``on_message`` nor a dropped message.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from fastsmtp import ConfigError, Handler, Maildir, Mbox, Server, Sink
from fastsmtp.body import MessageBody
from fastsmtp.session import Envelope, Session

THRESHOLD = 4096
BIG = b"".join(b"line %06d of a big message\r\n" % i for i in range(4000))  # ~112 KiB
SMALL = b"Subject: small\r\n\r\nhi\r\n"


class Inspect(Handler):
    """Records what on_message sees of the body, and when sessions end."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.gone = threading.Event()

    def on_message(self, session: Session, envelope: Envelope) -> None:
        body = envelope.body
        assert body is not None
        with envelope.open_content() as f:
            streamed = f.read()
        self.seen.append(
            {
                "path": body.path,
                "exists": body.path is not None and os.path.exists(body.path),
                "size": body.size,
                "streamed": streamed,
                "content": envelope.content,
            }
        )

    def on_disconnect(self, session: Session) -> None:
        self.gone.set()


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    directory = tmp_path / "spool"
    directory.mkdir()
    return directory


def spool_settings(spool: Path) -> dict[str, Any]:
    return {"spool_threshold": THRESHOLD, "spool_dir": str(spool)}


def test_a_small_message_stays_in_memory(serve, client, spool):
    handler = Inspect()
    raw = client(serve(handler, **spool_settings(spool)))
    raw.begin()
    assert raw.send_message(SMALL).code == 250
    [seen] = handler.seen
    assert seen["path"] is None
    assert seen["content"].endswith(SMALL) and seen["content"].startswith(b"Received: ")
    assert seen["streamed"] == seen["content"]


def test_a_big_message_is_spooled_then_removed(serve, client, spool):
    handler = Inspect()
    raw = client(serve(handler, **spool_settings(spool)))
    raw.begin()
    assert raw.send_message(BIG).code == 250
    raw.cmd("QUIT")
    serve.stop()
    [seen] = handler.seen
    assert seen["exists"] and Path(seen["path"]).parent == spool
    assert seen["streamed"].startswith(b"Received: from client.example")
    assert seen["streamed"].endswith(BIG)
    assert seen["content"] == seen["streamed"]
    assert seen["size"] == len(seen["streamed"])
    assert list(spool.iterdir()) == []


def test_bdat_is_spooled_too(serve, client, spool):
    handler = Inspect()
    raw = client(serve(handler, **spool_settings(spool)))
    raw.begin()
    half = len(BIG) // 2
    raw.send(b"BDAT %d\r\n" % half + BIG[:half])
    assert raw.reply().code == 250
    raw.send(b"BDAT %d LAST\r\n" % (len(BIG) - half) + BIG[half:])
    assert raw.reply().code == 250
    assert handler.seen[0]["exists"] and handler.seen[0]["streamed"].endswith(BIG)


@pytest.mark.parametrize("ending", ["too-big", "rset-in-bdat", "disconnect", "no-hook", "raises"])
def test_no_spool_file_is_left_behind(serve, client, spool, ending):
    class Raises(Inspect):
        def on_message(self, session: Session, envelope: Envelope) -> None:
            raise RuntimeError("storage broke")

    class NoMessageHook(Handler):
        def __init__(self) -> None:
            self.gone = threading.Event()

        def on_disconnect(self, session: Session) -> None:
            self.gone.set()

    handler = {"raises": Raises, "no-hook": NoMessageHook}.get(ending, Inspect)()
    limit = len(BIG) - 100 if ending == "too-big" else 10 * len(BIG)
    raw = client(serve(handler, max_message_size=limit, **spool_settings(spool)))
    raw.begin()
    if ending == "rset-in-bdat":
        raw.send(b"BDAT %d\r\n" % len(BIG) + BIG)
        assert raw.reply().code == 250
        assert raw.cmd("RSET").code == 250
    elif ending == "disconnect":
        assert raw.cmd("DATA").code == 354
        raw.send(BIG)  # and no end of data
        raw.close()
    else:
        expected = {"too-big": 552, "no-hook": 250, "raises": 451}[ending]
        assert raw.send_message(BIG).code == expected
    if ending != "disconnect":
        raw.cmd("QUIT")
    assert handler.gone.wait(10)
    serve.stop()
    assert list(spool.iterdir()) == []


class Chunks:
    """A sink that keeps what it is given, and says how it ended."""

    def __init__(self, fail_on_write: bool = False) -> None:
        self.chunks: list[bytes] = []
        self.ended: str | None = None
        self.fail_on_write = fail_on_write

    def write(self, chunk: bytes) -> None:
        if self.fail_on_write:
            raise OSError("upstream went away")
        self.chunks.append(chunk)

    def close(self) -> None:
        self.ended = "closed"

    def abort(self) -> None:
        self.ended = "aborted"


class Streaming(Handler):
    def __init__(self, **sink_options: Any) -> None:
        self.sinks: list[Chunks] = []
        self.messages: list[tuple[Any, bytes | None, Any]] = []
        self.sink_options = sink_options
        self.gone = threading.Event()

    async def on_data_start(self, session: Session, envelope: Envelope) -> Chunks:
        self.sinks.append(Chunks(**self.sink_options))
        return self.sinks[-1]

    async def on_message(self, session: Session, envelope: Envelope) -> None:
        sink = envelope.sink
        assert isinstance(sink, Chunks)
        self.messages.append((sink.ended, envelope.content, envelope.body))

    async def on_disconnect(self, session: Session) -> None:
        self.gone.set()


def test_a_sink_gets_every_chunk_and_nothing_is_spooled(serve, client, spool):
    handler = Streaming()
    raw = client(serve(handler, **spool_settings(spool)))
    raw.begin()
    assert raw.send_message(BIG).code == 250
    [(ended, content, body)] = handler.messages
    assert ended == "closed" and content is None and body is None
    joined = b"".join(handler.sinks[0].chunks)
    assert joined.startswith(b"Received: from client.example") and joined.endswith(BIG)
    assert len(handler.sinks[0].chunks) > 1  # chunk by chunk, not one buffer
    assert list(spool.iterdir()) == []


def test_a_sink_is_aborted_when_the_message_is_dropped(serve, client):
    handler = Streaming()
    raw = client(serve(handler, max_message_size=len(BIG) // 2))
    raw.begin()
    assert raw.send_message(BIG).code == 552
    assert raw.cmd("NOOP").code == 250
    assert handler.sinks[0].ended == "aborted" and handler.messages == []


def test_a_failing_sink_is_451_and_on_message_is_not_called(serve, client, tracebacks):
    handler = Streaming(fail_on_write=True)
    raw = client(serve(handler))
    raw.begin()
    reply = raw.send_message(SMALL)
    assert (reply.code, reply.enhanced) == (451, "4.3.0")
    assert handler.messages == [] and handler.sinks[0].ended == "aborted"
    serve.stop()
    [record] = tracebacks()
    assert "message sink write failed" in record.getMessage()


@pytest.mark.parametrize("returned", ["raises", "not-a-sink"])
def test_a_broken_on_data_start_is_451_at_the_end(serve, client, tracebacks, returned):
    class Broken(Streaming):
        async def on_data_start(self, session: Session, envelope: Envelope) -> Any:
            if returned == "raises":
                raise RuntimeError("no sink today")
            return "a string"

    handler = Broken()
    raw = client(serve(handler))
    raw.begin()
    assert raw.send_message(BIG).code == 451
    assert raw.cmd("NOOP").code == 250
    assert handler.messages == []
    serve.stop()
    assert len(tracebacks()) == 1


def test_a_spool_that_cannot_be_written_is_452(serve, client, spool, caplog):
    caplog.set_level(logging.INFO)
    handler = Inspect()
    raw = client(serve(handler, **spool_settings(spool)))
    spool.rmdir()  # the directory went away after the server started
    raw.begin()
    reply = raw.send_message(BIG)
    assert (reply.code, reply.enhanced) == (452, "4.3.1")
    assert handler.seen == []
    serve.stop()
    assert any("cannot spool the message body" in r.getMessage() for r in caplog.records)


class EnvelopeOnly(Handler):
    """Decides on the envelope and never reads a body (like Sink)."""

    def __init__(self) -> None:
        self.recipients: list[str] = []

    async def on_rcpt(self, session: Session, envelope: Envelope, rcpt: Any) -> None:
        self.recipients.append(rcpt.address)


@pytest.mark.parametrize("handler", [Sink, EnvelopeOnly])
def test_a_body_nobody_reads_is_not_kept_nor_spooled(serve, client, spool, handler):
    # Without on_message the body is discarded as it arrives: even with its
    # spool directory gone, a big message is accepted (a spooled one gets 452).
    raw = client(serve(handler(), **spool_settings(spool)))
    spool.rmdir()
    raw.begin()
    assert raw.send_message(BIG).code == 250
    raw.begin()
    assert raw.send_message(SMALL).code == 250


@pytest.mark.parametrize("handler", [Sink, EnvelopeOnly])
def test_a_body_nobody_reads_still_gets_the_size_limit(serve, client, handler):
    raw = client(serve(handler(), max_message_size=10_000))
    raw.begin()
    reply = raw.send_message((b"y" * 98 + b"\r\n") * 200)
    assert (reply.code, reply.enhanced) == (552, "5.3.4")
    raw.begin()
    assert raw.send_message(SMALL).code == 250


def test_a_missing_spool_dir_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="spool_dir"):
        Server(Handler(), spool_dir=str(tmp_path / "nope"))


@pytest.mark.parametrize("kind", ["maildir", "mbox"])
def test_maildir_and_mbox_store_a_spooled_message_without_loading_it(
    serve, client, spool, tmp_path, kind
):
    store = Maildir(tmp_path / "Maildir") if kind == "maildir" else Mbox(tmp_path / "mbox")
    loaded: list[bool] = []

    class Watch(Handler):
        def on_message(self, session: Session, envelope: Envelope) -> Any:
            result = store.on_message(session, envelope)
            loaded.append(envelope.__dict__.get("_content") is not None)
            return result

    raw = client(serve(Watch(), **spool_settings(spool)))
    raw.begin()
    assert raw.send_message(BIG).code == 250
    assert loaded == [False]
    if kind == "maildir":
        [path] = (tmp_path / "Maildir" / "new").iterdir()
        assert path.read_bytes().endswith(BIG)
    else:
        assert (tmp_path / "mbox").read_bytes().endswith(BIG.replace(b"\r\n", b"\n") + b"\n")


def test_a_failing_spool_write_is_452_and_leaves_no_file(serve, client, spool, monkeypatch):
    import fastsmtp.body

    def disk_full(fd: int, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fastsmtp.body, "write_all", disk_full)
    handler = Inspect()
    raw = client(serve(handler, **spool_settings(spool)))
    raw.begin()
    reply = raw.send_message(BIG)
    assert (reply.code, reply.enhanced) == (452, "4.3.1")
    assert raw.cmd("NOOP").code == 250
    serve.stop()
    assert handler.seen == [] and list(spool.iterdir()) == []


class Slow(Chunks):
    """A sink that makes the connection wait on every write and on close."""

    def write(self, chunk: bytes) -> Any:
        super().write(chunk)
        return asyncio.sleep(0)

    def close(self) -> Any:
        async def flushed() -> None:
            await asyncio.sleep(0)
            self.ended = "closed"

        return flushed()


def test_a_sink_may_return_awaitables_for_backpressure(serve, client):
    class SlowStreaming(Streaming):
        async def on_data_start(self, session: Session, envelope: Envelope) -> Chunks:
            self.sinks.append(Slow())
            return self.sinks[-1]

    handler = SlowStreaming()
    raw = client(serve(handler))
    raw.begin()
    assert raw.send_message(BIG).code == 250
    assert raw.cmd("NOOP").code == 250
    [(ended, _, _)] = handler.messages
    assert ended == "closed"
    assert b"".join(handler.sinks[0].chunks).endswith(BIG)


def test_message_body_outside_the_server(tmp_path):
    small = MessageBody(threshold=10, directory=str(tmp_path))
    small.write(b"12345")
    small.close()
    small.abort()
    assert small.read() == b"12345" and not small.spooled  # memory stays readable

    big = MessageBody(threshold=10, directory=str(tmp_path))
    for piece in (b"0123456789", b"abc", b"def"):
        big.write(piece)
    assert big.spooled and big.size == 16
    with pytest.raises(ValueError, match="still being received"):
        big.open()
    big.close()
    with big.open() as f:
        assert f.read() == b"0123456789abcdef"
    big.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="removed after on_message"):
        big.read()
