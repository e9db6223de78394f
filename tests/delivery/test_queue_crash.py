"""kill -9 at random moments: no acknowledged message lost, no state going backwards.

A child process works on a real queue and prints a line after each call
returns (that is the acknowledgement a server would send). The test kills
it with SIGKILL at a random moment, reopens the queue (which recovers) and
checks everything acknowledged is there, intact, and nothing half-done is,
and that every report owed is queued once.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import os
import random
import selectors
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from peers import delivery_status

from cli.test_serve import serve
from fastsmtp.delivery.mx import MXResolver
from fastsmtp.delivery.queue import Queue
from fastsmtp.delivery.router import Router
from fastsmtp.delivery.scheduler import Scheduler
from fastsmtp.handlers.sink import Sink
from fastsmtp.relay import RelayPolicy
from fastsmtp.session import RecipientDSN
from fastsmtp.testing import parse_message

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

# Each message carries the hash of its body, so a torn file is recognisable.
WORKER = r"""
import hashlib, io, os, random, sys
from fastsmtp.delivery.queue import Queue

queue = Queue(sys.argv[1])
mode = sys.argv[2]
rng = random.Random(os.getpid())
if mode == "enqueue":
    for i in range(100000):
        body = os.urandom(rng.choice([10, 1000, 100000, 700000]))
        digest = hashlib.sha256(body).hexdigest()
        content = b"X-Digest: " + digest.encode() + b"\r\n\r\n" + body
        qid = queue.enqueue("a@x.org", ["b@y.org", "c@z.org"], io.BytesIO(content))
        print(qid, digest, flush=True)
elif mode == "report":  # an admin bounces each message; the scheduler reports it
    for message in queue.list():
        if message.mail_from and not message.recipients[0].failure_notified:
            queue.bounce(message.id, 1.0)
            message = queue.get(message.id)
            queue.report(message, message.recipients, "failure", reporting_mta="mx", now=1.0)
            print(message.id, flush=True)
    print("done", flush=True)
    sys.stdin.read()  # wait for the kill
elif mode == "settle":  # the scheduler delivers, records, and queues notices
    import asyncio
    from test_queue_crash import notice_scheduler
    print("started", flush=True)
    asyncio.run(notice_scheduler(queue).run_pending())
    print("done", flush=True)
    sys.stdin.read()
else:  # "record": deliver, defer, retry, flush, as a scheduler and an admin would
    while True:
        recorded = False
        for message in queue.list():
            for r in message.recipients:
                if not r.open:
                    continue
                status = rng.choice(["delivered", "deferred", "deferred", "deferred"])
                queue.record(message.id, r.address, status, code=250, enhanced="2.0.0",
                             text="ok", remote_host="mx", next_attempt=None, now=1.0)
                print(message.id, r.address, status, flush=True)
                recorded = True
            queue.retry(message.id, 2.0)
        queue.flush(None, 3.0)
        if not recorded:  # everything is delivered: say so, and wait for the kill
            print("done", flush=True)
            sys.stdin.read()
"""


def run_and_kill(
    queue_dir: Path, mode: str, rng: random.Random, longest: float = 0.25
) -> list[list[str]]:
    """Start a worker, kill -9 it within ``longest`` seconds; the complete lines it printed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(queue_dir), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    out = b""
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + 30
            while b"\n" not in out:  # running its loop: the first call returned
                assert sel.select(deadline - time.monotonic()), "the worker never started"
                chunk = os.read(proc.stdout.fileno(), 65536)
                assert chunk, f"the worker exited: {proc.wait()}"
                out += chunk
        # Not synchronisation: the random delay *is* the point of the kill.
        time.sleep(rng.uniform(0, longest))
    finally:
        proc.send_signal(signal.SIGKILL)
        out += proc.stdout.read()
        proc.wait(timeout=30)
        proc.stdout.close()
        assert proc.stdin is not None
        proc.stdin.close()
    complete = out[: out.rfind(b"\n") + 1].decode()
    return [line.split() for line in complete.splitlines()]


def check_intact(queue: Queue, directory: Path) -> None:
    """Every message visible is whole; no temporary or unindexed file is left."""
    ids = {m.id for m in queue.list() if m.mail_from}  # reports have no X-Digest
    assert os.listdir(directory / "tmp") == []
    assert set(os.listdir(directory / "spool")) == {m.id for m in queue.list()}
    for qid in ids:
        header, _, body = queue.content_path(qid).read_bytes().partition(b"\r\n\r\n")
        assert header == b"X-Digest: " + hashlib.sha256(body).hexdigest().encode()


def test_kill_during_enqueue_loses_no_acknowledged_message(tmp_path: Path) -> None:
    rng = random.Random(3464)
    acknowledged: dict[str, str] = {}
    for _ in range(15):
        acknowledged.update(dict(run_and_kill(tmp_path, "enqueue", rng)))  # type: ignore[arg-type]
        with Queue(tmp_path) as queue:
            check_intact(queue, tmp_path)
            queued = {m.id: m for m in queue.list()}
            for qid, digest in acknowledged.items():
                assert qid in queued, f"acknowledged {qid} lost"
                assert queued[qid].size == queue.content_path(qid).stat().st_size
                header = queue.content_path(qid).read_bytes().split(b"\r\n", 1)[0]
                assert header == f"X-Digest: {digest}".encode()
                assert [r.status for r in queued[qid].recipients] == ["pending", "pending"]
    assert len(acknowledged) >= 15


def test_kill_during_record_never_undoes_a_delivery(tmp_path: Path) -> None:
    with Queue(tmp_path) as queue:
        for i in range(30):
            body = f"message {i}\r\n".encode()
            digest = hashlib.sha256(body).hexdigest().encode()
            rcpts = [f"r{j}@y.org" for j in range(5)]
            queue.enqueue("a@x.org", rcpts, b"X-Digest: " + digest + b"\r\n\r\n" + body)
    rng = random.Random(3461)
    delivered: set[tuple[str, str]] = set()
    recorded = 0
    for _ in range(12):
        lines = [line for line in run_and_kill(tmp_path, "record", rng) if line != ["done"]]
        recorded += len(lines)
        delivered |= {(qid, rcpt) for qid, rcpt, status in lines if status == "delivered"}
        with Queue(tmp_path) as queue:
            check_intact(queue, tmp_path)
            state = {(m.id, r.address): r for m in queue.list() for r in m.recipients}
            # everything acknowledged as delivered (this run or before) still is,
            # and a delivered recipient is never due again
            for key in delivered:
                assert state[key].status == "delivered", key
            due = {(m.id, r.address) for m in queue.due(1e12) for r in m.recipients if r.open}
            assert not due & delivered
            delivered |= {key for key, r in state.items() if r.status == "delivered"}
    assert recorded > 12


def test_kill_during_report_neither_loses_nor_doubles_a_bounce(tmp_path: Path) -> None:
    digests = {}
    with Queue(tmp_path) as queue:
        for i in range(40):
            body = f"message {i}\r\n".encode()
            digest = hashlib.sha256(body).hexdigest()
            qid = queue.enqueue(
                "a@x.org", ["b@y.org"], f"X-Digest: {digest}\r\n\r\n".encode() + body
            )
            digests[qid] = digest.encode()
    rng = random.Random(3834)
    reported: set[str] = set()
    for _ in range(8):
        reported |= {line[0] for line in run_and_kill(tmp_path, "report", rng) if line != ["done"]}
        with Queue(tmp_path) as queue:
            check_intact(queue, tmp_path)
            messages = queue.list()
            reports = [queue.content_path(m.id).read_bytes() for m in messages if not m.mail_from]
            for m in messages:
                if not m.mail_from:
                    continue
                count = sum(digests[m.id] in report for report in reports)
                notified = m.recipients[0].failure_notified
                assert count == (1 if notified else 0), (m.id, count, notified)
                assert notified or m.id not in reported
        if len(reported) == len(digests):
            break
    assert reported


# NOTIFY of the recipients r0, r1, ... of each message, in turn: the first two
# are owed a success notice once delivered (RFC 3461 §4.1), the others never.
NOTIFY = [{"SUCCESS"}, {"SUCCESS", "FAILURE"}, set(), {"NEVER"}]
ROUNDS, MESSAGES = 10, 15


def notice_scheduler(queue: Queue) -> Scheduler:
    """here.test is local (a ``Sink``: every delivery succeeds); x.org, the sender's, is held.

    Held for ATRN, the notices stay in the queue, where the test counts them.
    """
    policy = RelayPolicy(["here.test"], [])
    router = Router(policy, MXResolver(), hostname="mx.here.test", hold_domains=["x.org"])
    return Scheduler(queue, router, Sink(), hostname="mx.here.test")


def queue_for_notices(directory: Path, messages: int) -> collections.Counter[str]:
    """Queue ``messages`` messages to m<i>r<j>@here.test; the Final-Recipients owed a notice."""
    owed: collections.Counter[str] = collections.Counter()
    dsns = [RecipientDSN(frozenset(notify)) for notify in NOTIFY]
    with Queue(directory) as queue:
        for i in range(messages):
            rcpts = [f"m{i}r{j}@here.test" for j in range(len(NOTIFY))]
            queue.enqueue("a@x.org", rcpts, b"Subject: hi\r\n\r\nbody\r\n", rcpt_dsn=dsns)
            owed.update(
                f"rfc822; {r}" for r, n in zip(rcpts, NOTIFY, strict=True) if "SUCCESS" in n
            )
    return owed


def finish_and_count_notices(directory: Path) -> collections.Counter[str]:
    """Run the scheduler here until nothing is due; how often each recipient is in a notice."""
    with Queue(directory) as queue:
        asyncio.run(asyncio.wait_for(notice_scheduler(queue).run_pending(), 60))
        messages = queue.list()
        assert all(m.mail_from == "" for m in messages)  # each original delivered and removed
        assert os.listdir(directory / "tmp") == []
        assert set(os.listdir(directory / "spool")) == {m.id for m in messages}
        return collections.Counter(
            rcpt["Final-Recipient"]
            for m in messages
            for rcpt in delivery_status(parse_message(queue.content_path(m.id).read_bytes()))[1:]
        )


def test_kill_around_record_and_report_queues_each_success_notice_once(tmp_path: Path) -> None:
    """The scheduler is killed as it records deliveries and queues their notices.

    A first run, not killed, times the work. Then each round queues the
    same messages and kills up to three workers in turn (each carrying on
    from what the last left) at random moments within that time, then runs
    the scheduler to the end in this process: each recipient owed a notice
    is in exactly one, whether the kill left it owed or not.
    """
    owed = queue_for_notices(tmp_path / "timed", MESSAGES)
    started = time.monotonic()
    assert finish_and_count_notices(tmp_path / "timed") == owed
    work = time.monotonic() - started
    rng = random.Random(3461)
    kills = kills_leaving_debts = 0
    for round_ in range(ROUNDS):
        directory = tmp_path / f"round{round_}"
        queue_for_notices(directory, MESSAGES)
        left = MESSAGES
        for _ in range(3):  # each kill within the time the work left should take
            run_and_kill(directory, "settle", rng, longest=work * left / MESSAGES)
            kills += 1
            with Queue(directory) as queue:
                originals = [m for m in queue.list() if m.mail_from]
            kills_leaving_debts += any(r.success_owed for m in originals for r in m.recipients)
            if not (left := len(originals)):
                break
        assert finish_and_count_notices(directory) == owed, round_
    assert kills_leaving_debts >= 1, (kills, kills_leaving_debts)  # the window was hit


def test_kill_9_of_the_server_under_load_keeps_every_250(tmp_path: Path) -> None:
    """`fastsmtp serve --queue-dir`, clients sending, SIGKILL at random moments.

    Every message answered ``250 ... queued as ID`` is in the queue afterwards,
    whole. The smarthost is a closed port, so mail stays queued (deferred)
    while the scheduler works on it alongside the clients.
    """
    flags = [
        "--queue-dir", str(tmp_path), "--local-domain", "here.test", "--sink",
        "--smarthost", f"127.0.0.1:{closed_port()}", "--smarthost-tls", "none",
        "--relay-network", "127.0.0.0/8", "--hostname", "mx.here.test",
    ]  # fmt: skip
    rng = random.Random(5321)
    acknowledged: dict[str, bytes] = {}
    for _ in range(6):
        with serve(*flags) as (proc, _, address):
            killer = threading.Timer(rng.uniform(0.2, 1.0), proc.send_signal, (signal.SIGKILL,))
            killer.start()
            try:
                acknowledged.update(send_until_killed(address, rng, limit=300))
            finally:
                killer.join()  # the kill happens whatever the client saw
                proc.wait(timeout=30)
        with Queue(tmp_path) as queue:
            assert os.listdir(tmp_path / "tmp") == []
            assert set(os.listdir(tmp_path / "spool")) == {m.id for m in queue.list()}
            for qid, body in acknowledged.items():
                message = queue.get(qid)
                assert message is not None, f"{qid} was acknowledged with 250 and is lost"
                assert message.recipients[0].address == "bob@remote.test"
                assert queue.content_path(qid).read_bytes().endswith(body)
    assert len(acknowledged) >= 6


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def send_until_killed(address: tuple[str, int], rng: random.Random, limit: int) -> dict[str, bytes]:
    """Send messages until the server dies; ``{queue id: body}`` of each 250 after DATA."""
    acknowledged: dict[str, bytes] = {}
    try:
        with smtplib.SMTP(*address, timeout=30) as client:
            client.ehlo("load.test")
            for _ in range(limit):
                text = os.urandom(rng.choice([100, 20000])).hex()
                lines = [text[i : i + 76] for i in range(0, len(text), 76)]
                body = ("Subject: load\r\n\r\n" + "\r\n".join(lines)).encode()
                assert client.mail("alice@here.test")[0] == 250
                assert client.rcpt("bob@remote.test")[0] == 250
                code, reply = client.data(body)
                assert code == 250, reply
                acknowledged[reply.decode().rsplit(" ", 1)[1]] = body + b"\r\n"
    except (smtplib.SMTPServerDisconnected, ConnectionError):
        pass  # killed: whatever was not answered 250 may be lost
    return acknowledged
