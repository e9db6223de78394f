"""Where a server connection is in the SMTP dialogue, and what each place admits.

``State`` is the one state a ``ServerConnection`` is in. ``SEQUENCE`` is
the table of the dialogue's order (RFC 5321 §4.1.4): per verb, the states
in which it is out of sequence and the 503 that refuses it there. Data
only, shared by ``protocol.server`` and the command modules beside it.
"""

from __future__ import annotations

import enum

from . import replies as R
from .replies import Reply

__all__ = ["BDAT_SEQUENCE", "IN_TRANSACTION", "SEQUENCE", "State"]


class State(enum.IntEnum):
    """Where a connection is in the SMTP dialogue."""

    # An IntEnum: states are looked up in dicts once per command, and int
    # hashing is C; Enum's is Python.
    CONNECTED = 1  # greeted, waiting for HELO/EHLO
    READY = 2  # greeted both ways, no transaction
    MAIL = 3  # MAIL accepted, no recipient yet
    RCPT = 4  # at least one recipient accepted
    DATA = 5  # receiving the message body
    TLS = 6  # STARTTLS accepted: input is discarded until tls_started()
    CLOSED = 7
    CHUNKS = 8  # between BDAT chunks of one message (RFC 3030)
    BDAT = 9  # consuming the octets of one BDAT chunk
    AUTH = 10  # in an AUTH exchange: lines are SASL responses (RFC 4954 §4)


# verb -> {state: the 503 that refuses it there}; states not listed admit
# the verb. RFC 5321 §4.1.4 gives the order.
SEQUENCE: dict[str, dict[State, Reply]] = {
    "MAIL": {
        State.CONNECTED: R.NEED_HELO,
        State.MAIL: R.NESTED_MAIL,
        State.RCPT: R.NESTED_MAIL,
        State.CHUNKS: R.NESTED_MAIL,
    },
    "RCPT": {State.CONNECTED: R.NEED_MAIL, State.READY: R.NEED_MAIL, State.CHUNKS: R.AFTER_BDAT},
    # RFC 2920 §3.1: DATA with no accepted recipient fails with 503.
    "DATA": {
        State.CONNECTED: R.NEED_MAIL,
        State.READY: R.NEED_MAIL,
        State.MAIL: R.NO_VALID_RECIPIENTS,
        # RFC 3030 §2: no DATA in a transaction that used BDAT.
        State.CHUNKS: R.AFTER_BDAT,
    },
    # RFC 4954 §4: AUTH after EHLO, never during a mail transaction.
    "AUTH": {
        State.CONNECTED: R.NEED_EHLO,
        State.MAIL: R.AUTH_IN_TRANSACTION,
        State.RCPT: R.AUTH_IN_TRANSACTION,
        State.CHUNKS: R.AUTH_IN_TRANSACTION,
    },
    "ETRN": {
        State.CONNECTED: R.NEED_HELO,
        State.MAIL: R.ETRN_IN_TRANSACTION,
        State.RCPT: R.ETRN_IN_TRANSACTION,
        State.CHUNKS: R.ETRN_IN_TRANSACTION,
    },
    "ATRN": {
        State.CONNECTED: R.NEED_EHLO,
        State.MAIL: R.ATRN_IN_TRANSACTION,
        State.RCPT: R.ATRN_IN_TRANSACTION,
        State.CHUNKS: R.ATRN_IN_TRANSACTION,
    },
}
# BDAT has no entry: a chunk is consumed even when refused (RFC 3030 §2),
# so ServerConnection._bdat checks this sequence itself.
BDAT_SEQUENCE = {
    State.CONNECTED: R.NEED_MAIL,
    State.READY: R.NEED_MAIL,
    State.MAIL: R.NO_VALID_RECIPIENTS,
}

# A mail transaction is open: a new HELO/EHLO or STARTTLS abandons it (a Reset).
IN_TRANSACTION = frozenset({State.MAIL, State.RCPT, State.CHUNKS})
