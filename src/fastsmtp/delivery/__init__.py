"""Outbound delivery: the durable queue, routing (local, alias, smarthost, MX), the
SMTP/LMTP client, retries with backoff and RFC 3464 bounces.

``queue`` keeps accepted mail on disk until every recipient is delivered or
failed; ``mx`` and ``router`` decide where a recipient goes; ``client``
speaks SMTP to that place; ``bounce`` tells the sender what failed;
``scheduler`` ties them together under a running ``Server``.
"""
