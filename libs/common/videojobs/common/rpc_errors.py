"""Reading the api's rich gRPC errors back into the problem catalogue (gateway and client share it).

The api sends every domain error as a ``google.rpc.Status`` with an ``ErrorInfo``
(domain ``videojobs``, reason = the problem, metadata = its extension members as
JSON) and, for bad fields, a ``BadRequest``. Problems are told apart by that
reason, never by message text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from videojobs.common.errors import PROBLEMS_BY_REASON, Problem


@dataclass(frozen=True)
class RemoteProblem:
    """A problem the api answered with: its catalogue entry, the readable detail and the extension members."""

    problem: Problem
    detail: str
    extensions: dict[str, Any] = field(default_factory=dict)


def remote_problem(exc: grpc.RpcError) -> Optional[RemoteProblem]:
    """The problem a gRPC error carries, or None if it is not an answer of the api (e.g. unreachable)."""
    try:
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    except ValueError:
        return None
    if status is None:
        return None
    info, bad_request = None, None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
    problem = PROBLEMS_BY_REASON.get(info.reason) if info is not None else None
    if problem is None or info is None:
        return None
    extensions: dict[str, Any] = {}
    for key, value in info.metadata.items():
        try:
            extensions[key] = json.loads(value)
        except ValueError:
            extensions[key] = value
    if bad_request is not None and bad_request.field_violations:
        extensions["invalid_params"] = [{"name": v.field, "reason": v.description}
                                        for v in bad_request.field_violations]
    return RemoteProblem(problem, status.message, extensions)
