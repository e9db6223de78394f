"""CHUNKING/BDAT and BINARYMIME (RFC 3030) over real sockets with a raw client.

smtplib has no BDAT, so these tests write the octets themselves.
"""

from __future__ import annotations

from fastsmtp import Collect

# Everything a text decoder would trip on: bare CR/LF, NUL, a fake DATA end.
BINARY = b"\x00\x01\xff\rbare CR\nbare LF\r\n.\r\nnot the end\r\n.."


def body_of(handler: Collect) -> bytes:
    content = handler.wait_for(1)[0].content
    assert content is not None
    return content.split(b"\r\n", 4)[4]  # after our 4-line Received: header


def test_one_last_chunk_delivers(serve, client):
    handler = Collect()
    raw = client(serve(handler))
    raw.begin()
    raw.send(b"BDAT 7 LAST\r\nhello\r\n")
    reply = raw.reply()
    assert (reply.code, reply.enhanced) == (250, "2.0.0")
    assert reply.queue_id
    assert body_of(handler) == b"hello\r\n"


def test_pipelined_chunks_are_answered_in_order_and_joined(serve, client):
    handler = Collect()
    raw = client(serve(handler))
    raw.begin()
    raw.send(b"BDAT 3\r\nabcBDAT 4\r\ndefgBDAT 0 LAST\r\n")
    replies = raw.replies(3)
    assert [(r.code, r.text) for r in replies[:2]] == [
        (250, "3 octets received"),
        (250, "4 octets received"),
    ]
    assert replies[2].queue_id
    assert body_of(handler) == b"abcdefg"


def test_binarymime_octets_are_kept_exactly_even_sent_byte_by_byte(serve, client):
    handler = Collect()
    raw = client(serve(handler))
    raw.ehlo()
    assert raw.cmd("MAIL FROM:<a@example.com> BODY=BINARYMIME").code == 250
    assert raw.cmd("RCPT TO:<b@example.com>").code == 250
    for byte in b"BDAT %d LAST\r\n" % len(BINARY) + BINARY:
        raw.send(bytes([byte]))
    assert raw.reply().code == 250
    assert body_of(handler) == BINARY
    assert handler.envelopes[0].body_type == "BINARYMIME"


def test_a_refused_chunk_is_still_consumed(serve, client):
    handler = Collect()
    raw = client(serve(handler))
    raw.ehlo()
    # No transaction: the chunk is refused, but its 12 octets are not commands.
    raw.send(b"BDAT 12\r\nRSET\r\nQUIT\r\n")
    reply = raw.reply()
    assert (reply.code, reply.enhanced) == (503, "5.5.1")
    assert raw.cmd("NOOP").code == 250  # still connected: QUIT was payload
    raw.begin()
    raw.send(b"BDAT 2 LAST\r\nok")
    assert raw.reply().code == 250
    assert body_of(handler) == b"ok"


def test_data_after_bdat_is_refused_and_bdat_goes_on(serve, client):
    handler = Collect()
    raw = client(serve(handler))
    raw.begin()
    raw.send(b"BDAT 2\r\nab")
    assert raw.reply().code == 250
    refused = raw.cmd("DATA")
    assert (refused.code, refused.enhanced) == (503, "5.5.1")
    assert raw.cmd("RCPT TO:<c@example.com>").code == 503
    raw.send(b"BDAT 1 LAST\r\nc")
    assert raw.reply().code == 250
    assert body_of(handler) == b"abc"


def test_binarymime_refuses_data(serve, client):
    raw = client(serve(Collect()))
    raw.ehlo()
    assert raw.cmd("MAIL FROM:<a@example.com> BODY=BINARYMIME").code == 250
    assert raw.cmd("RCPT TO:<b@example.com>").code == 250
    reply = raw.cmd("DATA")
    assert (reply.code, reply.enhanced) == (503, "5.5.1")


def test_a_chunk_over_the_size_limit_is_consumed_and_refused(serve, client):
    handler = Collect()
    raw = client(serve(handler, max_message_size=10))
    raw.begin()
    raw.send(b"BDAT 20 LAST\r\n" + b"x" * 20)
    reply = raw.reply()
    assert (reply.code, reply.enhanced) == (552, "5.3.4")
    raw.begin()  # the failed transaction is gone; a new one works
    raw.send(b"BDAT 4 LAST\r\nfine")
    assert raw.reply().code == 250
    assert body_of(handler) == b"fine"


def test_the_size_limit_counts_every_chunk(serve, client):
    handler = Collect()
    raw = client(serve(handler, max_message_size=10))
    raw.begin()
    raw.send(b"BDAT 6\r\n123456BDAT 6 LAST\r\n789012")
    first, second = raw.replies(2)
    assert first.code == 250
    assert (second.code, second.enhanced) == (552, "5.3.4")
    assert raw.cmd("RCPT TO:<b@example.com>").code == 503  # transaction reset
    serve.stop()
    assert handler.envelopes == []


def test_rset_between_chunks_drops_the_message(serve, client):
    handler = Collect()
    raw = client(serve(handler))
    raw.begin()
    raw.send(b"BDAT 5\r\nfirst")
    assert raw.reply().code == 250
    assert raw.cmd("RSET").code == 250
    raw.begin()
    raw.send(b"BDAT 6 LAST\r\nsecond")
    assert raw.reply().code == 250
    assert body_of(handler) == b"second"


def test_malformed_bdat_is_a_syntax_error(serve, client):
    raw = client(serve(Collect()))
    raw.begin()
    for line in ("BDAT", "BDAT x", "BDAT 5 FIRST", "BDAT 5 LAST now"):
        reply = raw.cmd(line)
        assert (reply.code, reply.enhanced) == (501, "5.5.4"), line


def test_bdat_is_unknown_when_chunking_is_off(serve, client):
    raw = client(serve(Collect(), chunking=False))
    assert "CHUNKING" not in raw.ehlo().lines
    assert raw.cmd("BDAT 0 LAST").code == 502
