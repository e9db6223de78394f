"""``Pipe``: hand each message to a command on its standard input, as Postfix's pipe(8) does."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from typing import BinaryIO

from ..config import ConfigError
from ..handler import Handler
from ..protocol import replies as R
from ..protocol.replies import Reply
from ..session import Envelope, Session

__all__ = ["Pipe"]

log = logging.getLogger(__name__)

#: octets of the command's output kept for the reply and the log
_OUTPUT_KEPT = 200
#: octets of its output read to find the first non-empty line
_OUTPUT_READ = 4096


class Pipe(Handler):
    """Run ``argv`` (no shell) once per message with the message on its standard input.

    The environment is fastsmtp's own plus the envelope:

    ============== ================================================
    ``SENDER``     the envelope sender (empty for the null sender)
    ``RECIPIENT``  the recipient (per-recipient mode, or when one)
    ``RECIPIENTS`` every recipient, separated by spaces
    ``QUEUE_ID``   the message's queue id
    ============== ================================================

    The command reads the message as fastsmtp stored it (its ``Received:``
    header first, CRLF line endings; a spooled message streams from its
    file). It runs in its own process group; past ``timeout`` seconds the
    whole group is killed (a ``sh -c`` and its children alike). Its standard
    output and error are collected; the first line, cleaned and cut to 200
    octets, goes into the reply and the log when it fails.

    The exit status decides, like sendmail and Postfix (sysexits.h):

    ================================================ =====================
    exit status                                      reply
    ================================================ =====================
    0                                                delivered (``None``)
    75 EX_TEMPFAIL, 71 EX_OSERR, 74 EX_IOERR         ``451 4.3.0`` (retry)
    67 EX_NOUSER                                     ``550 5.1.1``
    68 EX_NOHOST                                     ``550 5.1.2``
    65 EX_DATAERR                                    ``554 5.6.0``
    73 EX_CANTCREAT                                  ``550 5.2.0``
    77 EX_NOPERM                                     ``550 5.7.0``
    76 EX_PROTOCOL                                   ``554 5.5.0``
    78 EX_CONFIG                                     ``554 5.3.5``
    64, 66, 69, 70, 72 (other sysexits codes)        ``554 5.3.0``
    any other status, a signal                       ``451 4.3.0`` (retry)
    the timeout                                      ``451 4.3.0`` (retry)
    the command cannot be started                    ``451 4.3.0`` (retry)
    ================================================ =====================

    Unknown statuses are temporary on purpose: a script that dies with 1
    should not bounce mail. ``per_recipient=True`` runs the command once per
    recipient (``RECIPIENT`` set each time) and returns one result per
    recipient, so one mailbox may refuse while another accepts; otherwise
    the one result answers for all. ``on_message`` is a plain function: the
    server runs it in its thread pool.
    """

    def __init__(
        self, argv: Sequence[str], *, timeout: float = 300.0, per_recipient: bool = False
    ) -> None:
        if not argv:
            raise ConfigError("pipe needs a command (a non-empty argv)")
        self.argv = list(argv)
        self.timeout = timeout
        self.per_recipient = per_recipient

    def on_message(self, session: Session, envelope: Envelope) -> list[Reply | None] | Reply | None:
        """Run the command (once, or once per recipient); its exit status is the result."""
        if not self.per_recipient:
            return self._run(envelope, envelope.rcpt_tos)
        return [self._run(envelope, [rcpt]) for rcpt in envelope.rcpt_tos]

    def _run(self, envelope: Envelope, rcpts: list[str]) -> Reply | None:
        env = dict(os.environ)
        env.update(
            SENDER=envelope.mail_from or "",
            RECIPIENTS=" ".join(rcpts),
            QUEUE_ID=envelope.queue_id or "",
        )
        if len(rcpts) == 1:
            env["RECIPIENT"] = rcpts[0]
        else:
            env.pop("RECIPIENT", None)
        with envelope.open_content() as content:
            try:
                status, output = self._execute(content, env)
            except OSError as exc:
                log.error("%s: cannot run %s: %s (451)", envelope.queue_id, self.argv[0], exc)
                return R.PIPE_NOT_RUN
        if status is None:
            log.warning(
                "%s: %s killed after %gs (451): %s",
                envelope.queue_id,
                self.argv[0],
                self.timeout,
                output,
            )
            return R.PIPE_TIMEOUT
        if status == 0:
            return None
        reply = R.command_failed(status, output)
        log.info("%s: %s for <%s>: %s", envelope.queue_id, self.argv[0], ">,<".join(rcpts), reply)
        return reply

    def _execute(self, content: BinaryIO, env: dict[str, str]) -> tuple[int | None, str]:
        """Run the command on ``content``; ``(exit status or None on timeout, output line)``.

        A real file is given to the command as its standard input directly;
        an in-memory message is written to it by ``communicate``. Its output
        goes to a temporary file, not a pipe: a chatty command costs no
        memory, and something it left running in the background does not
        hold up the answer.
        """
        data: bytes | None = None
        try:
            stdin: int = content.fileno()
        except (OSError, ValueError):  # io.UnsupportedOperation: bytes in memory
            stdin, data = subprocess.PIPE, content.read()
        with (
            tempfile.TemporaryFile() as output,
            subprocess.Popen(
                self.argv,
                stdin=stdin,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group, killed whole on timeout
            ) as process,
        ):
            status: int | None
            try:
                process.communicate(data, timeout=self.timeout)
                status = process.returncode
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                status = None
            output.seek(0)
            return status, _first_line(output.read(_OUTPUT_READ))


def _first_line(output: bytes) -> str:
    """The output's first non-empty line, printable ASCII only, at most ``_OUTPUT_KEPT`` long."""
    for line in output.splitlines():
        text = "".join(c if " " <= c <= "~" else "?" for c in line.decode("ascii", "replace"))
        if text.strip():
            return text.strip()[:_OUTPUT_KEPT]
    return ""
