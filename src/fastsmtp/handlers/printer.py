"""``Printer``: write every accepted message to a text stream (standard output)."""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from ..handler import Handler
from ..protocol.replies import Reply
from ..session import Envelope, Session

__all__ = ["Printer"]


class Printer(Handler):
    """Write each accepted message to ``stream``, then flush it.

    ``stream`` defaults to ``sys.stdout`` as it is when each message
    arrives (so output redirected later, as pytest's capture does, is
    followed). Each message is one line naming it::

        ---------- 4DFAE59300000002 from <a@example.org> to <b@example.com>, <c@example.com>

    followed by the message (fastsmtp's ``Received:`` header first),
    decoded as UTF-8 with undecodable bytes as U+FFFD and CRLF turned into
    LF. A stream that cannot encode a character gets a backslash escape
    instead of an error. Messages from concurrent sessions are never
    interleaved. The message is not stored: the 250 only means it was
    printed. A debugging aid, as ``fastsmtp serve --print``.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def on_message(self, session: Session, envelope: Envelope) -> Reply | None:
        """Print the message and flush the stream."""
        sender = envelope.mail_from or ""
        rcpts = ", ".join(f"<{rcpt}>" for rcpt in envelope.rcpt_tos)
        body = (envelope.content or b"").replace(b"\r\n", b"\n").decode("utf-8", "replace")
        if not body.endswith("\n"):
            body += "\n"
        text = f"---------- {envelope.queue_id} from <{sender}> to {rcpts}\n{body}"
        stream = self.stream if self.stream is not None else sys.stdout
        with self._lock:
            try:
                stream.write(text)
            except UnicodeEncodeError:
                encoding = getattr(stream, "encoding", None) or "ascii"
                stream.write(text.encode(encoding, "backslashreplace").decode(encoding))
            stream.flush()
        return None
