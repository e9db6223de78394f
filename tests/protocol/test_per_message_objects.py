"""The objects made once per message by shortcuts: the same as the plain constructors."""

from __future__ import annotations

from dataclasses import MISSING, fields

from fastsmtp.protocol.replies import Reply, queued
from fastsmtp.protocol.server import blank_envelope
from fastsmtp.session import Envelope


def test_blank_envelope_equals_a_new_envelope():
    blank, plain = blank_envelope(), Envelope()
    assert blank == plain
    assert vars(blank) == vars(plain)
    assert blank.content is None
    with blank.open_content() as content:
        assert content.read() == b""


def test_each_blank_envelope_has_its_own_containers():
    # Every field with a default_factory, including any added later.
    mutable = [f.name for f in fields(Envelope) if f.default_factory is not MISSING]
    assert mutable
    first, second = blank_envelope(), blank_envelope()
    for name in mutable:
        assert getattr(first, name) is not getattr(second, name), name
    first.rcpt_tos.append("a@example.com")
    first.mail_options["SIZE"] = "10"
    assert blank_envelope() == Envelope()


def test_a_blank_envelope_takes_content_like_any_other():
    envelope = blank_envelope()
    envelope.content = b"Subject: x\r\n\r\nbody\r\n"
    assert envelope.content == b"Subject: x\r\n\r\nbody\r\n"
    assert envelope == Envelope(content=b"Subject: x\r\n\r\nbody\r\n")


def test_queued_equals_the_reply_built_and_checked():
    checked = Reply(250, "2.0.0", "OK: queued as 3F2A00000001")
    reply = queued("3F2A00000001")
    assert reply == checked
    assert hash(reply) == hash(checked)
    assert reply.encode() == checked.encode() == b"250 2.0.0 OK: queued as 3F2A00000001\r\n"
    assert str(reply) == str(checked)
    assert reply.is_success


def test_each_settings_object_has_its_own_profile():
    from fastsmtp.config import Settings
    from fastsmtp.protocol.server import ServerConnection
    from fastsmtp.session import Session

    smtp = Settings(hostname="mx.test", etrn=True, max_recipients=7)
    lmtp = Settings(hostname="lmtp.test", lmtp=True, strict_crlf=False)
    first = ServerConnection(smtp, Session("A"), extensions=("XTEST",))
    again = ServerConnection(smtp, Session("B"))
    other = ServerConnection(lmtp, Session("C"))
    assert first._profile is again._profile is not other._profile
    assert (first._profile.max_recipients, other._profile.strict_crlf) == (7, False)
    assert first._extensions == ("XTEST", "ETRN") and again._extensions == ("ETRN",)
    profile = first._profile
    plain, tls = profile.ehlo_for(("ETRN",)), profile.ehlo_for(("STARTTLS", "ETRN"))
    assert profile.ehlo_for(("ETRN",)) is plain and plain is not tls
    assert tls.text.splitlines()[-2:] == ["STARTTLS", "ETRN"]
    for conn, greeting in ((first, b"220 mx.test ESMTP"), (other, b"220 lmtp.test LMTP")):
        conn.greet()
        assert conn.data_to_send().startswith(greeting)
