"""JobService use cases: submit, status, results, list, cancel and delete a caller's jobs; the capabilities.

Every use case acts for a :class:`Caller` (the tenant of the API key): reads go
through the repository's tenant-filtered queries, so another tenant's job is
JobNotFound on every route.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Iterable, Iterator

from videojobs.api.caching import ByteBudgetCache
from videojobs.api.metrics import observe_submitted
from videojobs.api.quotas import TenantQuotas
from videojobs.common.errors import (
    BadRequest,
    FieldViolation,
    IdempotencyConflict,
    IllegalTransition,
    InvalidOptions,
    ResultsNotReady,
    StorageObjectNotFound,
    TemporaryFault,
    TooManyJobs,
    UnknownClass,
    UnknownLanguage,
    VideoJobsError,
)
from videojobs.common.frames import FrameImageStore
from videojobs.common.job import Job, JobStatus, input_key_for, new_job_id, output_key_for, parse_job_id, utcnow
from videojobs.common.observability import logs, tracing
from videojobs.common.options import AnalysisOptions
from videojobs.common.outbox import OutboxRelay
from videojobs.common.pipelines import Pipeline, Stage, get_pipeline
from videojobs.common.ports.capabilities import CapabilityStore
from videojobs.common.ports.jobs import AdmissionLimits, JobRepository, ListCursor, RequestIdTaken, SubmitRecord
from videojobs.common.ports.storage import StorageService
from videojobs.common.segments import segment_key
from videojobs.common.ports.tenants import TenantStore
from videojobs.common.resources import Capabilities, Standing, WorkerCapabilities
from videojobs.common.results import IndexedResults, ResultsDocument, page_bounds
from videojobs.common.tenants import Caller
from videojobs.common.upload import CheckedUpload
from videojobs.api.callbacks import check_callback_url

log = logging.getLogger(__name__)

# Keys SubmitFromStorage accepts: relative, slash-separated, printable, under the caller's upload area.
MAX_KEY_LENGTH = 512
MAX_REQUEST_ID_LENGTH = 128
IDEMPOTENCY_WINDOW = timedelta(hours=24)
DEFAULT_LIST_PAGE_SIZE = 50
MAX_LIST_PAGE_SIZE = 1000
_SCAN_CHUNK = 1024 * 1024  # a long results document is indexed reading this much at a time


@dataclass(frozen=True)
class JobRequest:
    """What the client asked for, already parsed at the edge."""

    pipeline_id: str = ""
    options: AnalysisOptions = AnalysisOptions()
    request_id: str = ""
    callback_url: str = ""


@dataclass(frozen=True)
class Lifecycle:
    """The api's lifecycle settings: retention, admission bounds, callback policy."""

    retention: timedelta = timedelta(hours=168)
    input_retention: timedelta = timedelta(hours=24)
    limits: AdmissionLimits = field(default_factory=AdmissionLimits)
    webhook_allow_private: bool = False


@dataclass(frozen=True)
class JobView:
    """A job and where it stands (what status and list answer)."""

    job: Job
    standing: Standing


@dataclass(frozen=True)
class ResultsPage:
    job: Job
    page: ResultsDocument  # the document with this page's frames
    total_size: int
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
        tenants: TenantStore | None = None,
        lifecycle: Lifecycle | None = None,
        upload_prefix: str = "uploads/",
        results_cache_bytes: int = 256 * 1024 * 1024,
        capabilities_ttl_seconds: float = 5.0,
        quotas: TenantQuotas | None = None,
    ) -> None:
        """`quotas`: tenants' own active-job bounds, in place of `lifecycle.limits.max_active_per_tenant`."""
        self._tenants = tenants
        self._quotas = quotas
        self._lifecycle = lifecycle or Lifecycle()
        self._throughput: tuple[float, list[float]] = (float("-inf"), [])
        self._repo = repo
        self._storage = storage
        self._relay = relay
        self._capabilities = capabilities
        self._max_upload_bytes = max_upload_bytes
        self._upload_prefix = upload_prefix
        # Stored documents, indexed (IndexedResults: their JSON, not parsed objects), within a byte budget; one
        # may take half of it, so paging through a long job does not index its document again for each page.
        # A document longer than a quarter of the budget (64 MiB: about 110,000 frames) keeps only its index
        # (24 bytes a frame) and is read from storage a page at a time.
        self._cache: ByteBudgetCache[IndexedResults] = ByteBudgetCache(results_cache_bytes, lambda r: r.nbytes,
                                                                        max_entry_bytes=results_cache_bytes // 2)
        self._keep_whole_bytes = results_cache_bytes // 4
        self._caps_ttl = capabilities_ttl_seconds
        self._caps: tuple[float, WorkerCapabilities | None] = (float("-inf"), None)

    # -- submit ------------------------------------------------------------------------
    def submit_upload(self, caller: Caller, request: JobRequest, chunks: Iterable[bytes]) -> Job:
        """Store the uploaded video (checked and hashed while it streams) and create a PENDING job.

        Refused before anything is stored: bad options or callback URL, a tenant at
        its active-job quota, a full queue. With a request_id seen in the last 24 h,
        the upload is read and hashed but not stored, and the first job is returned
        (or IdempotencyConflict if the upload or options differ).
        """
        pipeline = self._validated(request)
        prior = self._prior_submit(caller, request)
        if prior is None:  # a retry of an accepted submit is answered even at the quota
            self._precheck_admission(caller)
        upload = CheckedUpload(chunks, self._max_upload_bytes)
        container = upload.container()  # refuses a non-video before anything is stored
        if prior is not None:
            upload.drain()
            return self._replay(caller, prior, self._fingerprint(request, upload.sha256()))
        job_id = new_job_id()
        job = Job.submit(pipeline.pipeline_id, request.options, input_key_for(job_id, container.extension), job_id,
                         tenant_id=caller.tenant_id, callback_url=request.callback_url)
        self._storage.save_file(upload, job.input_key)
        job.input_sha256 = upload.sha256()
        try:
            created = self._add(caller, job, request, self._fingerprint(request, job.input_sha256))
        except BaseException:
            self._storage.delete_file(job.input_key)
            raise
        if created is not job:
            self._storage.delete_file(job.input_key)  # a concurrent submit with the same key won
            return created
        observe_submitted(job.pipeline_id, upload.bytes_read)
        with logs.bind(job_id=job.job_id):
            log.info("job %s: PENDING (submitted by %s: %d bytes, %s, pipeline %s)",
                     job.job_id, caller.tenant_id, upload.bytes_read, container.format_id, job.pipeline_id,
                     extra={"status": job.status.value, "pipeline": job.pipeline_id, "upload_bytes": upload.bytes_read})
        self._relay.kick()
        return job

    def upload_area(self, caller: Caller) -> str:
        """Where the caller's own uploads live: the only keys SubmitFromStorage accepts."""
        return f"{self._upload_prefix}{caller.tenant_id}/"

    def submit_from_storage(self, caller: Caller, request: JobRequest, input_key: str) -> Job:
        """Create a job for a video already in storage (its key is kept as the input, and stays the client's)."""
        pipeline = self._validated(request)
        key = check_storage_key(input_key, self.upload_area(caller))
        fingerprint = self._fingerprint(request, f"key:{key}")
        prior = self._prior_submit(caller, request)
        if prior is not None:
            return self._replay(caller, prior, fingerprint)
        self._precheck_admission(caller)
        if not self._storage.exists(key):
            raise StorageObjectNotFound(key)
        job = Job.submit(pipeline.pipeline_id, request.options, key, tenant_id=caller.tenant_id,
                         callback_url=request.callback_url)
        created = self._add(caller, job, request, fingerprint)
        if created is job:
            observe_submitted(job.pipeline_id)
            with logs.bind(job_id=job.job_id):
                log.info("job %s: PENDING (submitted from storage by %s, pipeline %s)", job.job_id,
                         caller.tenant_id, job.pipeline_id,
                         extra={"status": job.status.value, "pipeline": job.pipeline_id})
            self._relay.kick()
        return created

    def _add(self, caller: Caller, job: Job, request: JobRequest, fingerprint: str) -> Job:
        """Insert the job (admission checked in the same transaction); the winner's job on a request_id race."""
        record = SubmitRecord(request.request_id, fingerprint) if request.request_id else None
        if job.callback_url and self._tenants is not None:
            self._tenants.ensure_tenant(caller.tenant_id)  # its webhook secret signs the notice
        try:
            self._repo.add(job, record, self._admission_limits(caller), utcnow() - IDEMPOTENCY_WINDOW,
                           trace_context=tracing.inject())
        except RequestIdTaken as taken:
            return self._replay(caller, taken.prior, fingerprint)
        return job

    def _precheck_admission(self, caller: Caller) -> None:
        """Refuse at once, before any byte is read, when the caller or the queue is at its bound."""
        limits = self._admission_limits(caller)
        if not (limits.max_active_per_tenant or limits.max_pending):
            return
        active, pending = self._repo.admission_counts(caller.tenant_id)
        if limits.max_active_per_tenant and active >= limits.max_active_per_tenant:
            raise TooManyJobs(f"you have {active} unfinished jobs (PENDING + RUNNING), the limit is "
                              f"{limits.max_active_per_tenant}; retry once some have finished",
                              self._retry_after(active - limits.max_active_per_tenant + 1))
        if limits.max_pending and pending >= limits.max_pending:
            raise TooManyJobs(f"the service's queue is full ({pending} jobs waiting); retry later",
                              self._retry_after(pending - limits.max_pending + 1))

    def _admission_limits(self, caller: Caller) -> AdmissionLimits:
        """The bound of the caller's tenant (its own, else the service's) and the queue's."""
        limits = self._lifecycle.limits
        if self._quotas is None:
            return limits
        return replace(limits, max_active_per_tenant=self._quotas.of(caller.tenant_id).max_active_jobs or 0)

    def _retry_after(self, jobs_to_finish: int) -> int:
        """Seconds until about `jobs_to_finish` jobs have finished at recent throughput (30 s without history)."""
        run = self._mean_run_seconds()
        if run is None:
            return 30
        return int(min(3600, max(1, run * jobs_to_finish / max(1, self._repo.running_count()))))

    def _prior_submit(self, caller: Caller, request: JobRequest):
        if not request.request_id:
            return None
        return self._repo.find_request(caller.tenant_id, request.request_id, utcnow() - IDEMPOTENCY_WINDOW)

    def _replay(self, caller: Caller, prior, fingerprint: str) -> Job:
        if prior.fingerprint != fingerprint:
            raise IdempotencyConflict(prior.job_id, "upload or options")
        log.info("job %s: submit replayed (same idempotency key)", prior.job_id)
        return self._repo.get_owned(caller.tenant_id, prior.job_id)

    @staticmethod
    def _fingerprint(request: JobRequest, input_identity: str) -> str:
        what = {"input": input_identity, "pipeline_id": get_pipeline(request.pipeline_id).pipeline_id,
                "options": request.options.to_dict(), "callback_url": request.callback_url}
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()

    def _validated(self, request: JobRequest) -> Pipeline:
        """The pipeline, with the options checked against what the workers published."""
        if len(request.request_id) > MAX_REQUEST_ID_LENGTH or any(ord(c) < 32 for c in request.request_id):
            raise InvalidOptions("request_id is longer than 128 characters or has control characters",
                                 [FieldViolation("request_id", "at most 128 printable characters")])
        if request.callback_url:
            check_callback_url(request.callback_url, self._lifecycle.webhook_allow_private)
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
    def get_job(self, caller: Caller, job_id: str) -> Job:
        return self._repo.get_owned(caller.tenant_id, parse_job_id(job_id))

    def get_status(self, caller: Caller, job_id: str) -> JobView:
        job = self.get_job(caller, job_id)
        return JobView(job, self.standing(job))

    def list_jobs(self, caller: Caller, status: JobStatus | None = None, page_size: int = 0,
                  page_token: str = "") -> tuple[list[JobView], str]:
        """The caller's jobs, newest first; the token is a keyset position, so inserts never shift pages."""
        if page_size < 0:
            raise BadRequest("page_size must be >= 0", [FieldViolation("page_size", "must be >= 0")])
        size = min(page_size or DEFAULT_LIST_PAGE_SIZE, MAX_LIST_PAGE_SIZE)
        after = _decode_list_token(page_token, status) if page_token else None
        jobs = self._repo.list_owned(caller.tenant_id, status, size + 1, after)
        more = len(jobs) > size
        jobs = jobs[:size]
        token = _encode_list_token(jobs[-1], status) if more else ""
        return [JobView(job, self.standing(job)) for job in jobs], token

    def standing(self, job: Job) -> Standing:
        """expires_at of a final job; queue position and ETA of an unfinished one."""
        if job.status.is_final:
            finished = job.finished_at or job.updated_at
            return Standing(expires_at=finished + self._lifecycle.retention)
        run = self._mean_run_seconds()
        if job.status is JobStatus.PENDING:
            ahead = self._repo.pending_ahead(job)
            eta = None
            if run is not None:
                parallel = max(1, self._repo.running_count())
                eta = round(run * (ahead // parallel + 1), 1)
            return Standing(queue_position=ahead, eta_seconds=eta)
        elapsed = (utcnow() - job.started_at).total_seconds() if job.started_at else 0.0
        if job.frames_done > 0 and job.frames_total:
            return Standing(eta_seconds=round(elapsed / job.frames_done * (job.frames_total - job.frames_done), 1))
        return Standing(eta_seconds=round(max(0.0, run - elapsed), 1) if run is not None else None)

    def _mean_run_seconds(self) -> float | None:
        fetched_at, runs = self._throughput
        if time.monotonic() - fetched_at >= self._caps_ttl:
            runs = self._repo.recent_run_seconds()
            self._throughput = (time.monotonic(), runs)
        return sum(runs) / len(runs) if runs else None

    # -- lifecycle ---------------------------------------------------------------------------
    def cancel_job(self, caller: Caller, job_id: str) -> Job:
        """PENDING/RUNNING -> CANCELLED; a final job is IllegalTransition (409 naming its status)."""
        job_id = parse_job_id(job_id)
        for _ in range(10):  # a job changes state only a few times: the loop ends
            job = self._repo.get_owned(caller.tenant_id, job_id)
            expected = (job.status, job.attempt)
            job.cancel()
            if self._repo.save(job, *expected):
                log.info("job %s: cancelled by %s (was %s)", job_id, caller.tenant_id, expected[0].value)
                self._remove_segment_outputs(job)
                return job
        raise TemporaryFault(f"job {job_id} kept changing while being cancelled")

    def _remove_segment_outputs(self, job: Job) -> None:
        """A cancelled split job's finished segments leave nothing behind (its running segments stop
        at their next batch and remove their own; retention removes any straggler with the job)."""
        try:
            for index in range(job.segments_total):
                self._storage.delete_file(segment_key(job.job_id, index))
        except TemporaryFault as exc:
            log.warning("job %s: segment outputs not removed yet: %s", job.job_id, exc)

    def delete_job(self, caller: Caller, job_id: str) -> None:
        """Cancel if needed, then remove the job's objects (input if uploaded, results) and the job."""
        job = self.get_job(caller, job_id)
        if not job.status.is_final:
            try:
                job = self.cancel_job(caller, job.job_id)
            except IllegalTransition:
                job = self.get_job(caller, job.job_id)  # it became final meanwhile
        remove_job_objects(self._storage, job)
        if not self._repo.delete(job.job_id, job.status):
            log.info("job %s: already removed", job.job_id)
        self._cache.pop(job.job_id)
        log.info("job %s: deleted by %s", job.job_id, caller.tenant_id)

    def get_results(self, caller: Caller, job_id: str, page_size: int = 0, page_token: str = "") -> ResultsPage:
        job, results = self.stored_results(caller, job_id)
        start, end, next_token = page_bounds(len(results), page_size, page_token)
        return ResultsPage(job=job, page=results.page(start, end), total_size=len(results), next_page_token=next_token)

    def stored_results(self, caller: Caller, job_id: str) -> tuple[Job, IndexedResults]:
        """A COMPLETED job of the caller and its results document, indexed (ResultsNotReady otherwise)."""
        job = self.get_job(caller, job_id)
        if job.status is not JobStatus.COMPLETED or not job.output_key:
            raise ResultsNotReady(job.job_id, job.status.value, job.error_message)
        return job, self._results(job)

    def capabilities(self) -> Capabilities:
        return Capabilities.build(self._max_upload_bytes, self._worker_capabilities())

    def _results(self, job: Job) -> IndexedResults:
        # Results of a COMPLETED job never change, so caching by id is safe. Requests that come together for
        # a document not in the cache (a viewer asks for a page, the contact sheet and frames at once) share
        # one read and one index.
        def load() -> IndexedResults:
            with _results_object(job.output_key or ""):
                return index_stored_results(self._storage, job.output_key or "", self._keep_whole_bytes)

        return self._cache.get_or_load(job.job_id, load)


@contextlib.contextmanager
def _results_object(key: str) -> Iterator[None]:
    """A COMPLETED job's results object gone from storage is the service's fault, not a key the client gave:
    an internal error that does not name the key (StorageObjectNotFound would be INPUT_NOT_FOUND with it)."""
    try:
        yield
    except StorageObjectNotFound:
        log.error("results object %s is missing from storage", key)
        raise VideoJobsError("the results of this job are missing from storage") from None


def index_stored_results(storage: StorageService, key: str, keep_whole_bytes: int,
                         check: bool = True) -> IndexedResults:
    """The results document stored at `key`, indexed: kept in memory if it is at most `keep_whole_bytes`
    long, else read once a chunk at a time and later a page at a time (its index alone is kept)."""

    def read(start: int, end: int) -> bytes:  # a page, later: the object may have gone since
        with _results_object(key):
            return storage.read_range(key, start, end)

    with storage.open_stored(key) as stored:  # read as it comes: no copy on disk
        if stored.size <= keep_whole_bytes:
            return IndexedResults.from_bytes(stored.read_all(), check=check)
        return IndexedResults.from_chunks(stored.chunks(_SCAN_CHUNK), read, check=check)


def remove_job_objects(storage: StorageService, job: Job) -> None:
    """Delete what the service stored for a job: the frame images the worker kept, its results
    and its uploaded input (each may be absent). Frame images are named by the analysed frames,
    which the results list; a job without results kept none (its worker discarded them)."""
    output_key = job.output_key or output_key_for(job.job_id)
    try:
        results = index_stored_results(storage, output_key, keep_whole_bytes=0, check=False)
    except StorageObjectNotFound:
        results = None
    except ValueError:  # not a results document (written by hand?): its frames cannot be named
        log.warning("job %s: results object %s does not parse; its frame images (if any) stay", job.job_id,
                    output_key)
        results = None
    if results is not None:
        FrameImageStore(storage).delete(job.job_id, results.frame_indices)
    storage.delete_file(output_key)
    for index in range(job.segments_total):  # outputs of a split job's segments (none once merged)
        storage.delete_file(segment_key(job.job_id, index))
    if job.owns_input:
        storage.delete_file(job.input_key)


def _encode_list_token(last: Job, status: JobStatus | None) -> str:
    raw = json.dumps({"c": last.created_at.isoformat(), "i": last.job_id, "s": status.value if status else ""})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_list_token(token: str, status: JobStatus | None) -> ListCursor:
    try:
        if len(token) > 256:
            raise ValueError("too long")
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        cursor = ListCursor(datetime.fromisoformat(data["c"]), parse_job_id(data["i"]))
        same_filter = data["s"] == (status.value if status else "")
    except (ValueError, KeyError, TypeError, binascii.Error, VideoJobsError):
        raise BadRequest("page_token is not a token this listing returned",
                         [FieldViolation("page_token", "not a token this listing returned")]) from None
    if not same_filter:
        raise BadRequest("page_token belongs to a listing with another status filter",
                         [FieldViolation("page_token", "belongs to a listing with another status filter")])
    return cursor


def check_storage_key(raw: str, prefix: str) -> str:
    """A key a client may name: under its upload area, relative, slash-separated, printable, bounded.

    Other jobs' `inputs/` and `results/`, and other tenants' uploads, are never acceptable inputs.
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
        problem = f"must name an object under {prefix!r} (your upload area)"
    if problem:
        raise InvalidOptions(f"input_key {problem}", [FieldViolation("input_key", problem)])
    return key
