"""The one module that converts between domain values / results documents and protobuf messages."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from videojobs.common.job import Job, JobStatus
from videojobs.common.options import AnalysisOptions
from videojobs.v1 import jobs_pb2

_STATUS_TO_PB = {
    JobStatus.PENDING: jobs_pb2.JOB_STATUS_PENDING,
    JobStatus.RUNNING: jobs_pb2.JOB_STATUS_RUNNING,
    JobStatus.COMPLETED: jobs_pb2.JOB_STATUS_COMPLETED,
    JobStatus.FAILED: jobs_pb2.JOB_STATUS_FAILED,
}
_PB_TO_STATUS = {v: k for k, v in _STATUS_TO_PB.items()}


def status_to_pb(status: JobStatus) -> int:
    return _STATUS_TO_PB[status]


def status_from_pb(value: int) -> JobStatus:
    return _PB_TO_STATUS[value]


# -- options ---------------------------------------------------------------------------
def options_to_pb(options: dict[str, Any]) -> jobs_pb2.AnalysisOptions:
    """Loose option values (e.g. REST form fields, already parsed) -> proto."""
    opts = AnalysisOptions.parse(options)
    return jobs_pb2.AnalysisOptions(
        sample_fps=opts.sample_fps,
        max_frames=opts.max_frames,
        min_confidence=opts.min_confidence,
        classes=list(opts.classes),
        ocr_lang=opts.ocr_lang,
        imgsz=opts.imgsz,
    )


def options_from_pb(msg: jobs_pb2.AnalysisOptions) -> dict[str, Any]:
    """Proto -> loose dict holding only the fields the caller set (AnalysisOptions.parse validates)."""
    raw: dict[str, Any] = {}
    for name in ("sample_fps", "max_frames", "min_confidence", "ocr_lang", "imgsz"):
        if msg.HasField(name):
            raw[name] = getattr(msg, name)
    if msg.classes:
        raw["classes"] = list(msg.classes)
    return raw


# -- status ------------------------------------------------------------------------------
def _ts(dt) -> timestamp_pb2.Timestamp:  # noqa: ANN001
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(dt)
    return ts


def status_response(job: Job) -> jobs_pb2.GetStatusResponse:
    return jobs_pb2.GetStatusResponse(
        job_id=job.job_id,
        status=status_to_pb(job.status),
        progress=round(job.progress, 4),
        frames_done=job.frames_done,
        frames_total=job.frames_total,
        pipeline_id=job.pipeline_id,
        error_message=job.error_message or "",
        attempt=job.attempt,
        created_at=_ts(job.created_at),
        updated_at=_ts(job.updated_at),
    )


def status_to_json(msg: jobs_pb2.GetStatusResponse) -> dict[str, Any]:
    return {
        "job_id": msg.job_id,
        "status": status_from_pb(msg.status).value,
        "progress": msg.progress,
        "frames_done": msg.frames_done,
        "frames_total": msg.frames_total,
        "pipeline_id": msg.pipeline_id,
        "error_message": msg.error_message or None,
        "attempt": msg.attempt,
        "created_at": msg.created_at.ToJsonString(),
        "updated_at": msg.updated_at.ToJsonString(),
    }


# -- results -----------------------------------------------------------------------------
def _box_pb(box: dict[str, float]) -> jobs_pb2.Box:
    return jobs_pb2.Box(x1=box["x1"], y1=box["y1"], x2=box["x2"], y2=box["y2"])


def _box_json(box: jobs_pb2.Box) -> dict[str, float]:
    return {"x1": box.x1, "y1": box.y1, "x2": box.x2, "y2": box.y2}


def frame_to_pb(frame: dict[str, Any]) -> jobs_pb2.FrameResult:
    result = frame.get("result", {})
    detections = []
    for det in result.get("detections", []):
        msg = jobs_pb2.Detection(
            class_id=det["class_id"],
            class_name=det["class_name"],
            confidence=det["confidence"],
            box=_box_pb(det["box"]),
            box_norm=_box_pb(det["box_norm"]),
        )
        if det.get("track_id") is not None:
            msg.track_id = det["track_id"]
        detections.append(msg)
    lines = []
    for line in result.get("ocr", []):
        msg = jobs_pb2.OcrLine(text=line["text"], confidence=line["confidence"], box=_box_pb(line["box"]))
        if line.get("detection_index") is not None:
            msg.detection_index = line["detection_index"]
        lines.append(msg)
    return jobs_pb2.FrameResult(
        frame_index=frame["frame_index"],
        timestamp_ms=frame["timestamp_ms"],
        detections=detections,
        text=result.get("text") or "",
        ocr=lines,
    )


def frame_to_json(msg: jobs_pb2.FrameResult) -> dict[str, Any]:
    """Inverse of frame_to_pb, in the results document's key order."""
    return {
        "frame_index": msg.frame_index,
        "timestamp_ms": msg.timestamp_ms,
        "result": {
            "detections": [
                {
                    "class_id": d.class_id,
                    "class_name": d.class_name,
                    "confidence": d.confidence,
                    "box": _box_json(d.box),
                    "box_norm": _box_json(d.box_norm),
                    "track_id": d.track_id if d.HasField("track_id") else None,
                }
                for d in msg.detections
            ],
            "text": msg.text,
            "ocr": [
                {
                    "text": o.text,
                    "confidence": o.confidence,
                    "box": _box_json(o.box),
                    "detection_index": o.detection_index if o.HasField("detection_index") else None,
                }
                for o in msg.ocr
            ],
        },
    }


def results_response(
    job: Job, document: dict[str, Any], frames: list[dict[str, Any]], next_page_token: str
) -> jobs_pb2.GetResultsResponse:
    video = document.get("video", {})
    sampling = struct_pb2.Struct()
    sampling.update(document.get("sampling", {}))
    provenance = struct_pb2.Struct()
    provenance.update(document.get("provenance", {}))
    tracks = struct_pb2.ListValue()
    tracks.extend(document.get("tracks", []))
    return jobs_pb2.GetResultsResponse(
        job_id=job.job_id,
        status=status_to_pb(job.status),
        frames=[frame_to_pb(f) for f in frames],
        next_page_token=next_page_token,
        total_frames=len(document.get("frames", [])),
        video=jobs_pb2.VideoMetadata(
            width=int(video.get("width", 0)),
            height=int(video.get("height", 0)),
            fps=float(video.get("fps", 0.0)),
            frame_count=int(video.get("frame_count", 0)),
            duration_ms=float(video.get("duration_ms", 0.0)),
            codec=str(video.get("codec", "")),
        ),
        sampling=sampling,
        provenance=provenance,
        tracks=tracks,
        pipeline_id=document.get("pipeline_id", job.pipeline_id),
    )


def results_meta_to_json(msg: jobs_pb2.GetResultsResponse) -> dict[str, Any]:
    """Everything beside the frame list, as JSON (Struct numbers come back as floats)."""
    return {
        "pipeline_id": msg.pipeline_id,
        "video": {
            "width": msg.video.width,
            "height": msg.video.height,
            "fps": msg.video.fps,
            "frame_count": msg.video.frame_count,
            "duration_ms": msg.video.duration_ms,
            "codec": msg.video.codec,
        },
        "sampling": _whole_numbers(json_format.MessageToDict(msg.sampling)),
        "provenance": _whole_numbers(json_format.MessageToDict(msg.provenance)),
        "tracks": _whole_numbers(json_format.MessageToDict(msg.tracks)),
        "total_frames": msg.total_frames,
    }


def _whole_numbers(value: Any) -> Any:
    """Struct carries every number as a double; give whole ones back as ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value
