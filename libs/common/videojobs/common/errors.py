"""Domain errors and the problem catalogue every entrance shares.

Each error class names one :class:`Problem`: a stable slug, a title, the HTTP
status the REST gateway answers with (RFC 9457 ``application/problem+json``) and
the gRPC status code the api answers with (plus a ``google.rpc.ErrorInfo`` whose
``reason`` is the slug in UPPER_SNAKE form, so the gateway can tell problems
apart by type, never by message text).

``public_detail`` is what a client may see; ``str(exc)`` may carry internal
detail (hosts, object keys) for the logs only.
"""

from __future__ import annotations

import contextlib
import errno
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator, Sequence


@dataclass(frozen=True)
class Problem:
    """One kind of error a client can get, identical on REST and gRPC."""

    slug: str
    title: str
    http_status: int
    grpc_code: str  # a grpc.StatusCode name
    description: str

    @property
    def type_uri(self) -> str:
        """RFC 9457 ``type``: a relative URI the gateway serves documentation at."""
        return f"/problems/{self.slug}"

    @property
    def reason(self) -> str:
        """The gRPC ``ErrorInfo.reason`` (AIP-193: UPPER_SNAKE_CASE)."""
        return self.slug.upper().replace("-", "_")


def _p(slug: str, title: str, http_status: int, grpc_code: str, description: str) -> Problem:
    return Problem(slug, title, http_status, grpc_code, description)


BAD_REQUEST = _p("bad-request", "Malformed request", 400, "INVALID_ARGUMENT",
                 "The request could not be read: a malformed body, header, form or parameter.")
INVALID_JOB_ID = _p("invalid-job-id", "Malformed job id", 400, "INVALID_ARGUMENT",
                    "Job ids are UUIDs such as 0b9f8a52-3f1e-4d5c-9a7b-1c2d3e4f5a6b.")
INVALID_UPLOAD = _p("invalid-upload", "Invalid upload", 400, "INVALID_ARGUMENT",
                    "The upload is empty, has no 'file' part, or carries more than one file.")
UNAUTHENTICATED = _p("unauthenticated", "Missing or invalid API key", 401, "UNAUTHENTICATED",
                     "Send a valid API key (REST: 'Authorization: Bearer KEY'; gRPC: 'authorization' metadata).")
JOB_NOT_FOUND = _p("job-not-found", "Job not found", 404, "NOT_FOUND",
                   "No job with this id exists for the caller.")
FRAME_NOT_FOUND = _p("frame-not-found", "Frame not found", 404, "NOT_FOUND",
                     "The job has no analysed frame with this index, or kept no image of it; "
                     "GET the job's results for the analysed frame indices.")
INPUT_NOT_FOUND = _p("input-not-found", "Input object not found", 404, "NOT_FOUND",
                     "No object exists at the given storage key.")
ROUTE_NOT_FOUND = _p("not-found", "Not found", 404, "NOT_FOUND",
                     "No route matches this path; GET /openapi.json lists the routes.")
METHOD_NOT_ALLOWED = _p("method-not-allowed", "Method not allowed", 405, "UNIMPLEMENTED",
                        "The route exists but does not accept this HTTP method.")
RESULTS_NOT_READY = _p("results-not-ready", "Results not available", 409, "FAILED_PRECONDITION",
                       "Only a COMPLETED job has results; `job_status` says where this one stands.")
JOB_STATE_CONFLICT = _p("job-state-conflict", "Job state does not allow this", 409, "FAILED_PRECONDITION",
                        "The job is not in a state that allows this request; `job_status` says which it is in.")
IDEMPOTENCY_CONFLICT = _p("idempotency-conflict", "Idempotency key reused", 409, "ALREADY_EXISTS",
                          "This idempotency key (REST Idempotency-Key, gRPC request_id) was used in the last 24 h "
                          "for a different upload or options; `job_id` names the job it created.")
UPLOAD_TOO_LARGE = _p("upload-too-large", "Upload too large", 413, "RESOURCE_EXHAUSTED",
                      "The upload exceeds the service's size limit (GET /video/capabilities).")
UPLOAD_TIMEOUT = _p("upload-timeout", "Upload too slow", 408, "DEADLINE_EXCEEDED",
                    "The upload stopped sending, or took longer than the service allows; nothing was kept.")
REQUEST_TIMEOUT = _p("request-timeout", "Request too slow", 408, "DEADLINE_EXCEEDED",
                     "The request line and headers did not all arrive within the time the service waits for them "
                     "(VIDEOJOBS_HTTP_HEADER_TIMEOUT_SECONDS); nothing was done and the connection is closed.")
TOO_MANY_UPLOADS = _p("too-many-uploads", "Too many uploads in progress", 429, "RESOURCE_EXHAUSTED",
                      "The service is receiving as many uploads, or bytes of uploads, as it accepts at once; "
                      "retry after `Retry-After`.")
UNSUPPORTED_MEDIA_TYPE = _p("unsupported-media-type", "Unsupported media type", 415, "INVALID_ARGUMENT",
                            "The file is not a video container the service reads (checked by content).")
INVALID_OPTIONS = _p("invalid-options", "Invalid analysis options", 422, "INVALID_ARGUMENT",
                     "An analysis option or the pipeline id is not acceptable; `invalid_params` names each.")
UNKNOWN_CLASS = _p("unknown-class", "Unknown detector class", 422, "INVALID_ARGUMENT",
                   "A requested class name is not one the detector knows; `valid_choices` lists them.")
UNKNOWN_LANGUAGE = _p("unknown-language", "Unknown OCR language", 422, "INVALID_ARGUMENT",
                      "A requested OCR language is not installed; `valid_choices` lists them.")
INVALID_REQUEST = _p("invalid-request", "Invalid request parameters", 422, "INVALID_ARGUMENT",
                     "A query or path parameter failed validation; `invalid_params` names each.")
INVALID_CALLBACK_URL = _p("invalid-callback-url", "Callback URL refused", 422, "INVALID_ARGUMENT",
                          "callback_url must be an http(s) URL whose host resolves to public addresses only.")
TOO_MANY_JOBS = _p("too-many-jobs", "Too many jobs", 429, "RESOURCE_EXHAUSTED",
                   "The caller's unfinished jobs (PENDING + RUNNING) or the service's queue are at their limit; "
                   "retry after `retry_after_seconds` (REST: the Retry-After header).")
TOO_MANY_REQUESTS = _p("too-many-requests", "Too many requests", 429, "RESOURCE_EXHAUSTED",
                       "The caller's tenant made more calls than its request rate allows; retry after "
                       "`retry_after_seconds` (REST: the Retry-After header).")
SERVICE_UNAVAILABLE = _p("service-unavailable", "Service temporarily unavailable", 503, "UNAVAILABLE",
                         "A backing service is unreachable; retry with backoff.")
TIMEOUT = _p("timeout", "Upstream timeout", 504, "DEADLINE_EXCEEDED",
             "The job service did not answer in time; retry with backoff.")
INTERNAL = _p("internal-error", "Internal error", 500, "INTERNAL",
              "Something unexpected failed; the server's logs have the detail.")
UPSTREAM_ERROR = _p("upstream-error", "Bad gateway", 502, "UNKNOWN",
                    "The job service answered with an error the gateway could not map.")

PROBLEMS: dict[str, Problem] = {
    p.slug: p
    for p in (
        BAD_REQUEST, INVALID_JOB_ID, INVALID_UPLOAD, UNAUTHENTICATED, JOB_NOT_FOUND, FRAME_NOT_FOUND, INPUT_NOT_FOUND,
        ROUTE_NOT_FOUND, METHOD_NOT_ALLOWED, RESULTS_NOT_READY, JOB_STATE_CONFLICT, IDEMPOTENCY_CONFLICT,
        UPLOAD_TOO_LARGE, UPLOAD_TIMEOUT, REQUEST_TIMEOUT, TOO_MANY_UPLOADS, UNSUPPORTED_MEDIA_TYPE, INVALID_OPTIONS,
        UNKNOWN_CLASS, UNKNOWN_LANGUAGE, INVALID_REQUEST, INVALID_CALLBACK_URL, TOO_MANY_JOBS, TOO_MANY_REQUESTS,
        SERVICE_UNAVAILABLE, TIMEOUT, INTERNAL, UPSTREAM_ERROR,
    )
}
PROBLEMS_BY_REASON: dict[str, Problem] = {p.reason: p for p in PROBLEMS.values()}


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request (gRPC ``BadRequest.FieldViolation``, RFC 9457 ``invalid_params``)."""

    field: str
    description: str


class VideoJobsError(Exception):
    """Base class of every error the domain raises on purpose."""

    problem: ClassVar[Problem] = INTERNAL

    def __init__(self, message: str = "", violations: Sequence[FieldViolation] = ()) -> None:
        super().__init__(message)
        self._violations = tuple(violations)

    @property
    def public_detail(self) -> str:
        """What a client may read (no hosts, paths or object keys)."""
        return str(self)

    @property
    def violations(self) -> Sequence[FieldViolation]:
        """The request fields at fault (gRPC BadRequest field violations, RFC 9457 invalid_params)."""
        return self._violations

    def extensions(self) -> dict[str, Any]:
        """Extra problem members (RFC 9457) / ErrorInfo metadata, JSON-able."""
        if not self._violations:
            return {}
        return {"invalid_params": [{"name": v.field, "reason": v.description} for v in self._violations]}


class BadRequest(VideoJobsError):
    problem = BAD_REQUEST


class Unauthenticated(VideoJobsError):
    """No API key, or one that is unknown or revoked. The detail never repeats what was sent."""

    problem = UNAUTHENTICATED

    def __init__(self, message: str = "missing or invalid API key") -> None:
        super().__init__(message)


class TooManyJobs(VideoJobsError):
    """Admission refused: the tenant's active-job quota or the global queue bound is reached."""

    problem = TOO_MANY_JOBS

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = max(1, int(retry_after_seconds))

    def extensions(self) -> dict[str, Any]:
        return {"retry_after_seconds": self.retry_after_seconds}


class TooManyRequests(VideoJobsError):
    """A tenant's calls came faster than its request rate: back-pressure on that tenant alone."""

    problem = TOO_MANY_REQUESTS

    def __init__(self, rate: str, retry_after_seconds: int) -> None:
        super().__init__(f"this tenant's calls are limited to {rate}; retry after {retry_after_seconds} s")
        self.retry_after_seconds = max(1, int(retry_after_seconds))

    def extensions(self) -> dict[str, Any]:
        return {"retry_after_seconds": self.retry_after_seconds}


class IdempotencyConflict(VideoJobsError):
    """An idempotency key reused within its window for a different request."""

    problem = IDEMPOTENCY_CONFLICT

    def __init__(self, job_id: str, what: str) -> None:
        super().__init__(f"this idempotency key already created job {job_id} with a different {what}",
                         [FieldViolation("request_id", f"already used for a different {what}")])
        self.job_id = job_id

    def extensions(self) -> dict[str, Any]:
        return {"job_id": self.job_id}


class InvalidCallbackUrl(VideoJobsError):
    problem = INVALID_CALLBACK_URL

    def __init__(self, reason: str) -> None:
        super().__init__(f"callback_url {reason}", [FieldViolation("callback_url", reason)])


class JobNotFound(VideoJobsError):
    problem = JOB_NOT_FOUND

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} not found")
        self.job_id = job_id


class FrameNotFound(VideoJobsError):
    """A job has no analysed frame at this index, or no image of it was kept."""

    problem = FRAME_NOT_FOUND

    def __init__(self, job_id: str, frame_index: int, reason: str = "is not an analysed frame") -> None:
        super().__init__(f"frame {frame_index} of job {job_id} {reason}")
        self.job_id = job_id
        self.frame_index = frame_index


class InvalidRequest(VideoJobsError):
    """A request parameter outside its range (REST: query or path parameter)."""

    problem = INVALID_REQUEST


class InvalidJobId(VideoJobsError):
    problem = INVALID_JOB_ID

    def __init__(self, job_id: str) -> None:
        shown = job_id if len(job_id) <= 64 else job_id[:64] + "..."
        super().__init__(f"malformed job id {shown!r}: expected a UUID")
        self.job_id = job_id


class IllegalTransition(VideoJobsError):
    problem = JOB_STATE_CONFLICT

    def __init__(self, job_id: str, current: str, wanted: str) -> None:
        super().__init__(f"job {job_id}: cannot go from {current} to {wanted}")
        self.current = current
        self.wanted = wanted

    def extensions(self) -> dict[str, Any]:
        return {"job_status": self.current}


class InvalidOptions(VideoJobsError):
    """Analysis options or pipeline id the service does not accept."""

    problem = INVALID_OPTIONS


class UnknownChoice(InvalidOptions):
    """A value outside a set the workers published (class names, OCR languages)."""

    def __init__(self, field_name: str, unknown: Sequence[str], valid: Sequence[str], what: str) -> None:
        shown = ", ".join(repr(u) for u in unknown[:10])
        listing = ", ".join(valid)
        super().__init__(
            f"unknown {what} {shown}; valid choices: {listing}",
            [FieldViolation(field_name, f"unknown {what} {shown}; valid choices: {listing}")],
        )
        self.unknown = tuple(unknown)
        self.valid = tuple(valid)

    def extensions(self) -> dict[str, Any]:
        return {**super().extensions(), "valid_choices": list(self.valid)}


class UnknownClass(UnknownChoice):
    problem = UNKNOWN_CLASS

    def __init__(self, unknown: Sequence[str], valid: Sequence[str]) -> None:
        super().__init__("classes", unknown, valid, "class name(s)")


class UnknownLanguage(UnknownChoice):
    problem = UNKNOWN_LANGUAGE

    def __init__(self, unknown: Sequence[str], valid: Sequence[str]) -> None:
        super().__init__("ocr_lang", unknown, valid, "OCR language(s)")


class InvalidUpload(VideoJobsError):
    """The uploaded bytes are not acceptable (empty, no file part, ...)."""

    problem = INVALID_UPLOAD


class UnsupportedMediaType(InvalidUpload):
    """The upload is not a container the service reads (told by its content)."""

    problem = UNSUPPORTED_MEDIA_TYPE

    def __init__(self, message: str, accepted: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.accepted = tuple(accepted)

    def extensions(self) -> dict[str, Any]:
        return {"accepted_formats": list(self.accepted)} if self.accepted else {}


class UploadTooLarge(InvalidUpload):
    problem = UPLOAD_TOO_LARGE

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(f"the upload exceeds the limit of {limit_bytes} bytes")
        self.limit_bytes = limit_bytes

    def extensions(self) -> dict[str, Any]:
        return {"max_upload_bytes": self.limit_bytes}


class UploadTimeout(InvalidUpload):
    """The client stalled or dragged on while uploading."""

    problem = UPLOAD_TIMEOUT


class TooManyUploads(VideoJobsError):
    """Every upload slot is taken: back-pressure, not a fault of the request."""

    problem = TOO_MANY_UPLOADS

    def __init__(self, limit: int, retry_after_seconds: int = 5, message: str = "") -> None:
        super().__init__(message or f"{limit} uploads are in progress, the most this service accepts at once; "
                                    "retry later")
        self.retry_after_seconds = retry_after_seconds

    @classmethod
    def spool_full(cls, spool_bytes: int) -> "TooManyUploads":
        """The uploads in progress hold the gateway's whole spool budget."""
        return cls(0, message=f"the uploads in progress fill this service's upload spool ({spool_bytes} bytes); "
                              "retry later")

    def extensions(self) -> dict[str, Any]:
        return {"retry_after_seconds": self.retry_after_seconds}


class ResultsNotReady(VideoJobsError):
    """Results were asked for a job that has none (not finished, or failed)."""

    problem = RESULTS_NOT_READY

    def __init__(self, job_id: str, status: str, error_message: str | None = None) -> None:
        msg = f"job {job_id} has no results: its status is {status}"
        if error_message:
            msg += f" ({error_message})"
        super().__init__(msg)
        self.status = status
        self.error_message = error_message

    def extensions(self) -> dict[str, Any]:
        return {"job_status": self.status}


class StorageObjectNotFound(VideoJobsError):
    """No stored object at a key. Its detail names the key: raise it to clients only for keys they gave."""

    problem = INPUT_NOT_FOUND

    def __init__(self, key: str) -> None:
        super().__init__(f"no stored object at {key!r}")
        self.key = key


class TemporaryFault(VideoJobsError):
    """A dependency (storage, database, queue) failed in a way worth retrying."""

    problem = SERVICE_UNAVAILABLE

    @property
    def public_detail(self) -> str:
        return "a backing service is temporarily unavailable; retry later"


class OutOfSpace(TemporaryFault):
    """A disk the service writes to is full (ENOSPC) or at its quota (EDQUOT). It is the machine's
    fault, not the request's, and goes once space is freed: retried like an unreachable dependency."""

    def __init__(self, where: str) -> None:
        super().__init__(f"{where} is out of space")
        self.where = where

    @property
    def public_detail(self) -> str:
        return f"{self.where} is out of space; retry later"


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def is_out_of_space(exc: BaseException) -> bool:
    """Whether `exc`, or an error it was raised from or while handling, is a full disk's OSError."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno in _NO_SPACE:
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


@contextlib.contextmanager
def out_of_space_is_temporary(where: str) -> Iterator[None]:
    """Raise a full disk met in the block as ``OutOfSpace(where)``; every other error goes on as it was.

    `where` names the disk for clients and logs ("storage", "the scratch folder"): no path."""
    try:
        yield
    except VideoJobsError:
        raise
    except Exception as exc:
        if is_out_of_space(exc):
            raise OutOfSpace(where) from exc
        raise


class PoisonInput(VideoJobsError):
    """The input can never be processed (corrupt, truncated, not a video)."""


class JobInterrupted(VideoJobsError):
    """The worker was asked to stop while the job ran; the job is handed back."""
