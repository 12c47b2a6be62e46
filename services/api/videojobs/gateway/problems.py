"""RFC 9457 problem details: the one error shape of the REST gateway.

Every error answer, the framework's own included (unknown route, wrong method,
parameter validation), is ``application/problem+json`` with ``type``, ``title``,
``status``, ``detail`` and ``instance``, plus extension members where they help
(``invalid_params``, ``job_status``, ``valid_choices``, ``accepted_formats``).
Errors from the gRPC api are told apart by their ``ErrorInfo.reason``, never by
their message; transport failures never show the api's address.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from videojobs.common.errors import (
    BAD_REQUEST,
    INTERNAL,
    INVALID_REQUEST,
    METHOD_NOT_ALLOWED,
    PROBLEMS,
    REQUEST_TIMEOUT,
    ROUTE_NOT_FOUND,
    SERVICE_UNAVAILABLE,
    TIMEOUT,
    TOO_MANY_REQUESTS,
    UNAUTHENTICATED,
    UPSTREAM_ERROR,
    Problem,
    VideoJobsError,
)
from videojobs.common.rpc_errors import remote_problem

log = logging.getLogger(__name__)
# What any call to the api can end in: unreachable (503), or no answer within the call timeout (504).
API_CALL_PROBLEMS = (TOO_MANY_REQUESTS, SERVICE_UNAVAILABLE, TIMEOUT)
# Recorded, never sent: the client went away before its request was read.
CLIENT_CLOSED_REQUEST = 499

PROBLEM_JSON = "application/problem+json"


class ProblemDetails(BaseModel):
    """An error answer (RFC 9457). Extension members vary by `type`."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="URI of the problem type; GET it for a description.")
    title: str
    status: int
    detail: str
    instance: str | None = Field(None, description="The request path.")


class ProblemType(BaseModel):
    """The documentation of one problem type (GET /problems/{slug})."""

    type: str
    title: str
    status: int
    description: str


def problem_body(problem: Problem, detail: str, instance: str | None = None,
                 extensions: dict[str, Any] | None = None) -> dict[str, Any]:
    """The problem+json document of an error answer."""
    body: dict[str, Any] = {"type": problem.type_uri, "title": problem.title, "status": problem.http_status,
                            "detail": detail}
    if instance is not None:
        body["instance"] = instance
    body.update(extensions or {})
    return body


def problem_response(
    problem: Problem, detail: str, request: Request | None = None, extensions: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = problem_body(problem, detail, request.url.path if request is not None else None, extensions)
    headers = dict(headers or {})
    if problem is UNAUTHENTICATED:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="videojobs"')
    if isinstance(body.get("retry_after_seconds"), int):
        headers.setdefault("Retry-After", str(body["retry_after_seconds"]))
    return JSONResponse(body, status_code=problem.http_status, media_type=PROBLEM_JSON, headers=headers)


def domain_problem(exc: VideoJobsError, request: Request | None = None) -> JSONResponse:
    """A domain error raised in the gateway itself (e.g. while parsing the form)."""
    return problem_response(exc.problem, exc.public_detail, request, exc.extensions())


def rpc_problem(exc: grpc.RpcError, request: Request | None = None) -> JSONResponse:
    """An error answer of the gRPC api, by its ErrorInfo reason; transport failures by code alone."""
    remote = remote_problem(exc)
    if remote is None:
        # Not an answer of our api (unreachable, timed out, broken): say so without its address.
        code = exc.code()
        if code is grpc.StatusCode.UNAVAILABLE:
            return problem_response(SERVICE_UNAVAILABLE, "the job service is unreachable; retry later", request)
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return problem_response(TIMEOUT, "the job service did not answer in time; retry later", request)
        log.warning("unexpected gRPC error from the api: %s %s", code.name, exc.details())
        return problem_response(UPSTREAM_ERROR, f"the job service failed ({code.name})", request)
    return problem_response(remote.problem, remote.detail, request, remote.extensions)


def problem_responses(*problems: Problem) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the problems a route can answer with, and bad-request and
    request-timeout, which every route can: a request that is not valid HTTP, or whose headers do not
    arrive in time, is answered before routing (gateway/protocol.py)."""
    out: dict[int | str, dict[str, Any]] = {}
    by_status: dict[int, list[Problem]] = {}
    for problem in dict.fromkeys((BAD_REQUEST, REQUEST_TIMEOUT, *problems)):
        by_status.setdefault(problem.http_status, []).append(problem)
    for status, group in sorted(by_status.items()):
        out[status] = {
            "model": ProblemDetails,
            "description": "; ".join(f"{p.title} (type {p.type_uri})" for p in group),
            "content": {PROBLEM_JSON: {"examples": {
                p.slug: {"summary": p.title, "value": {"type": p.type_uri, "title": p.title, "status": status,
                                                        "detail": p.description}}
                for p in group
            }}},
        }
    return out


def install_problem_handlers(app: FastAPI) -> None:
    """Every error the app or the framework raises becomes a problem+json answer."""

    @app.exception_handler(VideoJobsError)
    async def _domain(request: Request, exc: VideoJobsError) -> JSONResponse:
        return domain_problem(exc, request)

    @app.exception_handler(grpc.RpcError)  # the async client's errors, and the synchronous one's (uploads)
    async def _rpc(request: Request, exc: grpc.RpcError) -> JSONResponse:
        return rpc_problem(exc, request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return problem_response(ROUTE_NOT_FOUND, f"no route {request.url.path}", request)
        if exc.status_code == 405:
            return problem_response(METHOD_NOT_ALLOWED, f"{request.method} is not allowed on {request.url.path}",
                                    request, headers=dict(exc.headers or {}))
        problem = next((p for p in PROBLEMS.values() if p.http_status == exc.status_code), BAD_REQUEST)
        return problem_response(problem, str(exc.detail), request, headers=dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        params = [{"name": ".".join(str(p) for p in err["loc"][1:]) or str(err["loc"][0]), "reason": err["msg"]}
                  for err in exc.errors()]
        detail = "; ".join(f"{p['name']}: {p['reason']}" for p in params)
        return problem_response(INVALID_REQUEST, detail, request, {"invalid_params": params})

    @app.exception_handler(ClientDisconnect)
    async def _gone(_request: Request, _exc: ClientDisconnect) -> Response:
        # The client closed the connection while its body was being read (an upload abandoned half-way):
        # nobody is left to answer, and it is not the server's error. 499 ("client closed request", as
        # nginx logs it) is what the access log and the request metrics record; nothing is sent.
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(INTERNAL, "internal error; the server's logs have the detail", request)


def problem_catalogue() -> Iterable[ProblemType]:
    for p in PROBLEMS.values():
        yield ProblemType(type=p.type_uri, title=p.title, status=p.http_status, description=p.description)
