"""JobService use cases: submit a job, report its status, hand out its results."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable

from videojobs.common.errors import InvalidOptions, ResultsNotReady, StorageObjectNotFound
from videojobs.common.job import Job, JobStatus, parse_job_id
from videojobs.common.options import AnalysisOptions, validate_pipeline_id
from videojobs.common.outbox import OutboxRelay
from videojobs.common.ports.jobs import JobRepository
from videojobs.common.ports.storage import StorageService
from videojobs.common.results import page_of, results_from_bytes
from videojobs.common.upload import CheckedUpload

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobRequest:
    """What the client asked for: a pipeline and loosely typed options (validated here)."""

    pipeline_id: str = ""
    options: dict[str, Any] | None = None


@dataclass(frozen=True)
class ResultsPage:
    job: Job
    document: dict[str, Any]
    frames: list[dict[str, Any]]
    next_page_token: str


class JobsService:
    """The application service behind the gRPC JobService (and so behind REST too)."""

    def __init__(
        self,
        repo: JobRepository,
        storage: StorageService,
        relay: OutboxRelay,
        max_upload_bytes: int,
        results_cache_size: int = 16,
    ) -> None:
        self._repo = repo
        self._storage = storage
        self._relay = relay
        self._max_upload_bytes = max_upload_bytes
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._cache_size = results_cache_size
        self._cache_lock = threading.Lock()

    # -- submit ------------------------------------------------------------------------
    def submit_upload(self, request: JobRequest, chunks: Iterable[bytes]) -> Job:
        """Store the uploaded video (checked while it streams) and create a PENDING job."""
        job = self._new_job(request)
        upload = CheckedUpload(chunks, self._max_upload_bytes)
        self._storage.save_file(upload, job.input_key)
        try:
            self._repo.add(job)
        except BaseException:
            self._storage.delete_file(job.input_key)
            raise
        log.info("job %s submitted (%d bytes, pipeline %s)", job.job_id, upload.bytes_read, job.pipeline_id)
        self._relay.kick()
        return job

    def submit_from_storage(self, request: JobRequest, input_key: str) -> Job:
        """Create a job for a video already in storage (its key is kept as the input)."""
        key = (input_key or "").strip()
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise InvalidOptions(f"input_key {input_key!r} is not a valid storage key")
        if not self._storage.exists(key):
            raise StorageObjectNotFound(key)
        job = self._new_job(request, input_key=key)
        self._repo.add(job)
        self._relay.kick()
        return job

    def _new_job(self, request: JobRequest, input_key: str | None = None) -> Job:
        pipeline_id = validate_pipeline_id(request.pipeline_id)
        options = AnalysisOptions.parse(request.options).to_dict()
        return Job.submit(pipeline_id, options, input_key=input_key)

    # -- queries -------------------------------------------------------------------------
    def get_status(self, job_id: str) -> Job:
        return self._repo.get(parse_job_id(job_id))

    def get_results(self, job_id: str, page_size: int = 0, page_token: str = "") -> ResultsPage:
        job = self.get_status(job_id)
        if job.status is not JobStatus.COMPLETED or not job.output_key:
            raise ResultsNotReady(job.job_id, job.status.value, job.error_message)
        document = self._document(job)
        frames, next_token = page_of(document.get("frames", []), page_size, page_token)
        return ResultsPage(job=job, document=document, frames=frames, next_page_token=next_token)

    def _document(self, job: Job) -> dict[str, Any]:
        # Results of a COMPLETED job never change, so caching by id is safe.
        with self._cache_lock:
            if job.job_id in self._cache:
                self._cache.move_to_end(job.job_id)
                return self._cache[job.job_id]
        document = results_from_bytes(self._storage.read_bytes(job.output_key or ""))
        with self._cache_lock:
            self._cache[job.job_id] = document
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return document
