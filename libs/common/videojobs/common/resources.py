"""The job resource and the capabilities answer: defined once, shared by REST, gRPC and the CLI.

The gRPC messages ``videojobs.v1.Job`` and ``GetCapabilitiesResponse`` mirror these
field for field with the same names; ``videojobs.common.wire`` converts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from videojobs.common.formats import FORMATS, FRAME_PIXELS_MAX, FRAME_SIDE_MAX, FRAME_SIDE_MIN, REFERENCE_BYTES_MAX
from videojobs.common.job import Job, JobStatus
from videojobs.common.options import (
    IMGSZ_MULTIPLE,
    INT32_MAX,
    MAX_IMGSZ,
    MAX_SAMPLE_FPS,
    MIN_IMGSZ,
    MIN_SAMPLE_FPS,
    AnalysisOptions,
)
from videojobs.common.pipelines import DEFAULT_PIPELINE, PIPELINES
from videojobs.common.results import MAX_PAGE_SIZE


class _Resource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Standing:
    """Where a job stands beside its own row: computed by the api at read time."""

    expires_at: datetime | None = None
    queue_position: int | None = None
    eta_seconds: float | None = None


class JobResource(_Resource):
    """Where a job stands."""

    job_id: str
    status: JobStatus
    progress: float = Field(description="Fraction of the frames to analyse that are done, 0.0..1.0.")
    frames_done: int
    frames_total: int
    pipeline_id: str
    options: AnalysisOptions
    error_message: Optional[str] = Field(None, description="Why the job FAILED.")
    attempt: int = Field(description="Analysis attempts started so far.")
    created_at: datetime
    updated_at: datetime
    expires_at: Optional[datetime] = Field(None, description="When retention removes the job (once it is final).")
    input_sha256: Optional[str] = Field(None, description="sha256 of the uploaded video.")
    queue_position: Optional[int] = Field(None, description="PENDING: older PENDING jobs ahead of this one.")
    eta_seconds: Optional[float] = Field(
        None, description="PENDING or RUNNING: estimated seconds until the job is final, from recent throughput.")
    callback_url: Optional[str] = Field(None, description="Receives a signed POST when the job reaches a final state.")
    segments_total: int = Field(0, description="Segments a long job was split into (0: analysed in one piece).")
    segments_done: int = Field(0, description="Segments finished so far.")
    frames_recomputed: int = Field(
        0, description="Frames analysed again because the worker analysing them stopped or was lost.")

    @classmethod
    def from_job(cls, job: Job, standing: Standing | None = None) -> "JobResource":
        standing = standing or Standing()
        return cls(
            job_id=job.job_id,
            status=job.status,
            progress=round(job.progress, 4),
            frames_done=job.frames_done,
            frames_total=job.frames_total,
            pipeline_id=job.pipeline_id,
            options=job.options,
            error_message=job.error_message,
            attempt=job.attempt,
            created_at=job.created_at,
            updated_at=job.updated_at,
            expires_at=standing.expires_at,
            input_sha256=job.input_sha256,
            queue_position=standing.queue_position,
            eta_seconds=standing.eta_seconds,
            callback_url=job.callback_url,
            segments_total=job.segments_total,
            segments_done=job.segments_done,
            frames_recomputed=job.frames_recomputed,
        )


class WorkerCapabilities(_Resource):
    """What a worker published about itself (its model and OCR languages)."""

    worker_id: str
    model_file: str
    model_sha256: str
    class_names: list[str]
    ocr_languages: list[str]
    published_at: datetime


class PipelineInfo(_Resource):
    pipeline_id: str
    description: str
    stages: list[str]


class FormatInfo(_Resource):
    format_id: str
    name: str
    extensions: list[str]


class DetectorInfo(_Resource):
    model_file: str
    model_sha256: str
    class_names: list[str]


class Limits(_Resource):
    max_upload_bytes: int
    sample_fps_min: float = Field(description="Smallest non-zero sample_fps (0 analyses every frame).")
    sample_fps_max: float
    max_frames_max: int
    imgsz_min: int
    imgsz_max: int
    imgsz_multiple: int
    page_size_max: int
    frame_side_min: int = Field(description="Smallest frame side (pixels) a video may have.")
    frame_side_max: int = Field(description="Largest frame side (pixels) a video may have.")
    frame_pixels_max: int = Field(description="Most pixels a frame may have (width x height): 8192x4320, DCI 8K.")
    reference_bytes_max: int = Field(description=(
        "Most bytes an H.264 / HEVC / VP9 stream's reference pictures may take in the decoder at once (samples "
        "of 9 to 16 bits take two bytes): 255 MiB, 5 frames of 8-bit 4:2:0 7680x4320."))


class Capabilities(_Resource):
    """What the service can do: pipelines, detector classes, OCR languages, limits, formats."""

    pipelines: list[PipelineInfo]
    default_pipeline: str
    default_options: AnalysisOptions
    detector: Optional[DetectorInfo] = Field(None, description="Absent until a worker has published its model.")
    ocr_languages: list[str] = Field(description="Installed Tesseract languages; empty until a worker published.")
    limits: Limits
    formats: list[FormatInfo]

    @classmethod
    def build(cls, max_upload_bytes: int, worker: WorkerCapabilities | None) -> "Capabilities":
        """The static registries plus what the newest worker published."""
        return cls(
            pipelines=[PipelineInfo(pipeline_id=p.pipeline_id, description=p.description,
                                    stages=[s.value for s in p.stages]) for p in PIPELINES.values()],
            default_pipeline=DEFAULT_PIPELINE,
            default_options=AnalysisOptions(),
            detector=DetectorInfo(model_file=worker.model_file, model_sha256=worker.model_sha256,
                                  class_names=worker.class_names) if worker else None,
            ocr_languages=worker.ocr_languages if worker else [],
            limits=Limits(
                max_upload_bytes=max_upload_bytes,
                sample_fps_min=MIN_SAMPLE_FPS,
                sample_fps_max=MAX_SAMPLE_FPS,
                max_frames_max=INT32_MAX,
                imgsz_min=MIN_IMGSZ,
                imgsz_max=MAX_IMGSZ,
                imgsz_multiple=IMGSZ_MULTIPLE,
                page_size_max=MAX_PAGE_SIZE,
                frame_side_min=FRAME_SIDE_MIN,
                frame_side_max=FRAME_SIDE_MAX,
                frame_pixels_max=FRAME_PIXELS_MAX,
                reference_bytes_max=REFERENCE_BYTES_MAX,
            ),
            formats=[FormatInfo(format_id=f.format_id, name=f.name, extensions=list(f.extensions)) for f in FORMATS],
        )
