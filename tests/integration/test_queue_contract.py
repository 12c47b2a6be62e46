"""One contract for every QueueService adapter: in-process and NATS JetStream (real server)."""

from __future__ import annotations

import os
import time
import uuid
from typing import Iterator

import pytest

from videojobs.common.adapters.memory_queue import InMemoryQueue
from videojobs.common.adapters.nats_queue import JetStreamQueue
from videojobs.common.ports.queue import QueueService

NATS_URL = os.environ.get("VIDEOJOBS_TEST_NATS_URL", "nats://127.0.0.1:4222")
ACK_WAIT = 1.0
# Generous bound for "redelivered after AckWait": the server's redelivery timer and
# a loaded CI machine add some latency.
REDELIVERY_WAIT = ACK_WAIT + 2.0


def unique_jetstream(**kw) -> JetStreamQueue:
    """A JetStreamQueue on its own stream, subject and durable (tests run side by side)."""
    suffix = uuid.uuid4().hex[:10]
    return JetStreamQueue(
        NATS_URL,
        stream=f"VJTEST_{suffix}",
        subject=f"videojobs.test.{suffix}",
        durable=f"workers_{suffix}",
        **kw,
    )


@pytest.fixture(params=["memory", "jetstream"])
def queue(request) -> Iterator[QueueService]:
    if request.param == "memory":
        yield InMemoryQueue(ack_wait_seconds=ACK_WAIT)
        return
    q = unique_jetstream(ack_wait=ACK_WAIT, max_deliver=10)
    try:
        yield q
    finally:
        q.delete_stream()
        q.close()


def ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def test_fifo_and_ack(queue):
    jobs = ids(3)
    for job in jobs:
        queue.enqueue(job)
    got = [queue.dequeue(timeout=2) for _ in jobs]
    assert got == jobs
    for job in got:
        assert queue.delivery_count(job) == 1
        queue.ack(job)
    assert queue.dequeue(timeout=0.2) is None
    assert queue.size() == 0


def test_empty_queue_returns_none_after_the_timeout(queue):
    started = time.monotonic()
    assert queue.dequeue(timeout=0.5) is None
    assert 0.4 <= time.monotonic() - started < 2.0


def test_duplicate_enqueue_is_delivered_once(queue):
    job = ids(1)[0]
    queue.enqueue(job)
    queue.enqueue(job)
    assert queue.size() == 1
    assert queue.dequeue(timeout=2) == job
    queue.enqueue(job)  # while in flight: still the same delivery
    assert queue.dequeue(timeout=0.3) is None
    queue.ack(job)


def test_acked_job_is_never_redelivered(queue):
    job = ids(1)[0]
    queue.enqueue(job)
    assert queue.dequeue(timeout=2) == job
    queue.ack(job)
    assert queue.dequeue(timeout=ACK_WAIT + 0.5) is None


def test_nak_redelivers_and_counts_deliveries(queue):
    job = ids(1)[0]
    queue.enqueue(job)
    assert queue.dequeue(timeout=2) == job
    assert queue.delivery_count(job) == 1
    queue.nak(job)
    assert queue.dequeue(timeout=2) == job
    assert queue.delivery_count(job) == 2
    queue.ack(job)


def test_nak_with_delay_redelivers_only_after_the_delay(queue):
    job = ids(1)[0]
    queue.enqueue(job)
    assert queue.dequeue(timeout=2) == job
    naked = time.monotonic()
    queue.nak(job, delay=0.8)
    assert queue.dequeue(timeout=0.4) is None
    assert queue.dequeue(timeout=3) == job
    assert time.monotonic() - naked >= 0.7
    assert queue.delivery_count(job) == 2
    queue.ack(job)


def test_unacked_job_is_redelivered_after_ack_wait(queue):
    job = ids(1)[0]
    queue.enqueue(job)
    assert queue.dequeue(timeout=2) == job
    leased = time.monotonic()
    # Neither acked nor heartbeated (a worker that died): back after AckWait.
    assert queue.dequeue(timeout=REDELIVERY_WAIT) == job
    assert time.monotonic() - leased >= ACK_WAIT - 0.1
    assert queue.delivery_count(job) == 2
    queue.ack(job)


def test_heartbeat_keeps_the_lease(queue):
    job = ids(1)[0]
    queue.enqueue(job)
    assert queue.dequeue(timeout=2) == job
    kept_until = time.monotonic() + 2.5 * ACK_WAIT
    while time.monotonic() < kept_until:
        queue.heartbeat(job)
        assert queue.dequeue(timeout=ACK_WAIT / 3) is None
    assert queue.delivery_count(job) == 1
    # Heartbeats stop: the lease runs out and the job comes back.
    assert queue.dequeue(timeout=REDELIVERY_WAIT) == job
    assert queue.delivery_count(job) == 2
    queue.ack(job)


def test_terminated_job_is_never_redelivered(queue):
    job = ids(1)[0]
    queue.enqueue(job)
    assert queue.dequeue(timeout=2) == job
    queue.term(job)
    assert queue.dequeue(timeout=ACK_WAIT + 0.5) is None
    assert queue.size() == 0


def test_size_reflects_the_waiting_backlog(queue):
    assert queue.size() == 0
    jobs = ids(3)
    for job in jobs:
        queue.enqueue(job)
    assert queue.size() == 3
    first = queue.dequeue(timeout=2)
    assert queue.size() == 2  # in flight is not waiting
    queue.ack(first)
    assert queue.size() == 2
    for _ in range(2):
        queue.ack(queue.dequeue(timeout=2))
    assert queue.size() == 0


def test_settling_an_unknown_job_is_a_no_op(queue):
    job = ids(1)[0]
    queue.ack(job)
    queue.nak(job, delay=1)
    queue.term(job)
    queue.heartbeat(job)
    assert queue.delivery_count(job) == 0
    queue.ping()


def test_purge_of_a_queue_that_never_held_a_message_or_holds_none_now(queue):
    # A new JetStream stream reports first_seq = last_seq = 0; one emptied by acks, first_seq = last_seq + 1.
    assert queue.purge(lambda message: True) == 0
    job = ids(1)[0]
    queue.enqueue(job)
    assert queue.dequeue(timeout=2) == job
    queue.ack(job)
    assert queue.purge(lambda message: True) == 0
