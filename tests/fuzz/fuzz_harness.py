"""Fuzz targets for the wire layer and ``ServerConnection``.

Theory of operation
===================

A target takes one input, ``bytes``, and treats it as what an SMTP client
sends: the seed corpus (``corpus/``) holds real sessions, and the fuzzer
mutates them. Everything else a target needs (where the stream is cut into
reads, which settings are in force, how the application answers each
decision) comes from a PRNG seeded with the input itself, so an input always
replays the same run: a crash file is its own reproducer.

``wire_target``
    Differential: the pure twin ``fastsmtp.wire._py`` and, when importable,
    the compiled ``fastsmtp.wire._c`` get the same stream cut at the same
    points (as ``bytes``, ``bytearray`` or ``memoryview``) and must give the
    same lines, bodies, errors, buffer sizes and parse results. On top, the
    contract's own promises (``_py``'s docstring) are checked for each.

``server_target``
    A ``ServerConnection`` is fed the stream, then EOF, and each decision is
    answered with acceptance or a refusal. Checked: no exception escapes;
    what it sends is well-formed replies only; its command buffer stays
    within ``max_command_line``; the state machine is consistent (a message
    ends only after it started, with a sender and a recipient; nothing runs
    after STARTTLS before ``tls_started``; EOF always closes). The same run
    is made over each twin (``wired``) and must give the same events and
    the same bytes. Each wire twin runs under its own state machine: the
    pure twin under the pure ``protocol/server.py``, the compiled one under
    the compiled machine when it is built (whose reader and decoder are
    typed as the compiled wire's), so the two configurations that really
    run are compared.

A failed check raises ``AssertionError``; any other exception is a bug too.
``TestOneInput`` runs both targets; ``run.py`` runs one at a time under
atheris.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import random
import re
import sys
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

from fastsmtp import wire
from fastsmtp.config import Settings
from fastsmtp.protocol import dsn as protocol_dsn
from fastsmtp.protocol import server as protocol_server
from fastsmtp.protocol.events import (
    NEED_DATA,
    BodyChunk,
    Closed,
    DataStarted,
    Event,
    Expand,
    Hello,
    MailFrom,
    MessageAborted,
    MessageEnd,
    RcptTo,
    Reset,
    StartTLS,
    Verify,
)
from fastsmtp.protocol.replies import READY_FOR_TLS, Reply
from fastsmtp.protocol.server import State
from fastsmtp.relay import RelayPolicy
from fastsmtp.session import Session
from fastsmtp.wire import DataError, LineError, ParseError, _py


def _load_twins() -> tuple[ModuleType, ...]:
    """``(_py, _c)``, or ``(_py,)`` when pure Python is forced or nothing was built."""
    if os.environ.get("FASTSMTP_NO_EXTENSIONS"):
        return (_py,)
    try:
        from fastsmtp.wire import _c
    except ImportError:
        return (_py,)
    return (_py, _c)


#: the wire implementations the differential target compares
TWINS = _load_twins()

# --- shared helpers -----------------------------------------------------------


def split(data: bytes, rng: random.Random) -> list[bytes]:
    """``data`` cut at random points, often just after a CR or LF (empty pieces too)."""
    if not data:
        return [b""]
    cuts = [rng.randrange(len(data) + 1) for _ in range(rng.randrange(12))]
    after_eol = [i + 1 for i, c in enumerate(data) if c in b"\r\n"]
    if after_eol:
        cuts += rng.sample(after_eol, min(len(after_eol), rng.randrange(6)))
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def as_buffer(chunk: bytes, kind: int) -> bytes | bytearray | memoryview:
    """The same bytes as one of the three input types the wire layer accepts."""
    if kind == 1:
        return bytearray(chunk)
    if kind == 2:
        return memoryview(chunk)
    return chunk


def outcome(func: Callable[..., Any], *args: Any, **kw: Any) -> tuple[object, ...]:
    """The result, or the ParseError kind; any other exception propagates (a bug)."""
    try:
        return ("ok", func(*args, **kw))
    except ParseError as exc:
        assert exc.kind in ("syntax", "address", "utf8", "param"), exc.kind
        return ("error", exc.kind)


def same(results: list[Any], what: str) -> Any:
    """Every twin's result is equal to the pure twin's; return it."""
    for impl, result in zip(TWINS[1:], results[1:], strict=True):
        assert result == results[0], f"{what}: {impl.__name__} {result!r} != _py {results[0]!r}"
    return results[0]


# --- wire target ----------------------------------------------------------------

ReaderOp = tuple[bytes, int, int | None]  # chunk, buffer kind, then take(n) / drain() (-1)


def _reader_trace(impl: ModuleType, kw: dict[str, Any], ops: list[ReaderOp]) -> list[object]:
    """What a LineReader does with ``ops``, checking the contract as it goes."""
    reader = impl.LineReader(**kw)
    limit = kw["max_line_length"]
    trace: list[object] = []
    for chunk, kind, take in ops:
        reader.feed(as_buffer(chunk, kind))
        for _ in range(len(chunk) + 2):  # each line consumes at least its LF
            try:
                line = reader.next_line()
            except LineError as exc:
                trace.append(type(exc).__name__)
                continue
            if line is None:
                break
            assert b"\n" not in line and len(line) + 1 <= limit, line
            assert not (kw["strict"] and b"\r" in line), line
            trace.append(line)
        else:
            raise AssertionError("next_line() never returned None")
        # "at most max_line_length bytes of an unfinished line stay buffered"
        assert len(reader) <= limit, (len(reader), limit)
        trace.append(len(reader))
        if take is not None:
            piece = reader.drain() if take < 0 else reader.take(take)
            trace.append((piece, len(reader)))
    return trace


def _fuzz_reader(data: bytes, rng: random.Random) -> None:
    kw = {"max_line_length": rng.choice([3, 4, 16, 64, 512]), "strict": rng.random() < 0.7}
    ops: list[ReaderOp] = []
    for chunk in split(data, rng):
        take = rng.choice([None, None, None, -1, 0, 1, 7, 100])
        ops.append((chunk, rng.randrange(3), take))
    same([_reader_trace(impl, kw, ops) for impl in TWINS], "LineReader")


def _decoder_trace(impl: ModuleType, kw: dict[str, Any], chunks: list[Any]) -> list[object]:
    """What a DataDecoder does with ``chunks`` (the body only while valid)."""
    decoder = impl.DataDecoder(**kw)
    trace: list[object] = []
    total = 0
    for chunk in chunks:
        body, done, leftover = decoder.feed(chunk)
        # After an error the body is to be discarded, so it may differ.
        valid = decoder.error == DataError.NONE
        total += len(body)
        trace.append((body if valid else None, done, leftover, decoder.error))
        if valid:
            assert decoder.size == total, (decoder.size, total)
            assert kw["max_size"] is None or decoder.size <= kw["max_size"]
        if done:
            try:
                decoder.feed(b"x")
            except ValueError:
                return trace
            raise AssertionError("feed() after the end did not raise ValueError")
        assert not leftover
    return trace


def _fuzz_decoder(data: bytes, rng: random.Random) -> None:
    start = data.find(b"DATA\r\n")
    if start >= 0 and rng.random() < 0.7:
        data = data[start + 6 :]  # from where a server would start decoding
    kw = {
        "max_size": rng.choice([None, 0, 10, 100, 10_000]),
        "max_line_length": rng.choice([None, 0, 3, 20, 1000]),
        "strict": rng.random() < 0.7,
    }
    chunks = [as_buffer(c, rng.randrange(3)) for c in split(data, rng)]
    same([_decoder_trace(impl, kw, chunks) for impl in TWINS], "DataDecoder")


def _fuzz_parsers(data: bytes, rng: random.Random) -> None:
    """Some lines of the input through parse_command, parse_mail, parse_rcpt and xtext."""
    lines = data.split(b"\n")
    for raw in rng.sample(lines, min(len(lines), 8)):  # the parsers are the slow part
        line = raw.removesuffix(b"\r")
        verb, args = same([impl.parse_command(line) for impl in TWINS], "parse_command")
        assert isinstance(verb, str) and verb == verb.upper() and args == args.strip(b" ")
        # Every line, whatever its verb: the parsers must survive any bytes.
        lenient, utf8 = rng.random() < 0.3, rng.random() < 0.5
        same([outcome(i.parse_mail, args, lenient=lenient) for i in TWINS], "parse_mail")
        same(
            [outcome(i.parse_rcpt, args, utf8=utf8, lenient=lenient) for i in TWINS],
            "parse_rcpt",
        )
        text = args.decode("utf-8", "replace")
        same([outcome(i.xtext_decode, text) for i in TWINS], "xtext_decode")
        encoded = same([i.xtext_encode(text) for i in TWINS], "xtext_encode")
        assert _py.xtext_decode(encoded) == text


def _fuzz_round_trip(data: bytes) -> None:
    """A CRLF body, dot-stuffed by each twin, decodes back to itself in each."""
    body = data.replace(b"\r", b"").replace(b"\n", b"\r\n")
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    for impl in TWINS:
        stuffed = impl.dot_stuff(body)
        assert stuffed == _py.dot_stuff(body), impl.__name__
        decoded = impl.DataDecoder(None, 0, True).feed(stuffed)
        assert decoded == (body, True, b""), (impl.__name__, decoded)


def wire_target(data: bytes) -> None:
    """The differential wire target (see the module doc)."""
    rng = random.Random(data)
    _fuzz_reader(data, rng)
    _fuzz_decoder(data, rng)
    _fuzz_parsers(data, rng)
    _fuzz_round_trip(data)


# --- server target --------------------------------------------------------------

# One reply line (RFC 5321 §4.2): code, "-" or " ", text, CRLF.
_REPLY_LINE = re.compile(rb"([2-5]\d\d)([ -])([^\r\n]*)\r\n")
_DECISIONS = (Hello, MailFrom, RcptTo, MessageEnd, Verify, Expand)
_COMMAND_STATES = frozenset({State.CONNECTED, State.READY, State.MAIL, State.RCPT, State.CHUNKS})
# How the fuzzed application answers a decision; no 421, so that a 421 on the
# wire always comes from the protocol, which must close right after it.
_ANSWERS = (
    None,
    None,
    None,
    Reply(250, "2.0.0", "fine"),
    Reply(250, None, "two\nlines"),
    Reply(450, "4.2.1", "busy, try later"),
    Reply(550, "5.1.1", "no such user"),
    Reply(554, "5.7.1", "refused\nfor policy"),
)


def check_replies(out: bytes) -> list[int]:
    """``out`` is whole replies only; return the code of each."""
    codes: list[int] = []
    pos, open_code = 0, None
    while pos < len(out):
        match = _REPLY_LINE.match(out, pos)
        assert match, f"not a reply line at {pos}: {out[pos : pos + 80]!r}"
        code = int(match[1])
        assert open_code in (None, code), f"multi-line reply changes code: {out!r}"
        if match[2] == b" ":
            codes.append(code)
            open_code = None
        else:
            open_code = code
        pos = match.end()
    assert open_code is None, f"unfinished multi-line reply: {out!r}"
    return codes


class ServerModel:
    """Drives one ServerConnection and checks it against what SMTP allows."""

    def __init__(self, data: bytes, machine: type[protocol_server.ServerConnection]) -> None:
        self.rng = rng = random.Random(data)
        settings = Settings(
            hostname="mx.fuzz",
            max_message_size=rng.choice([1, 64, 5000, 32 * 1024 * 1024]),
            max_recipients=rng.choice([1, 2, 5, 100]),
            max_command_line=rng.choice([64, 100, 512]),
            max_line_length=rng.choice([0, 3, 80, 1000]),
            max_errors=rng.choice([1, 3, 10, 1000]),
            strict_crlf=rng.random() < 0.8,
            lenient_addresses=rng.random() < 0.2,
            eightbitmime=rng.random() < 0.8,
            smtputf8=rng.random() < 0.8,
            chunking=rng.random() < 0.8,
            binarymime=rng.random() < 0.7,
            dsn=rng.random() < 0.5,
            require_tls=rng.random() < 0.1,
        )
        self.settings = settings
        relay = RelayPolicy(["example.com"], []) if rng.random() < 0.3 else None
        session = Session(id="FUZZ", peer=("192.0.2.1", 2525), tls=rng.random() < 0.1)
        self.conn = machine(
            settings, session, ("AUTH PLAIN",), starttls=rng.random() < 0.5, relay=relay
        )
        self.chunks = split(data, rng)
        self.in_message = False
        self.body = 0
        self.accepted = 0
        self.tls_pending = False  # STARTTLS accepted, tls_started() not yet called
        self.tls_answered = False  # ...and its 220 has been sent
        self.closed = False
        #: every event and every write, for comparing the twins
        self.trace: list[object] = []

    def run(self) -> None:
        conn = self.conn
        conn.greet()
        assert check_replies(conn.data_to_send()) == [220]
        for chunk in [*self.chunks, b""]:
            if self.tls_pending and self.rng.random() < 0.5:
                conn.tls_started()  # the handshake succeeded: a fresh session
                self.tls_pending = self.tls_answered = False
                assert conn.state is State.CONNECTED and len(conn._reader) == 0
            # The asyncio layer hands over memoryviews of its read buffer.
            conn.receive_data(memoryview(chunk) if self.rng.random() < 0.5 else chunk)
            self.pump()
            self.flush()
        # EOF always ends the connection, except during a TLS handshake,
        # which the I/O layer owns.
        assert conn.closed or conn.state is State.TLS, conn.state
        assert conn.session.transactions == self.accepted

    def flush(self) -> None:
        conn = self.conn
        out = conn.data_to_send()
        self.trace.append(out)
        codes = check_replies(out)
        if self.tls_answered or self.closed:
            # Nothing is read, let alone answered, between STARTTLS and the
            # handshake, or after the connection closed.
            assert out == b"", out
        elif self.tls_pending:
            assert out.endswith(READY_FOR_TLS.encode()), out
            self.tls_answered = True
        if 421 in codes:
            assert codes[-1] == 421 and conn.closed, out
        if conn.closed:
            assert conn.next_event() is NEED_DATA
            self.closed = True

    def pump(self) -> None:
        conn = self.conn
        for _ in range(8 * sum(map(len, self.chunks)) + 100):
            event = conn.next_event()
            if event is NEED_DATA:
                self.check_buffers()
                return
            assert not self.tls_pending, f"{event!r} after STARTTLS before tls_started()"
            self.trace.append(event)
            assert (conn.pending_decision is event) == isinstance(event, _DECISIONS), event
            self.check(event)
            if conn.pending_decision is not None:
                answer = self.rng.choice(_ANSWERS)
                accepted = answer is None or answer.code < 400
                conn.respond(answer)
                self.after(event, accepted)
        raise AssertionError("the connection never asked for more data")

    def check_buffers(self) -> None:
        conn = self.conn
        buffered = len(conn._reader)
        if conn.state in _COMMAND_STATES:
            assert buffered <= self.settings.max_command_line, buffered
        elif conn.state in (State.DATA, State.BDAT, State.TLS):
            assert buffered == 0, (conn.state, buffered)

    def check(self, event: Event) -> None:
        """What may happen, given the state the connection is in.

        A decision leaves the state as it was when its command arrived
        until ``respond``.
        """
        conn, env, state = self.conn, self.conn.envelope, self.conn.state
        if isinstance(event, (Hello, Verify, Expand)):
            assert state in _COMMAND_STATES, state
        elif isinstance(event, MailFrom):
            assert state is State.READY and not self.in_message, state
            assert conn.session.tls or not self.settings.require_tls
        elif isinstance(event, RcptTo):
            assert state in (State.MAIL, State.RCPT), state
            assert len(env.rcpt_tos) < self.settings.max_recipients
        elif isinstance(event, DataStarted):
            assert not self.in_message and conn.in_data
            assert env.mail_from is not None and env.rcpt_tos, env
            self.in_message, self.body = True, 0
        elif isinstance(event, BodyChunk):
            assert self.in_message and event.data
            self.body += len(event.data)
            assert self.body <= self.settings.max_message_size
        elif isinstance(event, MessageEnd):
            assert self.in_message and env.mail_from is not None and env.rcpt_tos
        elif isinstance(event, MessageAborted):
            assert self.in_message and event.reply.code >= 500, event
            assert conn.state is State.READY
            self.in_message = False
        elif isinstance(event, Reset):
            self.in_message = False
        elif isinstance(event, StartTLS):
            assert state is State.TLS and not conn.session.tls and not self.in_message
            self.tls_pending = True
        else:
            assert isinstance(event, Closed) and conn.closed, event
            self.in_message = False

    def after(self, event: Event, accepted: bool) -> None:
        """The state a decision leaves behind."""
        conn = self.conn
        if isinstance(event, MessageEnd):
            self.in_message = False
            self.accepted += accepted
            assert conn.state is State.READY
        elif isinstance(event, MailFrom) and accepted:
            assert conn.state is State.MAIL and conn.envelope.mail_from == event.address
        elif isinstance(event, RcptTo) and accepted:
            assert conn.state is State.RCPT and conn.envelope.rcpt_tos[-1] == event.address
        elif isinstance(event, Hello) and accepted:
            assert conn.state is State.READY and not conn.envelope.rcpt_tos


def _pure_machine() -> ModuleType:
    """``protocol/server.py`` as pure Python, for the pure wire twin.

    When the compiled state machine is in use, ``protocol.server`` holds its
    names, and it takes only the compiled wire's reader and decoder; so the
    source runs once more, under another name, keeping its own names.
    """
    if protocol_server.ServerConnection.__module__ == protocol_server.__name__:
        return protocol_server  # the pure machine is the one in use
    name = "fastsmtp.protocol._server_fuzz_pure"
    spec = importlib.util.spec_from_file_location(name, protocol_server.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    saved = wire.IMPLEMENTATION
    wire.IMPLEMENTATION = "py"  # compiled_names() gives the copy no compiled names
    try:
        spec.loader.exec_module(module)
    finally:
        wire.IMPLEMENTATION = saved
    return module


PURE_MACHINE = _pure_machine()


def machine_for(impl: ModuleType) -> type[protocol_server.ServerConnection]:
    """The state machine that runs over the wire twin ``impl`` (see the module doc).

    Looked up at each call, so that a test can replace the one in use.
    """
    if getattr(impl, "__name__", None) == "fastsmtp.wire._c":
        return protocol_server.ServerConnection
    return PURE_MACHINE.ServerConnection


@contextlib.contextmanager
def wired(impl: ModuleType, machine: type[protocol_server.ServerConnection]) -> Iterator[None]:
    """Run ``machine`` over the wire twin ``impl`` for the duration.

    The protocol modules bind the wire names at import; they are looked up
    again at each call, so swapping them switches a whole run. The state
    machine reads the names of the module that defines it (a test's
    subclass, those of its base's).
    """
    defining = next(
        module
        for module in (sys.modules[cls.__module__] for cls in machine.__mro__)
        if getattr(module, "ServerConnection", None) in machine.__mro__
    )
    names = {
        defining: (
            "LineReader",
            "DataDecoder",
            "parse_command",
            "parse_mail",
            "parse_rcpt",
        ),
        protocol_dsn: ("xtext_decode",),
    }
    saved = {(m, n): getattr(m, n) for m, ns in names.items() for n in ns}
    try:
        for module, name in saved:
            setattr(module, name, getattr(impl, name))
        yield
    finally:
        for (module, name), value in saved.items():
            setattr(module, name, value)


def server_target(data: bytes) -> None:
    """The ServerConnection target (see the module doc)."""
    traces = []
    for impl in TWINS:
        machine = machine_for(impl)
        with wired(impl, machine):
            model = ServerModel(data, machine)
            model.run()
        traces.append(model.trace)
    same(traces, "ServerConnection")


TARGETS: dict[str, Callable[[bytes], None]] = {"wire": wire_target, "server": server_target}


def TestOneInput(data: bytes) -> None:  # the name atheris and libFuzzer use
    """Both targets on one input."""
    wire_target(data)
    server_target(data)


def corpus_files(*directories: str) -> Iterator[str]:
    """Every file under the given directories, sorted (for the seed-corpus test)."""
    for directory in directories:
        for root, _, files in sorted(os.walk(directory)):
            for name in sorted(files):
                yield os.path.join(root, name)
