"""QueueService: hands job ids to workers (in-process, NATS JetStream)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Mapping, Optional


class QueueService(ABC):
    """Abstract queue interface for job dispatch (the seed's port, extended for work queues).

    Delivery is at-least-once. A job id returned by ``dequeue`` stays in flight
    until the worker calls ``ack`` (final status committed), ``nak`` (give it
    back, optionally after a delay), or ``term`` (never deliver it again). An
    in-flight id that is neither acked nor kept alive with ``heartbeat`` is
    redelivered once its lease (AckWait) runs out.
    """

    @abstractmethod
    def enqueue(self, job_id: str, dedupe_id: str | None = None,
                trace_context: Mapping[str, str] | None = None) -> bool:
        """Push a job_id onto the queue; False if it was dropped as a duplicate.

        Publishing the same `dedupe_id` (default: the job id) twice delivers it once
        (JetStream: within its duplicate window). A republish that must not be
        dropped passes a new `dedupe_id`. `trace_context` (W3C headers) travels with
        the message and is handed back by ``trace_context`` once it is delivered.
        """
        raise NotImplementedError

    @abstractmethod
    def dequeue(self, timeout: float = 0.0) -> Optional[str]:
        """Pop the next job_id, waiting up to `timeout` seconds, or None if empty."""
        raise NotImplementedError

    @abstractmethod
    def size(self) -> int:
        """Return the approximate number of items waiting (not in flight)."""
        raise NotImplementedError

    # -- work-queue additions ------------------------------------------------------
    @abstractmethod
    def ack(self, job_id: str) -> None:
        """The job reached a final status that is committed: forget the delivery."""
        raise NotImplementedError

    @abstractmethod
    def nak(self, job_id: str, delay: float = 0.0) -> None:
        """Give the job back for redelivery after `delay` seconds (temporary fault, shutdown)."""
        raise NotImplementedError

    @abstractmethod
    def term(self, job_id: str) -> None:
        """Never deliver this job again (poison input, already final)."""
        raise NotImplementedError

    @abstractmethod
    def heartbeat(self, job_id: str) -> None:
        """Extend the lease of an in-flight job (JetStream: in-progress ack)."""
        raise NotImplementedError

    def reclaim_dead(self) -> list[str]:
        """Job ids of messages the queue gave up delivering (JetStream MaxDeliver), now removed from it.

        The caller decides what becomes of each job (republish it, or fail it).
        """
        return []

    def purge(self, is_final: Callable[[str], bool], limit: int = 1000) -> int:
        """Remove messages whose job is final (left behind by a lost ack); how many were removed."""
        return 0

    def delivery_count(self, job_id: str) -> int:
        """How many times the in-flight job has been delivered (1 on first delivery)."""
        return 1

    def trace_context(self, job_id: str) -> dict[str, str]:
        """The trace context (W3C headers) the in-flight job's message was published with; {} if none."""
        return {}

    def ping(self) -> None:
        """Raise if the queue cannot be reached (used by readiness checks)."""

    def close(self) -> None:
        """Release connections."""
