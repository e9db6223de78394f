"""``fastsmtp queue``: look at and act on the durable queue (like mailq, postqueue, postsuper).

``list`` prints the queue as ``mailq`` does; ``show ID`` one message's
envelope, delivery state and content; ``flush [DOMAIN]`` and ``retry ID``
make deferred recipients due now; ``delete ID`` removes a message without a
report; ``bounce ID`` fails its open recipients so that the sender gets a
report. A running server sees every change at its scheduler's next poll of
the index: nothing needs to be signalled.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from email.utils import formatdate
from typing import Any

from .queue import Queue, QueuedMessage, QueuedRecipient

__all__ = ["add_parser", "run"]


def add_parser(commands: Any) -> None:
    """Add the ``queue`` command to the CLI's subparsers."""
    parser = commands.add_parser(
        "queue",
        help="list, show, flush, retry, delete or bounce queued mail",
        description="Inspect and manage the outbound queue (in --queue-dir, or the queue_dir "
        "of --config). A running server picks up flush, retry and bounce at its next poll.",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--queue-dir", metavar="DIR", help="the queue directory")
    where.add_argument("--config", metavar="FILE", help="take queue_dir from this TOML file")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="every queued message and recipient (like mailq)")
    for name, help_text in (
        ("show", "one message: envelope, each recipient's state, then the content"),
        ("retry", "make the message's open recipients due now"),
        ("delete", "remove the message; nobody is told"),
        ("bounce", "fail the message's open recipients; the sender gets a report"),
    ):
        actions.add_parser(name, help=help_text).add_argument("id", metavar="ID")
    flush = actions.add_parser("flush", help="make deferred recipients due now")
    flush.add_argument("domain", nargs="?", metavar="DOMAIN", help="only recipients at DOMAIN")


def run(args: argparse.Namespace) -> int:
    """Run ``fastsmtp queue ACTION``; 1 for an id not in the queue."""
    directory = args.queue_dir
    if directory is None:
        from ..config import ConfigError, load_toml

        directory = load_toml(args.config).queue_dir
        if not directory:
            raise ConfigError(f"{args.config} sets no queue_dir")
    now = time.time()
    qid: str = getattr(args, "id", "")
    try:
        queue = Queue(directory)
    except sqlite3.Error as exc:  # not a queue, or another format: say so, no traceback
        print(f"fastsmtp: cannot open the queue in {directory}: {exc}", file=sys.stderr)
        return 1
    with queue:
        try:
            if args.action == "list":
                print(_listing(queue.list()))
            elif args.action == "flush":
                print(f"{queue.flush(args.domain, now)} deferred recipient(s) due now")
            elif args.action == "show":
                _show(queue, qid)
            elif args.action == "retry":
                queue.retry(qid, now)
                print(f"{qid}: due now")
            elif args.action == "delete":
                queue.delete(qid)
                print(f"{qid}: deleted")
            else:
                queue.bounce(qid, now)
                print(f"{qid}: bounced; the scheduler reports it to the sender")
        except KeyError:
            print(f"fastsmtp: no message {qid} in the queue", file=sys.stderr)
            return 1
    return 0


def _listing(messages: list[QueuedMessage]) -> str:
    """The queue as ``mailq`` shows it: one block per message, a total at the end."""
    if not messages:
        return "Mail queue is empty"
    lines = [f"{'-Queue ID-':<20} {'--Size--':>8} {'----Arrival Time----':<20}  -Sender/Recipient-"]
    for m in messages:
        arrival = time.strftime("%a %b %d %H:%M:%S", time.localtime(m.created))
        lines.append(f"{m.id:<20} {m.size:>8} {arrival:<20}  <{m.mail_from}>")
        for r in m.recipients:
            lines.append(f"{'':<52}{r.address}  {_state(r)}")
            if r.last_text or r.last_code is not None:
                lines.append(f"{'':<54}({_reply(r)})")
        lines.append("")
    total = sum(m.size for m in messages)
    lines.append(f"-- {(total + 1023) // 1024} Kbytes in {len(messages)} Request(s).")
    return "\n".join(lines)


def _state(r: QueuedRecipient) -> str:
    state = f"{r.status}, {r.attempts} attempt(s)"
    if r.status == "deferred" and r.next_attempt is not None:
        state += ", next " + time.strftime("%a %b %d %H:%M:%S", time.localtime(r.next_attempt))
    return state


def _reply(r: QueuedRecipient) -> str:
    parts = [str(r.last_code) if r.last_code is not None else "", r.last_enhanced or ""]
    text = " ".join([*filter(None, parts), " ".join(r.last_text.split())])
    return f"{text} [{r.remote_host}]" if r.remote_host else text


def _show(queue: Queue, queue_id: str) -> None:
    """Envelope and state as header-like lines, an empty line, then the content as stored."""
    message = queue.get(queue_id)
    if message is None:
        raise KeyError(queue_id)
    lines = [
        f"Queue-ID: {message.id}",
        f"Sender: <{message.mail_from}>",
        f"Arrival: {formatdate(message.created, localtime=True)}",
        f"Size: {message.size}",
    ]
    options = {
        "RET": message.dsn_ret,
        "ENVID": message.dsn_envid,
        "BODY": message.body_type,
        "SMTPUTF8": "yes" if message.smtputf8 else None,
    }
    lines += [f"{name}: {value}" for name, value in options.items() if value]
    for r in message.recipients:
        lines.append(f"Recipient: <{r.address}> {_state(r)}")
        if r.last_text or r.last_code is not None:
            lines.append(f"  last reply: {_reply(r)}")
        if r.dsn.notify:
            lines.append(f"  NOTIFY={','.join(sorted(r.dsn.notify))}")
        if r.dsn.orcpt:
            lines.append(f"  ORCPT={r.dsn.orcpt[0]};{r.dsn.orcpt[1]}")
    sys.stdout.write("\n".join(lines) + "\n\n")
    sys.stdout.flush()
    try:
        sys.stdout.buffer.write(queue.content_path(queue_id).read_bytes())
    except FileNotFoundError:
        print("(the message file is missing from the spool)")
