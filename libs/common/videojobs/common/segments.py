"""Segments: a long job split into whole ranges of sampled frames, each a unit of work.

A job whose sampled frames exceed ``VIDEOJOBS_SEGMENT_FRAMES`` is split by the worker
that claims it: one ``Segment`` row per range (table ``segments``) and one queue message
per segment (``segment:{job_id}:{index}``, beside the plain job-id messages on the same
queue). Any worker takes a segment with the same rules as a job: a claim is a
compare-and-set that raises the attempt (the fencing token of every later write), a
lease kept alive by heartbeats, a retake after the lease ran out counts as a crash.
A finished segment's per-frame output is an object ``segments/{job_id}/{index}.json``;
when the last one is DONE, one worker (the job's merge claim, guarded like every final
write) concatenates them in order and runs the tracker over all frames.

State machine of a segment (the entity owns it):

    split                   -> PENDING
    a worker takes it       PENDING -> RUNNING (or a retake of a RUNNING one whose lease ran out)
    its output is stored    RUNNING -> DONE (final)
    its range is undecodable RUNNING -> DONE with a ``SkippedSegment`` as output, when the
                            job's on_bad_frames is skip (else the job FAILS with the range)
    the worker stops        RUNNING -> PENDING (hand-back, not a crash)
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict

from videojobs.common.errors import IllegalTransition
from videojobs.common.job import FaultStreak, as_utc, utcnow
from videojobs.common.results import SkippedRange

# Queue messages of segments: "segment:<job_id>:<index>"; a plain job id is a job message.
SEGMENT_MESSAGE_PREFIX = "segment:"


class SegmentStatus(str, enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"


@dataclass(frozen=True)
class WorkItem:
    """What a queue message asks for: a whole job, or one segment of it."""

    job_id: str
    segment: int | None = None

    @property
    def message(self) -> str:
        return self.job_id if self.segment is None else segment_message(self.job_id, self.segment)


def segment_message(job_id: str, index: int) -> str:
    return f"{SEGMENT_MESSAGE_PREFIX}{job_id}:{index}"


def parse_message(message: str) -> WorkItem:
    """The work a queue message names (a job id, or a segment message)."""
    if message.startswith(SEGMENT_MESSAGE_PREFIX):
        job_id, _, index = message[len(SEGMENT_MESSAGE_PREFIX):].rpartition(":")
        if job_id and index.isdigit():
            return WorkItem(job_id, int(index))
    return WorkItem(message)


def segment_key(job_id: str, index: int) -> str:
    """Where a segment's output is stored."""
    return f"segments/{job_id}/{index}.json"


def split_samples(samples: int, segment_frames: int, align: int = 1) -> list[tuple[int, int]]:
    """Ranges ``[first, end)`` of sample positions covering ``0..samples``, each at most about
    `segment_frames` long, of near-equal size, and (but for the last) a multiple of `align`.

    Aligning to the analysis batch keeps every batch of a segment equal to a batch of a
    single pass. One range when `samples` does not exceed `segment_frames` (or it is 0).
    """
    if samples <= 0:
        return []
    align = max(1, int(align))
    if segment_frames <= 0 or samples <= segment_frames:
        return [(0, samples)]
    count = math.ceil(samples / segment_frames)
    size = math.ceil(math.ceil(samples / count) / align) * align
    ranges = []
    first = 0
    while first < samples:
        end = min(first + size, samples)
        ranges.append((first, end))
        first = end
    return ranges


@dataclass
class Segment(FaultStreak):
    job_id: str
    index: int
    first_sample: int  # position in the job's sampling plan (0-based), inclusive
    end_sample: int  # exclusive
    first_frame: int  # video frame index of the first sample
    last_frame: int  # video frame index of the last sample
    status: SegmentStatus = SegmentStatus.PENDING
    attempt: int = 0
    crashes: int = 0
    worker_id: str | None = None
    lease_expires_at: datetime | None = None
    frames_done: int = 0
    # Frames an earlier attempt had analysed that this segment analyses again.
    frames_recomputed: int = 0
    faults: int = 0  # temporary faults (storage, database) in the current streak: not attempts
    faulting_since: datetime | None = None  # when the current streak began
    updated_at: datetime = field(default_factory=utcnow)

    @property
    def frames_total(self) -> int:
        return self.end_sample - self.first_sample

    @property
    def output_key(self) -> str:
        return segment_key(self.job_id, self.index)

    @property
    def frame_range(self) -> str:
        return f"frames {self.first_frame}..{self.last_frame}"

    def lease_expired(self, now: datetime | None = None) -> bool:
        if self.lease_expires_at is None:
            return True
        return (now or utcnow()) >= as_utc(self.lease_expires_at)

    def can_be_taken(self, now: datetime | None = None) -> bool:
        if self.status is SegmentStatus.PENDING:
            return True
        return self.status is SegmentStatus.RUNNING and self.lease_expired(now)

    # -- transitions ---------------------------------------------------------------
    def start(self, worker_id: str, lease: timedelta, now: datetime | None = None) -> None:
        """PENDING -> RUNNING, or a retake of a RUNNING segment whose worker was lost (a crash).

        Frames the earlier attempt recorded as analysed are counted as recomputed."""
        now = now or utcnow()
        if not self.can_be_taken(now):
            raise IllegalTransition(self._name, self.status.value, SegmentStatus.RUNNING.value)
        if self.status is SegmentStatus.RUNNING:
            self.crashes += 1
        self.frames_recomputed += self.frames_done
        self.frames_done = 0
        self.status = SegmentStatus.RUNNING
        self.attempt += 1
        self.worker_id = worker_id
        self.lease_expires_at = now + lease
        self.updated_at = now

    def extend_lease(self, lease: timedelta, now: datetime | None = None) -> None:
        self._require(SegmentStatus.RUNNING, SegmentStatus.RUNNING)
        now = now or utcnow()
        self.lease_expires_at = now + lease
        self.updated_at = now

    def report_progress(self, frames_done: int, frames_total: int, now: datetime | None = None) -> None:
        self._require(SegmentStatus.RUNNING, SegmentStatus.RUNNING)
        if frames_done < 0 or frames_done > self.frames_total:
            raise ValueError(f"bad segment progress {frames_done}/{self.frames_total}")
        self.frames_done = frames_done
        self.updated_at = now or utcnow()

    def finish(self, now: datetime | None = None) -> None:
        """RUNNING -> DONE: its output object is stored."""
        self._require(SegmentStatus.RUNNING, SegmentStatus.DONE)
        self.status = SegmentStatus.DONE
        self.frames_done = self.frames_total
        self.lease_expires_at = None
        self.updated_at = now or utcnow()

    def release(self, now: datetime | None = None) -> None:
        """RUNNING -> PENDING: the worker stops on purpose (its analysed frames will be redone)."""
        self._require(SegmentStatus.RUNNING, SegmentStatus.PENDING)
        self.status = SegmentStatus.PENDING
        self.worker_id = None
        self.lease_expires_at = None
        self.frames_recomputed += self.frames_done
        self.frames_done = 0
        self.updated_at = now or utcnow()

    def release_after_fault(self, now: datetime | None = None) -> None:
        """RUNNING -> PENDING because a backing service failed: one more fault in the current streak."""
        now = now or utcnow()
        self.release(now)
        self._count_fault(now)

    @property
    def _name(self) -> str:
        return f"{self.job_id}#{self.index}"

    def _require(self, expected: SegmentStatus, wanted: SegmentStatus) -> None:
        if self.status is not expected:
            raise IllegalTransition(self._name, self.status.value, wanted.value)


class SkippedSegment(BaseModel):
    """The output a segment leaves in place of frames when its range cannot be decoded and the
    job's ``on_bad_frames`` is ``skip``: the merge lists it in ``sampling.skipped_ranges``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    first_sample: int
    skipped: SkippedRange

    @classmethod
    def of(cls, segment: Segment, reason: str) -> "SkippedSegment":
        return cls(first_sample=segment.first_sample, skipped=SkippedRange(
            first_frame=segment.first_frame, last_frame=segment.last_frame, frames=segment.frames_total,
            reason=reason))

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode("utf-8")


def build_segments(job_id: str, ranges: list[tuple[int, int]], frame_of) -> list[Segment]:
    """Segment entities for sample ranges; `frame_of(k)` is the video frame index of sample k."""
    now = utcnow()
    return [Segment(job_id=job_id, index=i, first_sample=a, end_sample=b, first_frame=frame_of(a),
                    last_frame=frame_of(b - 1), updated_at=now) for i, (a, b) in enumerate(ranges)]
