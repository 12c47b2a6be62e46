"""The one module that converts between the contract's types and protobuf messages.

The proto messages carry the same field names as the pydantic types (results,
job resource, capabilities, options), so conversion is generic: a model's JSON
form is parsed into the message, and a message's dict form validated back into
the model. Only the job status enum is spelled differently on the wire
(``JOB_STATUS_COMPLETED`` vs ``COMPLETED``).
"""

from __future__ import annotations

from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message
from pydantic import BaseModel

from videojobs.common.frames import RenderedImage
from videojobs.common.job import JobStatus
from videojobs.common.options import AnalysisOptions
from videojobs.common.resources import Capabilities, JobResource
from videojobs.common.results import ResultsDocument
from videojobs.v1 import jobs_pb2

M = TypeVar("M", bound=Message)
T = TypeVar("T", bound=BaseModel)

_STATUS_PREFIX = "JOB_STATUS_"


def status_to_pb(status: JobStatus) -> int:
    return jobs_pb2.JobStatus.Value(_STATUS_PREFIX + status.value)


def status_from_pb(value: int) -> JobStatus:
    return JobStatus(jobs_pb2.JobStatus.Name(value).removeprefix(_STATUS_PREFIX))


def model_to_pb(model: BaseModel, message: M, exclude_unset: bool = False) -> M:
    """Fill `message` from a contract model (same field names; None leaves a field unset)."""
    data = model.model_dump(mode="json", exclude_none=True, exclude_unset=exclude_unset)
    json_format.ParseDict(_statuses_to_pb(data), message)
    return message


def pb_to_model(message: Message, model: type[T]) -> T:
    """A contract model from a message; unset optional fields become None."""
    data = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return model.model_validate(_statuses_from_pb(data))


def pb_to_dict(message: Message) -> dict[str, Any]:
    """A message as the JSON the REST gateway gives for the same thing (what tests compare)."""
    data = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _statuses_from_pb(data)


def _statuses_to_pb(data: dict[str, Any]) -> dict[str, Any]:
    if isinstance(data.get("status"), str):
        data["status"] = _STATUS_PREFIX + data["status"]
    return data


def _statuses_from_pb(data: dict[str, Any]) -> dict[str, Any]:
    if isinstance(data.get("status"), str):
        data["status"] = data["status"].removeprefix(_STATUS_PREFIX)
    return data


# -- options ---------------------------------------------------------------------------------
def options_to_pb(options: AnalysisOptions) -> jobs_pb2.AnalysisOptions:
    """Only the fields the caller set travel, so the receiver's defaults apply to the rest."""
    return model_to_pb(options, jobs_pb2.AnalysisOptions(), exclude_unset=True)


def options_from_pb(message: jobs_pb2.AnalysisOptions) -> AnalysisOptions:
    """Only the fields the caller set; defaults fill the rest. Raises InvalidOptions."""
    raw: dict[str, Any] = {}
    for name in AnalysisOptions.field_names():
        if name == "classes":
            if message.classes:
                raw[name] = list(message.classes)
        elif message.HasField(name):
            raw[name] = getattr(message, name)
    return AnalysisOptions.parse(raw)


# -- job resource ------------------------------------------------------------------------------
def job_to_pb(job: JobResource) -> jobs_pb2.Job:
    return model_to_pb(job, jobs_pb2.Job())


def job_from_pb(message: jobs_pb2.Job) -> JobResource:
    return pb_to_model(message, JobResource)


def jobs_page_to_pb(jobs: list[JobResource], next_page_token: str) -> jobs_pb2.ListJobsResponse:
    return jobs_pb2.ListJobsResponse(jobs=[job_to_pb(j) for j in jobs], next_page_token=next_page_token)


# -- results -------------------------------------------------------------------------------------
def results_page_to_pb(
    job_id: str, status: JobStatus, page: ResultsDocument, total_size: int, next_page_token: str
) -> jobs_pb2.GetResultsResponse:
    """One page of a document (`page.results` are its frames, of `total_size` in all), with everything beside."""
    message = model_to_pb(page, jobs_pb2.GetResultsResponse())
    message.job_id = job_id
    message.status = status_to_pb(status)
    message.next_page_token = next_page_token
    message.total_size = total_size
    return message


def results_page_from_pb(message: jobs_pb2.GetResultsResponse) -> ResultsDocument:
    """The document part of a page (its `results` are that page's frames)."""
    data = pb_to_dict(message)
    for key in ("job_id", "status", "next_page_token", "total_size"):
        data.pop(key, None)
    return ResultsDocument.model_validate(data)


# -- capabilities ----------------------------------------------------------------------------------
def capabilities_to_pb(capabilities: Capabilities) -> jobs_pb2.GetCapabilitiesResponse:
    return model_to_pb(capabilities, jobs_pb2.GetCapabilitiesResponse())


def capabilities_from_pb(message: jobs_pb2.GetCapabilitiesResponse) -> Capabilities:
    data = pb_to_dict(message)
    if not message.HasField("detector"):
        data["detector"] = None
    return Capabilities.model_validate(data)


# -- frame images and contact sheets -------------------------------------------------------------
def frame_image_to_pb(image: RenderedImage) -> jobs_pb2.GetFrameImageResponse:
    return jobs_pb2.GetFrameImageResponse(content_type=image.content_type, data=image.data, width=image.width,
                                          height=image.height)


def contact_sheet_to_pb(image: RenderedImage) -> jobs_pb2.GetContactSheetResponse:
    return jobs_pb2.GetContactSheetResponse(content_type=image.content_type, data=image.data, width=image.width,
                                            height=image.height, frame_indices=image.frame_indices)


def image_from_pb(message: jobs_pb2.GetFrameImageResponse | jobs_pb2.GetContactSheetResponse) -> RenderedImage:
    indices = tuple(message.frame_indices) if isinstance(message, jobs_pb2.GetContactSheetResponse) else ()
    return RenderedImage(message.content_type, message.data, message.width, message.height, indices)
