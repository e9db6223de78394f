"""The sans-IO ClientConnection: commands out, replies in, a result per recipient."""

from __future__ import annotations

import base64
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastsmtp.protocol import replies as R
from fastsmtp.protocol.client import ClientConnection, ClientState
from fastsmtp.protocol.client_events import (
    ClientEvent,
    ConnectionClosed,
    Extensions,
    Replied,
    SendBody,
    ServerReply,
    TransactionDone,
)
from fastsmtp.protocol.events import NEED_DATA
from fastsmtp.wire import dot_stuff
from wire.wire_strategies import chunked, streams

FULL = ["PIPELINING", "SIZE 1000", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"]


def events(conn: ClientConnection) -> list[ClientEvent]:
    out: list[ClientEvent] = []
    for _ in range(100):
        event = conn.next_event()
        if event is NEED_DATA:
            return out
        assert not isinstance(event, type(NEED_DATA))
        out.append(event)
    raise AssertionError("endless events")


def reply_bytes(code: int, *lines: str) -> bytes:
    return b"".join(
        f"{code}{'-' if i < len(lines) - 1 else ' '}{line}\r\n".encode()
        for i, line in enumerate(lines)
    )


def ready(extensions: list[str], *, lmtp: bool = False) -> ClientConnection:
    """A connection that has been greeted and said EHLO/LHLO."""
    conn = ClientConnection(lmtp=lmtp)
    conn.receive_data(b"220 mx.test ESMTP\r\n")
    conn.hello("client.test")
    assert conn.data_to_send() == (b"LHLO" if lmtp else b"EHLO") + b" client.test\r\n"
    conn.receive_data(reply_bytes(250, "mx.test", *extensions))
    assert conn.state is ClientState.READY
    events(conn)
    return conn


def done(conn: ClientConnection) -> list[tuple[int, str | None, str]]:
    [event] = [e for e in events(conn) if isinstance(e, TransactionDone)]
    return [(r.code, r.enhanced, r.text) for r in event.results]


# --- greeting, EHLO, replies -------------------------------------------------
def test_multiline_ehlo_split_anywhere_is_parsed_into_extensions() -> None:
    conn = ClientConnection()
    wire = b"220-mx.test ESMTP\r\n220 second line\r\n"
    for i in range(len(wire)):
        conn.receive_data(wire[i : i + 1])
    [greeting] = events(conn)
    assert greeting == Replied("GREETING", ServerReply(220, None, ("mx.test ESMTP", "second line")))
    conn.hello("client.test")
    conn.data_to_send()
    lines = ["mx.test hello", "PIPELINING", "SIZE 35882577", "8BITMIME", "SMTPUTF8", "CHUNKING"]
    lines += ["BINARYMIME", "STARTTLS", "AUTH PLAIN LOGIN", "AUTH=XOAUTH2", "DSN"]
    lines += ["ENHANCEDSTATUSCODES"]
    ehlo = reply_bytes(250, *lines)
    for i in range(0, len(ehlo), 7):
        conn.receive_data(ehlo[i : i + 7])
    [replied] = events(conn)
    assert isinstance(replied, Replied) and replied.command == "EHLO"
    assert replied.reply.enhanced is None  # RFC 2034 §3: none on the EHLO reply
    ext = conn.extensions
    assert ext.size_limit == 35882577
    assert ext.pipelining and ext.eightbitmime and ext.smtputf8 and ext.chunking
    assert ext.binarymime and ext.starttls and ext.dsn and ext.enhanced_status_codes
    assert ext.auth == {"PLAIN", "LOGIN", "XOAUTH2"}


def test_size_without_a_number_or_zero_declares_no_limit() -> None:
    assert Extensions.parse(["SIZE"]).size_limit is None
    assert Extensions.parse(["SIZE 0"]).size_limit is None
    assert "SIZE" in Extensions.parse(["SIZE 0"])
    assert Extensions.parse([]).size_limit is None


def test_enhanced_codes_are_split_off_only_when_advertised() -> None:
    for advertised, expected in ((True, ("5.1.1", "no such user")), (False, None)):
        conn = ready(["ENHANCEDSTATUSCODES"] if advertised else [])
        conn.start_transaction("a@x.test", ["b@y.test"])
        conn.data_to_send()
        conn.receive_data(b"250 2.1.0 ok\r\n")
        conn.receive_data(b"550-5.1.1 no such\r\n550 5.1.1 user\r\n")
        [(code, enhanced, text)] = done(conn)
        if expected:
            assert (code, enhanced, text) == (550, "5.1.1", "no such\nuser")
        else:
            assert (code, enhanced, text) == (550, None, "5.1.1 no such\n5.1.1 user")


# --- transactions -------------------------------------------------------------
def test_pipelining_sends_mail_rcpts_and_data_in_one_write() -> None:
    conn = ready(FULL)
    conn.start_transaction("a@x.test", ["b@y.test", "bad@y.test", "c@y.test"], size=12)
    assert conn.data_to_send() == (
        b"MAIL FROM:<a@x.test> SIZE=12\r\n"
        b"RCPT TO:<b@y.test>\r\nRCPT TO:<bad@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n"
    )
    conn.receive_data(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 unknown\r\n250 2.1.5 ok\r\n")
    assert events(conn) == []
    conn.receive_data(b"354 go ahead\r\n")
    assert events(conn) == [SendBody()]
    assert conn.body_ready
    conn.send_body(b"Subject: hi\r\n", last=True)
    assert conn.data_to_send() == b"Subject: hi\r\n.\r\n"
    conn.receive_data(b"250 2.0.0 queued as X\r\n")
    assert done(conn) == [
        (250, "2.0.0", "queued as X"),
        (550, "5.1.1", "unknown"),
        (250, "2.0.0", "queued as X"),
    ]
    assert conn.state is ClientState.READY
    assert conn.data_to_send() == b""  # success: no RSET


def test_without_pipelining_each_command_waits_for_its_reply() -> None:
    conn = ready(["8BITMIME"])
    conn.start_transaction("a@x.test", ["b@y.test", "c@y.test"], body_type="8BITMIME")
    assert conn.data_to_send() == b"MAIL FROM:<a@x.test> BODY=8BITMIME\r\n"
    conn.receive_data(b"250 ok\r\n")
    assert conn.data_to_send() == b"RCPT TO:<b@y.test>\r\n"
    conn.receive_data(b"450 try later\r\n")
    assert conn.data_to_send() == b"RCPT TO:<c@y.test>\r\n"
    conn.receive_data(b"250 ok\r\n")
    assert conn.data_to_send() == b"DATA\r\n"
    conn.receive_data(b"354 go\r\n")
    assert events(conn) == [SendBody()]
    conn.send_body(b"x\r\n", last=True)
    conn.data_to_send()
    conn.receive_data(b"250 done\r\n")
    assert done(conn) == [(450, None, "try later"), (250, None, "done")]


def test_refused_mail_fails_every_recipient_and_sends_no_rcpt() -> None:
    conn = ready([])
    conn.start_transaction("a@x.test", ["b@y.test", "c@y.test"])
    conn.data_to_send()
    conn.receive_data(b"553 sender rejected\r\n")
    assert done(conn) == [(553, None, "sender rejected")] * 2
    assert conn.data_to_send() == b"RSET\r\n"
    conn.receive_data(b"250 ok\r\n")
    assert conn.state is ClientState.READY


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "lockstep"])
def test_every_recipient_refused_means_no_message(pipelining: bool) -> None:
    conn = ready(["PIPELINING"] if pipelining else [])
    conn.start_transaction("a@x.test", ["b@y.test"])
    conn.data_to_send()
    conn.receive_data(b"250 ok\r\n550 no\r\n")
    if pipelining:  # DATA went in the batch; RFC 2920 §3.1: it gets 503
        conn.receive_data(b"503 no valid recipients\r\n")
    assert done(conn) == [(550, None, "no")]
    sent = conn.data_to_send()
    assert b"DATA" not in sent and sent.endswith(b"RSET\r\n")


def test_a_lax_354_with_no_recipient_gets_an_empty_message() -> None:
    # RFC 2920 §3.1: if DATA was accepted anyway, send a lone dot.
    conn = ready(["PIPELINING"])
    conn.start_transaction("a@x.test", ["b@y.test"])
    conn.data_to_send()
    conn.receive_data(b"250 ok\r\n550 no\r\n354 go\r\n")
    assert conn.data_to_send() == b".\r\n"
    assert not conn.body_ready
    conn.receive_data(b"554 no valid recipients\r\n")
    assert done(conn) == [(550, None, "no")]


def test_message_refused_after_data_applies_to_every_accepted_recipient() -> None:
    conn = ready(FULL)
    conn.start_transaction("a@x.test", ["b@y.test", "c@y.test"])
    conn.data_to_send()
    conn.receive_data(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    events(conn)
    conn.send_body(b"spam\r\n", last=True)
    conn.receive_data(b"554 5.7.1 looks like spam\r\n")
    assert done(conn) == [(554, "5.7.1", "looks like spam")] * 2
    # The reply to the data ends the transaction either way (RFC 5321 §4.1.1.4).
    assert conn.data_to_send() == b"spam\r\n.\r\n"
    assert conn.state is ClientState.READY


@pytest.mark.parametrize(
    "body",
    [b"", b".\r\n", b"..x\r\n.\r\n", b"a\r\n.b\r\n", b"no final crlf", b".", b"x\r\n."],
)
def test_body_is_dot_stuffed_by_the_wire_layer_across_chunks(body: bytes) -> None:
    conn = ready(FULL)
    conn.start_transaction("a@x.test", ["b@y.test"])
    conn.data_to_send()
    conn.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    events(conn)
    sent = b""
    for i in range(len(body)):  # one octet at a time: the worst split
        conn.send_body(body[i : i + 1])
        sent += conn.data_to_send()
    conn.send_body(b"", last=True)
    sent += conn.data_to_send()
    assert sent == dot_stuff(body)


# --- CHUNKING -------------------------------------------------------------------
def test_chunking_sends_bdat_after_the_envelope_without_stuffing() -> None:
    conn = ready([*FULL, "CHUNKING"])
    conn.start_transaction("a@x.test", ["b@y.test"])
    assert conn.data_to_send() == b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n"  # no DATA
    conn.receive_data(b"250 ok\r\n250 ok\r\n")
    assert events(conn) == [SendBody()]
    conn.send_body(b".a\r\n")
    assert conn.body_ready  # PIPELINING: the next chunk need not wait
    conn.send_body(b".\r\n", last=True)
    assert conn.data_to_send() == b"BDAT 4\r\n.a\r\nBDAT 3 LAST\r\n.\r\n"
    conn.receive_data(b"250 2.0.0 4 octets\r\n250 2.0.0 queued\r\n")
    assert done(conn) == [(250, "2.0.0", "queued")]


def test_bdat_without_pipelining_waits_for_each_chunk_reply() -> None:
    conn = ready(["CHUNKING"])
    conn.start_transaction("a@x.test", ["b@y.test"])
    conn.data_to_send()
    conn.receive_data(b"250 ok\r\n")
    conn.receive_data(b"250 ok\r\n")
    events(conn)
    conn.data_to_send()
    conn.send_body(b"one")
    assert not conn.body_ready
    conn.receive_data(b"250 3 octets\r\n")
    assert conn.body_ready
    conn.send_body(b"", last=True)
    assert conn.data_to_send() == b"BDAT 3\r\noneBDAT 0 LAST\r\n"


def test_a_refused_bdat_chunk_stops_the_body_and_fails_the_message() -> None:
    conn = ready([*FULL, "CHUNKING"])
    conn.start_transaction("a@x.test", ["b@y.test", "bad@y.test"])
    conn.data_to_send()
    conn.receive_data(b"250 ok\r\n250 ok\r\n550 no\r\n")
    events(conn)
    conn.send_body(b"1")
    conn.send_body(b"2")
    conn.receive_data(b"552 5.3.4 too big\r\n")
    assert not conn.body_ready and not conn.sending_body  # RFC 3030 §2: no more chunks
    with pytest.raises(RuntimeError):
        conn.send_body(b"3")
    assert events(conn) == []  # the second chunk's reply is still due
    conn.receive_data(b"503 5.5.1 error\r\n")
    assert done(conn) == [(552, "5.3.4", "too big"), (550, None, "no")]
    assert conn.data_to_send().endswith(b"RSET\r\n")


# --- LMTP -------------------------------------------------------------------------
@pytest.mark.parametrize("chunking", [False, True], ids=["data", "bdat"])
def test_lmtp_reads_one_reply_per_accepted_recipient(chunking: bool) -> None:
    conn = ready([*FULL, *(["CHUNKING"] if chunking else [])], lmtp=True)
    with pytest.raises(RuntimeError):
        conn.helo("client.test")
    conn.start_transaction("a@x.test", ["b@y.test", "gone@y.test", "c@y.test", "d@y.test"])
    conn.data_to_send()
    conn.receive_data(b"250 ok\r\n250 ok\r\n550 5.1.1 gone\r\n250 ok\r\n250 ok\r\n")
    if not chunking:
        conn.receive_data(b"354 go\r\n")
    events(conn)
    conn.send_body(b"hi\r\n", last=True)
    conn.receive_data(b"250 2.0.0 b delivered\r\n452 4.2.2 c over quota\r\n")
    assert events(conn) == []
    conn.receive_data(b"250 2.0.0 d delivered\r\n")
    assert done(conn) == [
        (250, "2.0.0", "b delivered"),
        (550, "5.1.1", "gone"),
        (452, "4.2.2", "c over quota"),
        (250, "2.0.0", "d delivered"),
    ]


def test_lmtp_connection_lost_after_some_replies_defers_only_the_rest() -> None:
    conn = ready(FULL, lmtp=True)
    conn.start_transaction("a@x.test", ["b@y.test", "c@y.test"])
    conn.receive_data(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    events(conn)
    conn.send_body(b"hi\r\n", last=True)
    conn.receive_data(b"250 2.0.0 b delivered\r\n")
    conn.receive_data(b"")
    results = done(conn)
    assert results[0] == (250, "2.0.0", "b delivered")
    assert results[1] == (421, "4.4.2", R.DELIVERY_UNCERTAIN.text)


# --- refusals before sending -----------------------------------------------------
@pytest.mark.parametrize(
    ("extensions", "kwargs", "expected"),
    [
        (FULL, {"size": 1001}, (552, "5.3.4")),
        (["SIZE 1000"], {"size": 1000}, None),
        (["8BITMIME"], {"smtputf8": True}, (553, "5.6.7")),
        (["8BITMIME"], {"recipient": "jürgen@y.test"}, (553, "5.6.7")),
        (["SMTPUTF8"], {"body_type": "8BITMIME"}, (554, "5.6.3")),
        (["8BITMIME", "CHUNKING"], {"body_type": "BINARYMIME"}, (554, "5.6.3")),
        (["8BITMIME", "BINARYMIME"], {"body_type": "BINARYMIME"}, (554, "5.6.3")),
    ],
    ids=["size", "size-equal", "smtputf8", "utf8-address", "8bitmime", "binarymime", "no-bdat"],
)
def test_a_message_the_server_cannot_take_is_refused_before_sending(
    extensions: list[str], kwargs: dict[str, object], expected: tuple[int, str] | None
) -> None:
    conn = ready(extensions)
    recipient = str(kwargs.pop("recipient", "b@y.test"))
    conn.start_transaction("a@x.test", [recipient, "c@y.test"], **kwargs)  # type: ignore[arg-type]
    if expected is None:
        assert conn.data_to_send().startswith(b"MAIL FROM:<a@x.test> SIZE=1000\r\n")
        return
    assert conn.data_to_send() == b""
    [event] = events(conn)
    assert isinstance(event, TransactionDone)
    assert [(r.code, r.enhanced, r.local) for r in event.results] == [(*expected, True)] * 2
    assert conn.state is ClientState.READY


def test_smtputf8_and_body_parameters_are_sent_when_offered() -> None:
    conn = ready(["8BITMIME", "SMTPUTF8", "SIZE"])
    conn.start_transaction("jürgen@x.test", ["b@y.test"], size=5, body_type="8bitmime")
    assert conn.data_to_send() == (
        "MAIL FROM:<jürgen@x.test> SIZE=5 BODY=8BITMIME SMTPUTF8\r\n".encode()
    )


def test_dsn_parameters_go_only_to_a_server_with_dsn() -> None:
    mail = {"RET": "HDRS", "ENVID": "QQ314159"}
    rcpt = [{"NOTIFY": "FAILURE", "ORCPT": "rfc822;b@y.test"}]
    for dsn, line in ((True, b" RET=HDRS ENVID=QQ314159"), (False, b"")):
        conn = ready(["DSN"] if dsn else [])
        conn.start_transaction("a@x.test", ["b@y.test"], mail_params=mail, rcpt_params=rcpt)
        conn.receive_data(b"250 ok\r\n")
        sent = conn.data_to_send()
        assert sent.startswith(b"MAIL FROM:<a@x.test>" + line + b"\r\n")
        assert (b"NOTIFY=FAILURE ORCPT=rfc822;b@y.test" in sent) is dsn


@pytest.mark.parametrize(
    "bad",
    [
        {"mail_from": "a@x.test>\r\nRCPT TO:<evil@z.test"},
        {"recipients": ["b@y.test\r\nDATA"]},
        {"mail_params": {"ENVID": "a b"}},
        {"mail_params": {"X=Y": None}},
        {"recipients": []},
        {"rcpt_params": [{}, {}]},
    ],
)
def test_command_injection_and_bad_arguments_are_refused(bad: dict[str, object]) -> None:
    conn = ready(["DSN"])
    kwargs: dict[str, object] = {"mail_from": "a@x.test", "recipients": ["b@y.test"], **bad}
    with pytest.raises(ValueError):
        conn.start_transaction(**kwargs)  # type: ignore[arg-type]
    assert conn.data_to_send() == b""


# --- hostile or failing servers -----------------------------------------------
def test_an_endless_reply_line_is_capped_then_ends_the_connection() -> None:
    conn = ClientConnection(max_reply_line=512)
    conn.receive_data(b"220 ")
    for _ in range(1000):
        conn.receive_data(b"x" * 1000)
        assert len(conn._reader) <= 512  # bounded, whatever the server sends
        if conn.state is ClientState.CLOSED:
            break
    assert conn.state is ClientState.CLOSED  # at the limit, without waiting for an LF
    [replied, closed] = events(conn)
    assert isinstance(replied, Replied) and replied.reply.code == 421
    assert replied.reply.enhanced == "4.5.0" and replied.reply.local
    assert isinstance(closed, ConnectionClosed) and "too long" in closed.reason


def test_an_endless_multiline_reply_is_capped() -> None:
    conn = ready(FULL)
    conn.start_transaction("a@x.test", ["b@y.test"])
    for _ in range(1000):
        conn.receive_data(b"250-more\r\n" * 10)
        if conn.state is ClientState.CLOSED:
            break
    assert conn.state is ClientState.CLOSED
    assert done(conn) == [(421, "4.5.0", R.REMOTE_MALFORMED_REPLY.text)]


@pytest.mark.parametrize(
    "garbage",
    [b"hello there\r\n", b"250-a\r\n251 b\r\n", b"2500 x\r\n", b"199 x\r\n"],
    ids=["no-code", "code-changes", "four-digits", "bad-class"],
)
def test_malformed_replies_defer_the_transaction(garbage: bytes) -> None:
    conn = ready(FULL)
    conn.start_transaction("a@x.test", ["b@y.test"])
    conn.receive_data(garbage)
    assert done(conn) == [(421, "4.5.0", R.REMOTE_MALFORMED_REPLY.text)]
    assert conn.state is ClientState.CLOSED


def test_a_reply_nobody_asked_for_closes_the_connection() -> None:
    conn = ready(FULL)
    conn.receive_data(b"250 surprise\r\n")
    assert isinstance(events(conn)[-1], ConnectionClosed)
    conn.start_transaction("a@x.test", ["b@y.test"])  # on a closed connection: deferred
    assert done(conn) == [(421, "4.4.2", R.REMOTE_CONNECTION_LOST.text)]


def test_a_421_ends_the_transaction_with_the_servers_words() -> None:
    conn = ready(FULL)
    conn.start_transaction("a@x.test", ["b@y.test", "c@y.test"])
    conn.receive_data(b"250 ok\r\n421 4.3.2 shutting down\r\n")
    assert done(conn) == [(421, "4.3.2", "shutting down")] * 2
    assert conn.state is ClientState.CLOSED


def test_connection_lost_before_the_dot_defers_and_after_it_is_uncertain() -> None:
    conn = ready(FULL)
    conn.start_transaction("a@x.test", ["b@y.test", "no@y.test"])
    conn.receive_data(b"250 ok\r\n250 ok\r\n550 no\r\n354 go\r\n")
    events(conn)
    conn.send_body(b"part")
    conn.abort(R.REMOTE_TIMEOUT)
    assert done(conn) == [(421, "4.4.2", R.REMOTE_TIMEOUT.text), (550, None, "no")]

    conn = ready(FULL)
    conn.start_transaction("a@x.test", ["b@y.test"])
    conn.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    events(conn)
    conn.send_body(b"all\r\n", last=True)
    conn.receive_data(b"")
    assert done(conn) == [(421, "4.4.2", R.DELIVERY_UNCERTAIN.text)]


def test_abort_gives_its_reply_to_the_unanswered_recipients() -> None:
    conn = ready(["CHUNKING"])
    conn.start_transaction("a@x.test", ["b@y.test"])
    conn.receive_data(b"250 ok\r\n250 ok\r\n")
    events(conn)
    conn.abort(R.REMOTE_NEEDS_8BITMIME)
    assert done(conn) == [(554, "5.6.3", R.REMOTE_NEEDS_8BITMIME.text)]


def test_eof_while_waiting_for_ehlo_answers_the_waiting_command() -> None:
    conn = ClientConnection()
    conn.receive_data(b"220 hi\r\n")
    conn.hello("client.test")
    conn.receive_data(b"")
    [_, replied, closed] = events(conn)
    assert isinstance(replied, Replied) and replied.command == "EHLO"
    assert replied.reply.code == 421 and replied.reply.local
    assert isinstance(closed, ConnectionClosed)


# --- STARTTLS, AUTH, HELO, QUIT -------------------------------------------------
def test_starttls_drops_plaintext_after_the_220_and_forgets_extensions() -> None:
    conn = ready(["STARTTLS", "PIPELINING"])
    conn.starttls()
    assert conn.data_to_send() == b"STARTTLS\r\n"
    # A man in the middle appends a reply to the 220 (the CVE-2011-0411 family).
    conn.receive_data(b"220 2.0.0 go ahead\r\n250 injected\r\n")
    assert conn.state is ClientState.TLS
    conn.receive_data(b"250 more injected\r\n")
    conn.tls_started()
    assert conn.tls_active and conn.state is ClientState.CONNECTED
    assert not conn.extensions.pipelining  # RFC 3207 §4.2: ask again
    conn.hello("client.test")
    conn.receive_data(b"250-mx.test\r\n250 8BITMIME\r\n")
    assert [e.command for e in events(conn) if isinstance(e, Replied)] == ["STARTTLS", "EHLO"]
    assert conn.extensions.eightbitmime


def test_auth_plain_sends_an_initial_response() -> None:
    conn = ready(["AUTH PLAIN"])
    conn.authenticate("plain", "user", "pässword")
    token = base64.b64encode("\0user\0pässword".encode()).decode()
    assert conn.data_to_send() == f"AUTH PLAIN {token}\r\n".encode()
    conn.receive_data(b"235 2.7.0 ok\r\n")
    [replied] = events(conn)
    assert isinstance(replied, Replied) and replied.reply.code == 235


def test_auth_login_answers_both_challenges_and_cancels_a_third() -> None:
    conn = ready(["AUTH LOGIN"])
    conn.authenticate("LOGIN", "user", "secret")
    assert conn.data_to_send() == b"AUTH LOGIN\r\n"
    conn.receive_data(b"334 VXNlcm5hbWU6\r\n")
    assert conn.data_to_send() == base64.b64encode(b"user") + b"\r\n"
    conn.receive_data(b"334 UGFzc3dvcmQ6\r\n")
    assert conn.data_to_send() == base64.b64encode(b"secret") + b"\r\n"
    conn.receive_data(b"334 more?\r\n")
    assert conn.data_to_send() == b"*\r\n"
    conn.receive_data(b"501 cancelled\r\n")
    [replied] = events(conn)
    assert isinstance(replied, Replied) and replied.reply.code == 501


def test_helo_fallback_leaves_no_extensions_and_quit_closes() -> None:
    conn = ClientConnection()
    conn.receive_data(b"220 old.test\r\n")
    conn.hello("client.test")
    conn.receive_data(b"502 command not implemented\r\n")
    conn.helo("client.test")
    assert conn.data_to_send() == b"EHLO client.test\r\nHELO client.test\r\n"
    conn.receive_data(b"250 old.test\r\n")
    assert conn.state is ClientState.READY and not conn.extensions.keywords
    conn.quit()
    conn.receive_data(b"221 bye\r\n")
    assert isinstance(events(conn)[-1], ConnectionClosed)
    assert conn.state is ClientState.CLOSED


def test_commands_out_of_state_are_refused() -> None:
    conn = ClientConnection()
    with pytest.raises(RuntimeError):
        conn.start_transaction("a@x.test", ["b@y.test"])
    with pytest.raises(RuntimeError):
        conn.starttls()
    with pytest.raises(ValueError):
        ready([]).authenticate("CRAM-MD5", "u", "p")
    with pytest.raises(ValueError):
        ready([]).hello("bad name")


# --- properties -------------------------------------------------------------------
BOUNDED = settings(max_examples=200, deadline=None)


@BOUNDED
@given(chunks=chunked(streams()), chunking=st.booleans())
def test_any_body_in_any_chunks_goes_out_stuffed_or_framed(
    chunks: list[bytes], chunking: bool
) -> None:
    conn = ready([*FULL, *(["CHUNKING"] if chunking else [])])
    conn.start_transaction("a@x.test", ["b@y.test"])
    conn.receive_data(b"250 ok\r\n250 ok\r\n" + (b"" if chunking else b"354 go\r\n"))
    assert events(conn) == [SendBody()]
    conn.data_to_send()
    for i, chunk in enumerate(chunks):
        conn.send_body(chunk, last=i == len(chunks) - 1)
    if not chunks:
        conn.send_body(b"", last=True)
    sent = conn.data_to_send()
    body = b"".join(chunks)
    if not chunking:
        assert sent == dot_stuff(body)
        return
    payload, rest = b"", sent
    while rest:  # undo the BDAT framing
        line, rest = rest.split(b"\r\n", 1)
        size = int(line.split()[1])
        payload, rest = payload + rest[:size], rest[size:]
    assert payload == body and line.endswith(b" LAST")


@BOUNDED
@given(
    codes=st.lists(st.sampled_from([250, 251, 450, 452, 550, 553]), min_size=1, max_size=8),
    lines=st.integers(1, 3),
    cuts=st.lists(st.integers(0, 2000), max_size=12),
)
def test_replies_cut_anywhere_give_the_same_results(
    codes: list[int], lines: int, cuts: list[int]
) -> None:
    conn = ready(FULL)
    recipients = [f"r{i}@y.test" for i in range(len(codes))]
    conn.start_transaction("a@x.test", recipients)
    text = [f"line {n}" for n in range(lines)]
    wire = reply_bytes(250, *text)  # MAIL
    for i, code in enumerate(codes):
        wire += reply_bytes(code, *(f"{code // 100}.1.{i} {t}" for t in text))
    accepted = any(c < 300 for c in codes)
    wire += b"354 go\r\n" if accepted else b"503 5.5.1 no valid recipients\r\n"
    bounds = [0, *sorted(c % (len(wire) + 1) for c in cuts), len(wire)]
    for a, b in itertools.pairwise(bounds):
        if b > a:  # b"" would mean EOF
            conn.receive_data(wire[a:b])
    if accepted:
        assert events(conn) == [SendBody()]
        conn.send_body(b"x\r\n", last=True)
        conn.receive_data(b"250 2.0.0 queued\r\n")
    expected = [
        (250, "2.0.0", "queued") if c < 300 else (c, f"{c // 100}.1.{i}", "\n".join(text))
        for i, c in enumerate(codes)
    ]
    assert done(conn) == expected
