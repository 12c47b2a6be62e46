"""JobService use cases: submit a job, report its status, hand out its results and the capabilities."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable

from videojobs.api.metrics import observe_submitted
from videojobs.common.errors import (
    FieldViolation,
    InvalidOptions,
    ResultsNotReady,
    StorageObjectNotFound,
    UnknownClass,
    UnknownLanguage,
    VideoJobsError,
)
from videojobs.common.job import Job, JobStatus, input_key_for, new_job_id, parse_job_id
from videojobs.common.observability import logs, tracing
from videojobs.common.options import AnalysisOptions
from videojobs.common.outbox import OutboxRelay
from videojobs.common.pipelines import Pipeline, Stage, get_pipeline
from videojobs.common.ports.capabilities import CapabilityStore
from videojobs.common.ports.jobs import JobRepository
from videojobs.common.ports.storage import StorageService
from videojobs.common.resources import Capabilities, WorkerCapabilities
from videojobs.common.results import ResultsDocument, page_bounds
from videojobs.common.upload import CheckedUpload

log = logging.getLogger(__name__)

# Keys SubmitFromStorage accepts: relative, slash-separated, printable.
MAX_KEY_LENGTH = 512


@dataclass(frozen=True)
class JobRequest:
    """What the client asked for, already parsed at the edge."""

    pipeline_id: str = ""
    options: AnalysisOptions = AnalysisOptions()


@dataclass(frozen=True)
class ResultsPage:
    job: Job
    document: ResultsDocument
    start: int
    end: int
    next_page_token: str


class JobsService:
    """The application service behind the gRPC JobService (and so behind REST too)."""

    def __init__(
        self,
        repo: JobRepository,
        storage: StorageService,
        relay: OutboxRelay,
        capabilities: CapabilityStore,
        max_upload_bytes: int,
        upload_prefix: str = "uploads/",
        results_cache_size: int = 16,
        capabilities_ttl_seconds: float = 5.0,
    ) -> None:
        self._repo = repo
        self._storage = storage
        self._relay = relay
        self._capabilities = capabilities
        self._max_upload_bytes = max_upload_bytes
        self._upload_prefix = upload_prefix
        self._cache: OrderedDict[str, ResultsDocument] = OrderedDict()
        self._cache_size = results_cache_size
        self._cache_lock = threading.Lock()
        self._caps_ttl = capabilities_ttl_seconds
        self._caps: tuple[float, WorkerCapabilities | None] = (float("-inf"), None)

    # -- submit ------------------------------------------------------------------------
    def submit_upload(self, request: JobRequest, chunks: Iterable[bytes]) -> Job:
        """Store the uploaded video (checked while it streams) and create a PENDING job."""
        pipeline = self._validated(request)
        upload = CheckedUpload(chunks, self._max_upload_bytes)
        container = upload.container()  # refuses a non-video before anything is stored
        job_id = new_job_id()
        job = Job.submit(pipeline.pipeline_id, request.options, input_key_for(job_id, container.extension), job_id)
        self._storage.save_file(upload, job.input_key)
        try:
            self._repo.add(job, trace_context=tracing.inject())
        except BaseException:
            self._storage.delete_file(job.input_key)
            raise
        observe_submitted(job.pipeline_id, upload.bytes_read)
        with logs.bind(job_id=job.job_id):
            log.info("job %s: PENDING (submitted: %d bytes, %s, pipeline %s)",
                     job.job_id, upload.bytes_read, container.format_id, job.pipeline_id,
                     extra={"status": job.status.value, "pipeline": job.pipeline_id, "upload_bytes": upload.bytes_read})
        self._relay.kick()
        return job

    def submit_from_storage(self, request: JobRequest, input_key: str) -> Job:
        """Create a job for a video already in storage (its key is kept as the input)."""
        pipeline = self._validated(request)
        key = check_storage_key(input_key, self._upload_prefix)
        if not self._storage.exists(key):
            raise StorageObjectNotFound(key)
        job = Job.submit(pipeline.pipeline_id, request.options, key)
        self._repo.add(job, trace_context=tracing.inject())
        observe_submitted(job.pipeline_id)
        with logs.bind(job_id=job.job_id):
            log.info("job %s: PENDING (submitted from storage, pipeline %s)", job.job_id, job.pipeline_id,
                     extra={"status": job.status.value, "pipeline": job.pipeline_id})
        self._relay.kick()
        return job

    def _validated(self, request: JobRequest) -> Pipeline:
        """The pipeline, with the options checked against what the workers published."""
        pipeline = get_pipeline(request.pipeline_id)
        worker = self._worker_capabilities()
        if worker is None:
            return pipeline  # no worker has published yet: the worker checks and fails the job
        options = request.options
        if pipeline.runs(Stage.DETECT) and options.classes:
            unknown = [c for c in options.classes if c not in worker.class_names]
            if unknown:
                raise UnknownClass(unknown, worker.class_names)
        if pipeline.runs(Stage.OCR):
            unknown = [lang for lang in options.ocr_lang.split("+") if lang not in worker.ocr_languages]
            if unknown:
                raise UnknownLanguage(unknown, worker.ocr_languages)
        return pipeline

    def _worker_capabilities(self) -> WorkerCapabilities | None:
        fetched_at, cached = self._caps
        if time.monotonic() - fetched_at < self._caps_ttl:
            return cached
        latest = self._capabilities.latest()
        self._caps = (time.monotonic(), latest)
        return latest

    # -- queries -------------------------------------------------------------------------
    def get_status(self, job_id: str) -> Job:
        return self._repo.get(parse_job_id(job_id))

    def get_results(self, job_id: str, page_size: int = 0, page_token: str = "") -> ResultsPage:
        job = self.get_status(job_id)
        if job.status is not JobStatus.COMPLETED or not job.output_key:
            raise ResultsNotReady(job.job_id, job.status.value, job.error_message)
        document = self._document(job)
        start, end, next_token = page_bounds(len(document.results), page_size, page_token)
        return ResultsPage(job=job, document=document, start=start, end=end, next_page_token=next_token)

    def capabilities(self) -> Capabilities:
        return Capabilities.build(self._max_upload_bytes, self._worker_capabilities())

    def _document(self, job: Job) -> ResultsDocument:
        # Results of a COMPLETED job never change, so caching by id is safe.
        with self._cache_lock:
            if job.job_id in self._cache:
                self._cache.move_to_end(job.job_id)
                return self._cache[job.job_id]
        try:
            document = ResultsDocument.from_bytes(self._storage.read_bytes(job.output_key or ""))
        except StorageObjectNotFound:
            log.error("job %s: COMPLETED but its results object %s is missing", job.job_id, job.output_key)
            raise VideoJobsError("the results of this job are missing from storage") from None
        with self._cache_lock:
            self._cache[job.job_id] = document
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return document


def check_storage_key(raw: str, prefix: str) -> str:
    """A key a client may name: under the upload prefix, relative, slash-separated, printable, bounded.

    Other jobs' `inputs/` and `results/` are never acceptable inputs.
    """
    key = raw or ""
    problem = ""
    if not key.strip():
        problem = "is empty"
    elif len(key) > MAX_KEY_LENGTH:
        problem = f"is longer than {MAX_KEY_LENGTH} characters"
    elif any(ord(c) < 32 or ord(c) == 127 for c in key) or "\\" in key:
        problem = "contains control characters or backslashes"
    elif key.startswith("/") or any(seg in ("", ".", "..") for seg in key.split("/")):
        problem = "must be a relative path without empty, '.' or '..' segments"
    elif not key.startswith(prefix) or len(key) == len(prefix):
        problem = f"must name an object under {prefix!r} (the upload area)"
    if problem:
        raise InvalidOptions(f"input_key {problem}", [FieldViolation("input_key", problem)])
    return key
