"""What a client call can raise: the service's problems, an unreachable service, a wait that ran out."""

from __future__ import annotations

from typing import Any, Optional

import grpc

from videojobs.common.errors import UPSTREAM_ERROR, Problem
from videojobs.common.resources import JobResource
from videojobs.common.rpc_errors import remote_problem


class ClientError(Exception):
    """Base class of the client's errors."""


class ServiceError(ClientError):
    """The service answered with a problem from the catalogue (``videojobs.common.errors.PROBLEMS``)."""

    def __init__(self, problem: Problem, detail: str, extensions: Optional[dict[str, Any]] = None) -> None:
        super().__init__(detail or problem.title)
        self.problem = problem
        self.detail = detail
        self.extensions = dict(extensions or {})

    @property
    def slug(self) -> str:
        return self.problem.slug

    @property
    def job_status(self) -> Optional[str]:
        """Where the job stands, for problems about a job's state (e.g. results-not-ready)."""
        return self.extensions.get("job_status")


class ServiceUnreachable(ClientError):
    """The service could not be reached (or did not answer in time), retries included."""


class WaitTimeout(ClientError):
    """The job was not finished when the wait ran out; it goes on."""

    def __init__(self, job: JobResource, seconds: float) -> None:
        super().__init__(f"job {job.job_id} is still {job.status.value} after {seconds:g} s")
        self.job = job


def from_rpc_error(exc: grpc.RpcError, server: str) -> ClientError:
    """The client error for a failed call: the problem the api sent, else what the transport said."""
    remote = remote_problem(exc)
    if remote is not None:
        return ServiceError(remote.problem, remote.detail, remote.extensions)
    code = exc.code() if isinstance(exc, grpc.Call) else None
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        what = "is unreachable" if code is grpc.StatusCode.UNAVAILABLE else "did not answer in time"
        return ServiceUnreachable(f"the job service at {server} {what}")
    name = code.name if code is not None else "UNKNOWN"
    details = exc.details() if isinstance(exc, grpc.Call) else ""
    return ServiceError(UPSTREAM_ERROR, f"the job service failed ({name}): {details}")
