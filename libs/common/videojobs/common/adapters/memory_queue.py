"""QueueService in process memory (the embedded default).

It keeps nothing on disk: the composition root rebuilds it from the PENDING and
RUNNING rows of the job table at start, so a restart never strands a job.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Mapping, Optional

from videojobs.common.ports.queue import QueueService


class InMemoryQueue(QueueService):
    """A FIFO of job ids with in-flight leases, like a work-queue stream with one consumer."""

    def __init__(self, ack_wait_seconds: float = 30.0, clock=time.monotonic) -> None:
        self._ack_wait = ack_wait_seconds
        self._clock = clock
        self._cond = threading.Condition()
        self._ready: deque[str] = deque()
        self._known: set[str] = set()  # ready or in flight: duplicates are dropped
        self._in_flight: dict[str, float] = {}  # job_id -> lease deadline
        self._delayed: dict[str, float] = {}  # job_id -> time it becomes ready
        self._deliveries: dict[str, int] = {}
        self._trace_contexts: dict[str, dict[str, str]] = {}

    def enqueue(self, job_id: str, dedupe_id: str | None = None,
                trace_context: Mapping[str, str] | None = None) -> bool:
        """Ids still queued or in flight are duplicates whatever the dedupe id (one consumer, no window)."""
        with self._cond:
            if job_id in self._known:
                return False
            self._known.add(job_id)
            if trace_context:
                self._trace_contexts[job_id] = dict(trace_context)
            self._ready.append(job_id)
            self._cond.notify()
            return True

    def dequeue(self, timeout: float = 0.0) -> Optional[str]:
        deadline = self._clock() + max(0.0, timeout)
        with self._cond:
            while True:
                self._promote_due()
                if self._ready:
                    job_id = self._ready.popleft()
                    self._in_flight[job_id] = self._clock() + self._ack_wait
                    self._deliveries[job_id] = self._deliveries.get(job_id, 0) + 1
                    return job_id
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return None
                self._cond.wait(min(remaining, self._next_due_in()))

    def size(self) -> int:
        with self._cond:
            self._promote_due()
            return len(self._ready) + len(self._delayed)

    def ack(self, job_id: str) -> None:
        self._forget(job_id)

    def term(self, job_id: str) -> None:
        self._forget(job_id)

    def nak(self, job_id: str, delay: float = 0.0) -> None:
        with self._cond:
            if self._in_flight.pop(job_id, None) is None:
                return
            if delay > 0:
                self._delayed[job_id] = self._clock() + delay
            else:
                self._ready.append(job_id)
            self._cond.notify()

    def heartbeat(self, job_id: str) -> None:
        with self._cond:
            if job_id in self._in_flight:
                self._in_flight[job_id] = self._clock() + self._ack_wait

    def delivery_count(self, job_id: str) -> int:
        with self._cond:
            return self._deliveries.get(job_id, 0)

    def trace_context(self, job_id: str) -> dict[str, str]:
        with self._cond:
            return dict(self._trace_contexts.get(job_id, {}))

    # -- internals (called with the lock held) -------------------------------------
    def _forget(self, job_id: str) -> None:
        with self._cond:
            self._in_flight.pop(job_id, None)
            self._delayed.pop(job_id, None)
            self._deliveries.pop(job_id, None)
            self._trace_contexts.pop(job_id, None)
            self._known.discard(job_id)

    def _promote_due(self) -> None:
        now = self._clock()
        for job_id, due in list(self._delayed.items()):
            if due <= now:
                del self._delayed[job_id]
                self._ready.append(job_id)
        for job_id, deadline in list(self._in_flight.items()):
            if deadline <= now:  # lease ran out without ack: redeliver
                del self._in_flight[job_id]
                self._ready.append(job_id)

    def _next_due_in(self) -> float:
        times = list(self._delayed.values()) + list(self._in_flight.values())
        return max(0.01, min(times) - self._clock()) if times else 0.5
