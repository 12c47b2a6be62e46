"""JetStreamQueue behaviour beyond the shared contract: sharing, MaxDeliver, outages."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import load_script
from videojobs.common.adapters.nats_queue import JetStreamQueue
from videojobs.common.errors import TemporaryFault

NATS_URL = os.environ.get("VIDEOJOBS_TEST_NATS_URL", "nats://127.0.0.1:4222")
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def names() -> dict[str, str]:
    suffix = uuid.uuid4().hex[:10]
    return {
        "stream": f"VJTEST_{suffix}",
        "subject": f"videojobs.test.{suffix}",
        "durable": f"workers_{suffix}",
    }


@pytest.fixture
def shared_names():
    n = names()
    yield n
    cleanup = JetStreamQueue(NATS_URL, **n)
    cleanup.delete_stream()
    cleanup.close()


def test_workers_share_one_durable_consumer(shared_names):
    a = JetStreamQueue(NATS_URL, **shared_names, ack_wait=5)
    b = JetStreamQueue(NATS_URL, **shared_names, ack_wait=5)
    try:
        jobs = [str(uuid.uuid4()) for _ in range(6)]
        for job in jobs:
            a.enqueue(job)
        got = {"a": [], "b": []}
        for _ in range(3):
            for name, q in (("a", a), ("b", b)):
                job = q.dequeue(timeout=2)
                got[name].append(job)
                q.ack(job)
        assert sorted(got["a"] + got["b"]) == sorted(jobs)
        assert got["a"] and got["b"]
        assert a.dequeue(timeout=0.2) is None and b.dequeue(timeout=0.2) is None
    finally:
        a.close()
        b.close()


def test_threads_sharing_one_instance_get_each_job_once(shared_names):
    q = JetStreamQueue(NATS_URL, **shared_names, ack_wait=5)
    jobs = [str(uuid.uuid4()) for _ in range(12)]
    for job in jobs:
        q.enqueue(job)
    seen: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        while (job := q.dequeue(timeout=0.5)) is not None:
            with lock:
                seen.append(job)
            q.ack(job)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    q.close()
    assert sorted(seen) == sorted(jobs)


def test_max_deliver_exhaustion_is_reclaimed_and_nothing_stays_dead(shared_names):
    """A message JetStream stops delivering is deleted by reclaim_dead, which hands back its job id."""
    q = JetStreamQueue(NATS_URL, **shared_names, ack_wait=5, max_deliver=2)
    try:
        assert q.reclaim_dead() == []  # subscribes to the advisories
        job = str(uuid.uuid4())
        assert q.enqueue(job) is True
        assert q.dequeue(timeout=2) == job
        q.nak(job)
        assert q.dequeue(timeout=2) == job
        assert q.delivery_count(job) == 2
        q.nak(job)
        assert q.dequeue(timeout=0.5) is None  # MaxDeliver reached: not delivered again
        deadline = time.time() + 5
        reclaimed: list[str] = []
        while not reclaimed and time.time() < deadline:
            reclaimed = q.reclaim_dead()
            time.sleep(0.1)
        assert reclaimed == [job]
        assert stream_messages(q) == 0  # the dead message is gone from the stream
        # A republish under a fresh id is delivered; the same id again is a duplicate.
        assert q.enqueue(job, f"{job}.again") is True and q.enqueue(job, f"{job}.again") is False
        assert q.dequeue(timeout=2) == job
        q.ack(job)
    finally:
        q.close()


def test_purge_removes_messages_of_final_jobs_only(shared_names):
    q = JetStreamQueue(NATS_URL, **shared_names, ack_wait=5)
    try:
        done, alive = str(uuid.uuid4()), str(uuid.uuid4())
        q.enqueue(done)
        q.enqueue(alive)
        assert q.purge(lambda job_id: job_id == done) == 1
        assert stream_messages(q) == 1
        assert q.dequeue(timeout=2) == alive
        q.ack(alive)
    finally:
        q.close()


def test_a_purge_waiting_on_the_database_holds_no_other_call_of_the_queue(shared_names):
    """`is_final` reads the database; one that does not answer (frozen) must not stall publishing meanwhile."""
    q = JetStreamQueue(NATS_URL, **shared_names, ack_wait=5, op_timeout=2.0)
    asked, answer = threading.Event(), threading.Event()

    def is_final(job_id: str) -> bool:  # a database that answers only when told to
        asked.set()
        answer.wait(30)
        return False

    try:
        q.enqueue(str(uuid.uuid4()))
        purge = threading.Thread(target=q.purge, args=(is_final,), daemon=True)
        purge.start()
        assert asked.wait(10)
        later = str(uuid.uuid4())
        assert q.enqueue(later) and q.size() == 2  # answered while the purge waits on the database
        answer.set()
        purge.join(30)
        assert stream_messages(q) == 2
    finally:
        answer.set()
        q.close()


def test_a_round_trip_answered_after_its_timeout_does_not_leave_the_connection_dead(shared_names):
    """A link that holds the server's answers past the call timeout, then delivers them (a stalled network,
    a paused server): the calls meanwhile fail as temporary, and the same connection works once it is back."""
    servers = load_script("servers")
    host, port = NATS_URL.removeprefix("nats://").split(":")
    with servers.TcpProxy(host, int(port)).start() as link:
        q = JetStreamQueue(f"nats://{link.endpoint}", **shared_names, ack_wait=5, op_timeout=1.0)
        try:
            q.enqueue(str(uuid.uuid4()))
            q.ping()
            job = q.dequeue(timeout=2)
            link.freeze()
            for call in (q.ping, lambda: q.ack(job)):
                with pytest.raises(TemporaryFault):
                    call()
            link.restore()  # the held answers arrive now, after their calls gave up
            later = str(uuid.uuid4())
            for attempt in range(10):  # the first calls may still meet the held answers
                try:
                    q.ping()
                    assert q.enqueue(later)
                    break
                except TemporaryFault:
                    time.sleep(0.5)
            else:
                pytest.fail("the connection stayed dead after the link came back")
            assert q.size() >= 1 and q.dequeue(timeout=2) is not None
        finally:
            q.close()


def stream_messages(q: JetStreamQueue) -> int:
    async def count() -> int:
        await q._connected()
        return (await q._js.stream_info(q.stream)).state.messages

    return q._call(count(), 5)


def test_redeclaring_updates_the_consumer(shared_names):
    slow = JetStreamQueue(NATS_URL, **shared_names, ack_wait=30)
    slow.ping()  # declares stream + consumer with AckWait 30 s
    slow.close()
    fast = JetStreamQueue(NATS_URL, **shared_names, ack_wait=1)
    try:
        job = str(uuid.uuid4())
        fast.enqueue(job)
        assert fast.dequeue(timeout=2) == job
        assert fast.dequeue(timeout=3) == job  # AckWait is now 1 s
        fast.ack(job)
    finally:
        fast.close()


def test_close_is_idempotent_and_final(shared_names):
    q = JetStreamQueue(NATS_URL, **shared_names)
    q.enqueue(str(uuid.uuid4()))
    q.close()
    q.close()
    with pytest.raises(RuntimeError):
        q.enqueue(str(uuid.uuid4()))


# -- outages, on a NATS server of our own ------------------------------------------------
free_port = load_script("servers").free_port


class OwnNatsServer:
    """A throwaway JetStream server on a free port, with its store in a temp folder."""

    def __init__(self, store: Path) -> None:
        self.port = free_port()
        self.store = store
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nats-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def own_nats(tmp_path):
    if not os.access(NATS_SERVER, os.X_OK):
        pytest.skip("no nats-server binary")
    server = OwnNatsServer(tmp_path / "jetstream")
    yield server
    server.stop()


def retry_until(call, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except TemporaryFault:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_queue_created_while_nats_is_down_works_once_it_is_up(own_nats):
    q = JetStreamQueue(own_nats.url, **names(), ack_wait=5)
    try:
        for call in (lambda: q.enqueue("job-1"), lambda: q.dequeue(timeout=1), q.size, q.ping):
            started = time.monotonic()
            with pytest.raises(TemporaryFault, match="cannot connect to NATS"):
                call()
            assert time.monotonic() - started < 2.5

        own_nats.start()
        q.enqueue("job-1")
        assert q.dequeue(timeout=2) == "job-1"
        q.ack("job-1")
    finally:
        q.close()


def test_outage_while_connected_fails_fast_and_recovers(own_nats):
    own_nats.start()
    q = JetStreamQueue(own_nats.url, **names(), ack_wait=5)
    try:
        q.enqueue("before-outage")
        own_nats.stop()
        time.sleep(0.3)  # let the client notice the closed socket

        started = time.monotonic()
        with pytest.raises(TemporaryFault):
            q.enqueue("during-outage")
        assert time.monotonic() - started < 2.5

        own_nats.start()  # same port, same store: the stream and consumer survive
        retry_until(lambda: q.enqueue("during-outage"), timeout=10)
        got = [retry_until(lambda: q.dequeue(timeout=2), timeout=10) for _ in range(2)]
        assert got == ["before-outage", "during-outage"]
        for job in got:
            q.ack(job)
        assert q.size() == 0
    finally:
        q.close()


def test_server_that_comes_back_empty_gets_the_stream_declared_again(own_nats, tmp_path):
    own_nats.start()
    q = JetStreamQueue(own_nats.url, **names(), ack_wait=5)
    try:
        q.ping()
        own_nats.stop()
        own_nats.store = tmp_path / "fresh-store"  # restarted without its JetStream state
        own_nats.start()
        retry_until(lambda: q.enqueue("after-reset"), timeout=10)
        assert q.dequeue(timeout=2) == "after-reset"
        q.ack("after-reset")
    finally:
        q.close()
