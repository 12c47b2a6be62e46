"""Domain errors. Edges (gRPC, REST) map these to status codes in one place each."""


class VideoJobsError(Exception):
    """Base class of every error the domain raises on purpose."""


class JobNotFound(VideoJobsError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} not found")
        self.job_id = job_id


class InvalidJobId(VideoJobsError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"malformed job id {job_id!r}: expected a UUID")
        self.job_id = job_id


class IllegalTransition(VideoJobsError):
    def __init__(self, job_id: str, current: str, wanted: str) -> None:
        super().__init__(f"job {job_id}: cannot go from {current} to {wanted}")
        self.current = current
        self.wanted = wanted


class InvalidOptions(VideoJobsError):
    """Analysis options or pipeline id the service does not accept."""


class InvalidUpload(VideoJobsError):
    """The uploaded bytes are not an acceptable video (empty, not MP4, ...)."""


class UploadTooLarge(InvalidUpload):
    def __init__(self, limit_bytes: int) -> None:
        super().__init__(f"upload exceeds the limit of {limit_bytes} bytes")
        self.limit_bytes = limit_bytes


class ResultsNotReady(VideoJobsError):
    """Results were asked for a job that has none (not finished, or failed)."""

    def __init__(self, job_id: str, status: str, error_message: str | None = None) -> None:
        msg = f"job {job_id} has no results: status is {status}"
        if error_message:
            msg += f" ({error_message})"
        super().__init__(msg)
        self.status = status
        self.error_message = error_message


class StorageObjectNotFound(VideoJobsError):
    def __init__(self, key: str) -> None:
        super().__init__(f"no stored object at {key!r}")
        self.key = key


class TemporaryFault(VideoJobsError):
    """A dependency (storage, database, queue) failed in a way worth retrying."""


class PoisonInput(VideoJobsError):
    """The input can never be processed (corrupt, truncated, not a video)."""


class JobInterrupted(VideoJobsError):
    """The worker was asked to stop while the job ran; the job is handed back."""
