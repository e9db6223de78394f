"""``Webhook``: POST each message to an HTTP(S) URL; anything but a 2xx answer is retried."""

from __future__ import annotations

import io
import logging
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import BinaryIO

from ..config import ConfigError
from ..handler import Handler
from ..protocol import replies as R
from ..protocol.replies import Reply
from ..session import Envelope, Session

__all__ = ["Webhook"]

log = logging.getLogger(__name__)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is a failure: urllib would follow a 301-303 with a GET, dropping the message."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class Webhook(Handler):
    """POST every accepted message to ``url``; a 2xx answer means delivered.

    The request (one per message, whatever the number of recipients):

    * body: the message as fastsmtp stored it (its ``Received:`` header
      first, CRLF line endings, 8-bit bytes untouched), streamed from
      ``envelope.open_content()`` with a ``Content-Length``, never loaded
      whole when spooled; ``Content-Type: message/rfc822``.
    * ``X-Mail-From``: the envelope sender, bare (empty for the null sender).
    * ``X-Rcpt-To``: the recipients, comma-separated, each in angle brackets
      (``<a@example.com>, <b@example.com>``).
    * ``X-Queue-Id``: fastsmtp's queue id, for deduplication: a retry after
      a timeout may post the same message twice.
    * ``headers``: added as given (e.g. ``Authorization``).

    Non-ASCII addresses (SMTPUTF8) go in the header values as UTF-8 octets.

    The answer: any 2xx delivers. Anything else is a temporary failure,
    ``451 4.3.0``, logged with the reason, so the client (or the queue)
    retries: another status (3xx redirects are not followed), a refused
    connection, a TLS error or no answer within ``timeout`` seconds. A web
    hook cannot refuse mail permanently. TLS certificates are verified
    against the system CAs unless ``tls_context`` says otherwise.

    ``on_message`` is a plain function: the server runs it in its thread
    pool (standard-library ``urllib``, no extra dependency).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 60.0,
        headers: Mapping[str, str] | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"webhook URL must be http:// or https://, not {url!r}")
        self.url = url
        self.timeout = timeout
        self.headers = dict(headers or {})
        context = tls_context or ssl.create_default_context()
        self._opener = urllib.request.build_opener(
            _NoRedirects(), urllib.request.HTTPSHandler(context=context)
        )

    def on_message(self, session: Session, envelope: Envelope) -> Reply | None:
        """POST the message; None (delivered) on a 2xx answer, else ``451 4.3.0``."""
        with envelope.open_content() as content:
            request = urllib.request.Request(
                self.url, data=content, headers=self._headers(envelope, _length(content))
            )
            try:
                with self._opener.open(request, timeout=self.timeout) as response:
                    status = response.status
                    response.read(64 * 1024)  # let the server finish its answer
            except urllib.error.HTTPError as exc:
                status = exc.code
                exc.close()
            except (OSError, ValueError) as exc:  # URLError, timeouts, TLS, a bad answer
                log.warning("%s: web hook %s: %s (451)", envelope.queue_id, self.url, exc)
                return R.WEBHOOK_FAILED
        if 200 <= status < 300:
            return None
        log.warning("%s: web hook %s answered %d (451)", envelope.queue_id, self.url, status)
        return R.WEBHOOK_FAILED

    def _headers(self, envelope: Envelope, length: int) -> dict[str, str]:
        headers = {
            "Content-Type": "message/rfc822",
            "Content-Length": str(length),
            "X-Mail-From": _octets(envelope.mail_from or ""),
            "X-Rcpt-To": _octets(", ".join(f"<{r}>" for r in envelope.rcpt_tos)),
            "X-Queue-Id": envelope.queue_id or "",
        }
        headers.update(self.headers)
        return headers


def _length(content: BinaryIO) -> int:
    """The file's length from its start (where it is), leaving it there."""
    end = content.seek(0, io.SEEK_END)
    content.seek(0)
    return end


def _octets(value: str) -> str:
    """``value`` as a str that http.client (which encodes Latin-1) sends as UTF-8 octets."""
    return value.encode("utf-8").decode("latin-1")
