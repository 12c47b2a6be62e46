"""Hand-written fakes for unit tests: they keep state in plain attributes tests can inspect."""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Callable

from videojobs.common.errors import JobInterrupted, JobNotFound, TemporaryFault
from videojobs.common.job import Job, JobStatus
from videojobs.common.options import AnalysisOptions
from videojobs.common.pipelines import get_pipeline
from videojobs.common.ports.analysis import (
    AnalyzerCapabilities,
    ResultsFile,
    SegmentRange,
    SplitPlan,
    VideoAnalyzer,
)
from videojobs.common.segments import Segment, SegmentStatus, split_samples
from videojobs.common.ports.capabilities import CapabilityStore
from videojobs.common.ports.jobs import Backlog, JobRepository, PublishIntent
from videojobs.common.resources import WorkerCapabilities
from videojobs.common.results import (
    Box,
    Detection,
    FrameAnalysis,
    SkippedRange,
    FrameResult,
    Provenance,
    ResultsDocument,
    Sampling,
    VideoMetadata,
)


class FakeJobRepository(JobRepository):
    def __init__(self) -> None:
        self.rows: dict[str, Job] = {}
        self.outbox: dict[str, bool] = {}  # job_id -> published
        self.trace_contexts: dict[str, dict[str, str]] = {}  # job_id -> trace context of the submit
        self.saves: list[tuple[str, str, int]] = []
        self.segment_rows: dict[tuple[str, int], Segment] = {}
        self.down = False
        self._lock = threading.Lock()

    def _check(self) -> None:
        if self.down:
            raise TemporaryFault("database unavailable (fake)")

    def add(self, job: Job, request=None, limits=None, request_window_start=None, trace_context=None) -> None:
        self._check()
        with self._lock:
            self.rows[job.job_id] = copy.deepcopy(job)
            self.outbox[job.job_id] = False
            self.trace_contexts[job.job_id] = dict(trace_context or {})

    def get_owned(self, tenant_id: str, job_id: str) -> Job:
        job = self.get(job_id)
        if job.tenant_id != tenant_id:
            raise JobNotFound(job_id)
        return job

    def list_owned(self, tenant_id, status, limit, after=None):
        jobs = sorted((j for j in self.rows.values() if j.tenant_id == tenant_id and (status is None or j.status is status)),
                      key=lambda j: (j.created_at, j.job_id), reverse=True)
        if after is not None:
            jobs = [j for j in jobs if (j.created_at, j.job_id) < (after.created_at, after.job_id)]
        return copy.deepcopy(jobs[:limit])

    def find_request(self, tenant_id, request_id, since):
        return None

    def delete(self, job_id: str, expected_status: JobStatus) -> bool:
        with self._lock:
            row = self.rows.get(job_id)
            if row is None or row.status is not expected_status:
                return False
            del self.rows[job_id]
            self.outbox.pop(job_id, None)
            return True

    def admission_counts(self, tenant_id):
        active = [j for j in self.rows.values() if j.tenant_id == tenant_id and not j.status.is_final]
        return len(active), sum(j.status is JobStatus.PENDING for j in self.rows.values())

    def pending_ahead(self, job):
        return sum(j.status is JobStatus.PENDING and (j.created_at, j.job_id) < (job.created_at, job.job_id)
                   for j in self.rows.values())

    def recent_run_seconds(self, limit=20):
        return []

    def running_count(self):
        return sum(j.status is JobStatus.RUNNING for j in self.rows.values())

    def expired_inputs(self, finished_before, limit):
        return []

    def mark_input_deleted(self, job_id, at):
        self.rows[job_id].input_deleted_at = at

    def expired_jobs(self, finished_before, limit):
        return []

    def purge_before(self, before):
        return 0

    def get(self, job_id: str) -> Job:
        self._check()
        with self._lock:
            if job_id not in self.rows:
                raise JobNotFound(job_id)
            job = copy.deepcopy(self.rows[job_id])
            if job.segments_total:
                parts = [s for (j, _), s in self.segment_rows.items() if j == job_id]
                job.segments_done = sum(s.status is SegmentStatus.DONE for s in parts)
                job.frames_recomputed = sum(s.frames_recomputed for s in parts)
                if not job.status.is_final:
                    job.frames_done = sum(s.frames_done for s in parts)
            return job

    # -- segments --------------------------------------------------------------------------
    def split(self, job, segments, expected_attempt):
        self._check()
        with self._lock:
            row = self.rows.get(job.job_id)
            if row is None or row.status is not JobStatus.RUNNING or row.attempt != expected_attempt:
                return False
            self.rows[job.job_id] = copy.deepcopy(job)
            for seg in segments:
                self.segment_rows[(seg.job_id, seg.index)] = copy.deepcopy(seg)
            return True

    def get_segment(self, job_id, index):
        self._check()
        with self._lock:
            if (job_id, index) not in self.segment_rows:
                raise JobNotFound(job_id)
            return copy.deepcopy(self.segment_rows[(job_id, index)])

    def segments(self, job_id):
        self._check()
        with self._lock:
            return [copy.deepcopy(s) for (j, _), s in sorted(self.segment_rows.items()) if j == job_id]

    def save_segment(self, segment, expected_status, expected_attempt):
        self._check()
        with self._lock:
            row = self.segment_rows.get((segment.job_id, segment.index))
            if row is None or row.status is not expected_status or row.attempt != expected_attempt:
                return False
            self.segment_rows[(segment.job_id, segment.index)] = copy.deepcopy(segment)
            return True

    def stranded_segments(self, idle_since, limit=100):
        self._check()
        out = []
        for (job_id, index), seg in sorted(self.segment_rows.items(), key=lambda kv: kv[1].updated_at):
            job = self.rows.get(job_id)
            if job is None or job.status is not JobStatus.RUNNING:
                continue
            if seg.status is SegmentStatus.PENDING and seg.updated_at < idle_since:
                out.append((job_id, index))
            elif seg.status is SegmentStatus.RUNNING and seg.lease_expires_at and seg.lease_expires_at < idle_since:
                out.append((job_id, index))
        return out[:limit]

    def save(self, job: Job, expected_status: JobStatus, expected_attempt: int) -> bool:
        self._check()
        with self._lock:
            row = self.rows.get(job.job_id)
            if row is None or row.status is not expected_status or row.attempt != expected_attempt:
                return False
            job.events.clear()
            self.rows[job.job_id] = copy.deepcopy(job)
            self.saves.append((job.job_id, job.status.value, job.attempt))
            return True

    def unfinished_job_ids(self) -> list[str]:
        return [j.job_id for j in self.rows.values() if not j.status.is_final]

    def stranded_job_ids(self, idle_since, limit: int = 100) -> list[str]:
        self._check()
        out = []
        for job in sorted(self.rows.values(), key=lambda j: j.created_at):
            if job.status is JobStatus.PENDING and job.updated_at < idle_since:
                out.append(job.job_id)
            elif job.status is JobStatus.RUNNING and job.lease_expires_at and job.lease_expires_at < idle_since:
                out.append(job.job_id)
        return out[:limit]

    def unpublished_job_ids(self, limit: int = 100) -> list[str]:
        self._check()
        return [k for k, v in self.outbox.items() if not v][:limit]

    def unpublished(self, limit: int = 100) -> list[PublishIntent]:
        return [PublishIntent(job_id, self.trace_contexts.get(job_id, {})) for job_id in self.unpublished_job_ids(limit)]

    def backlog(self, now) -> Backlog:
        self._check()
        jobs = list(self.rows.values())
        pending = [j for j in jobs if j.status is JobStatus.PENDING]
        running = [j for j in jobs if j.status is JobStatus.RUNNING]
        unpublished = [self.rows[k] for k, v in self.outbox.items() if not v]
        return Backlog(
            pending=len(pending), running=len(running),
            lease_expired=sum(1 for j in running if j.lease_expires_at and j.lease_expires_at < now),
            oldest_pending_at=min((j.created_at for j in pending), default=None),
            outbox_unpublished=len(unpublished),
            oldest_unpublished_at=min((j.created_at for j in unpublished), default=None),
        )

    def mark_published(self, job_ids: list[str]) -> None:
        self._check()
        for job_id in job_ids:
            self.outbox[job_id] = True

    def ping(self) -> None:
        self._check()


class FakeAnalyzer(VideoAnalyzer):
    """Pretends to analyse `frames` frames; behaviour is steered by attributes."""

    def __init__(self, frames: int = 4, size: tuple[int, int] = (64, 48)) -> None:
        self.frames = frames
        self.size = size  # (width, height) of the frames it pretends to decode
        self.calls: list[tuple[str, Path, AnalysisOptions | None]] = []
        self.raise_error: Exception | None = None
        self.on_frame: Callable[[int], None] | None = None  # hook run before each frame
        self.detections_for: Callable[[int], list[Detection]] | None = None  # detections of the k-th frame
        self.segment_calls: list[tuple[int, int]] = []
        self.fail_sample: int | None = None  # run_segment raises raise_error at this sample

    def frame_image(self, k: int):
        """The k-th frame it pretends to decode: a BGR gradient, different per frame."""
        import numpy as np

        width, height = self.size
        x = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None]
        image = np.broadcast_to(x, (height, width, 3)).copy()
        image[..., 0] = (k * 40) % 256
        return image

    def run_on_file(self, pipeline_id, file_path, options=None, on_progress=None, should_stop=None,
                    on_frame=None) -> ResultsDocument:
        get_pipeline(pipeline_id)
        self.calls.append((pipeline_id, Path(file_path), options))
        assert Path(file_path).is_file()
        total = self.frames  # a test may change it for the next job while this one runs
        frames = []
        for i in range(total):
            if self.on_frame:
                self.on_frame(i)
            if should_stop and should_stop():
                raise JobInterrupted("stop requested")
            if self.raise_error is not None and i == total // 2:
                raise self.raise_error
            detections = self.detections_for(i) if self.detections_for else []
            frames.append(FrameResult(frame_index=i * 30, timestamp_ms=i * 1000.0,
                                      result=FrameAnalysis(detections=detections)))
            if on_frame is not None:
                on_frame(i * 30, self.frame_image(i))
            if on_progress:
                on_progress(i + 1, total)
        return ResultsDocument(
            pipeline_id=pipeline_id,
            video=VideoMetadata(width=self.size[0], height=self.size[1], fps=30.0, frame_count=total * 30,
                                duration_ms=total * 1000.0, codec="fake"),
            sampling=Sampling(sample_fps=1.0, frame_step=30.0, max_frames=0, frames_analysed=total,
                              requested_sample_fps=1.0, every_frame=False),
            provenance=Provenance(options=options or AnalysisOptions()),
            results=frames,
        )

    # -- segments: frame k is frame_index 30*k; "tracking" numbers each class in order of first sight --
    def plan_split(self, pipeline_id, file_path, options, segment_frames) -> SplitPlan:
        total = self.frames if not options.max_frames else min(self.frames, options.max_frames)
        ranges = split_samples(total, segment_frames, self.align)
        return SplitPlan(total, [SegmentRange(a, b, a * 30, (b - 1) * 30) for a, b in ranges])

    align = 1

    def run_segment(self, pipeline_id, file_path, options, first_sample, end_sample, on_progress=None,
                    should_stop=None, on_frame=None) -> bytes:
        import json

        get_pipeline(pipeline_id)
        self.segment_calls.append((first_sample, end_sample))
        frames = []
        for k in range(first_sample, end_sample):
            if self.on_frame:
                self.on_frame(k)
            if should_stop and should_stop():
                raise JobInterrupted("stop requested")
            if self.raise_error is not None and self.fail_sample == k:
                raise self.raise_error
            dets = self.detections_for(k) if self.detections_for else []
            frames.append({"frame_index": k * 30, "timestamp_ms": k * 1000.0,
                           "classes": [d.class_name for d in dets]})
            if on_frame is not None:
                on_frame(k * 30, self.frame_image(k))
            if on_progress:
                on_progress(k - first_sample + 1, end_sample - first_sample)
        return json.dumps({"first_sample": first_sample, "frames": frames}).encode()

    def merge_segments(self, pipeline_id, options, parts) -> ResultsFile:
        import json

        parsed = [json.loads(p) for p in parts]
        assert [o["first_sample"] for o in parsed] == sorted(o["first_sample"] for o in parsed), "segment order"
        outputs = [o for o in parsed if "skipped" not in o]
        skipped = [SkippedRange(**o["skipped"]) for o in parsed if "skipped" in o]
        seen, ids, frames = set(), {}, []
        for out in outputs:
            for f in out["frames"]:
                if f["frame_index"] in seen:
                    continue
                seen.add(f["frame_index"])
                dets = []
                for name in f["classes"]:
                    ids.setdefault(name, len(ids) + 1)
                    dets.append(Detection(class_id=0, class_name=name, confidence=0.9, box=Box(x1=0, y1=0, x2=1, y2=1),
                                          box_norm=Box(x1=0, y1=0, x2=1, y2=1), track_id=ids[name]))
                frames.append(FrameResult(frame_index=f["frame_index"], timestamp_ms=f["timestamp_ms"],
                                          result=FrameAnalysis(detections=dets)))
        total = len(frames)
        return ResultsFile.of(ResultsDocument(
            pipeline_id=pipeline_id,
            video=VideoMetadata(width=self.size[0], height=self.size[1], fps=30.0, frame_count=self.frames * 30,
                                duration_ms=self.frames * 1000.0, codec="fake"),
            sampling=Sampling(sample_fps=1.0, frame_step=30.0, max_frames=0, frames_analysed=total,
                              requested_sample_fps=1.0, every_frame=False, segments=len(parsed),
                              skipped_ranges=skipped or None),
            provenance=Provenance(options=options or AnalysisOptions()),
            results=frames,
        ))

    def describe(self) -> AnalyzerCapabilities:
        return AnalyzerCapabilities(model_file="fake.pt", model_sha256="0" * 64,
                                    class_names=["bottle", "person"], ocr_languages=["eng"])


class FakeCapabilityStore(CapabilityStore):
    def __init__(self) -> None:
        self.entries: dict[str, WorkerCapabilities] = {}

    def publish(self, capabilities: WorkerCapabilities) -> None:
        self.entries[capabilities.worker_id] = capabilities

    def latest(self) -> WorkerCapabilities | None:
        return max(self.entries.values(), key=lambda c: c.published_at, default=None)


def fake_detections(k: int, width: int = 320, height: int = 180):
    """Detections the imaging worker reports for its k-th frame: a bottle (track 1) on every frame,
    a person (track 2, lower confidence) on even ones."""
    def det(class_id, name, conf, x1, y1, x2, y2, track):
        return Detection(class_id=class_id, class_name=name, confidence=conf, box=Box(x1=x1, y1=y1, x2=x2, y2=y2),
                         box_norm=Box(x1=round(x1 / width, 4), y1=round(y1 / height, 4), x2=round(x2 / width, 4),
                                      y2=round(y2 / height, 4)), track_id=track)

    out = [det(39, "bottle", 0.9, 40 + 4 * k, 30, 120 + 4 * k, 150, 1)]
    if k % 2 == 0:
        out.append(det(0, "person", 0.4, 180, 20, 300, 170, 2))
    return out

