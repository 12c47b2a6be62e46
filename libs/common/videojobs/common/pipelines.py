"""The pipeline registry: the one place that declares which pipelines exist.

Adding a pipeline is one entry here plus the stages it runs. The gateway's form
enum, the OpenAPI document, validation at submit, the capabilities answer and
the worker's choice of stages all derive from this table.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from videojobs.common.errors import FieldViolation, InvalidOptions


class Stage(str, enum.Enum):
    """A step of the analysis of one frame."""

    DETECT = "detect"  # YOLO object detection
    TRACK = "track"  # ByteTrack ids over the job's frames (needs DETECT)
    OCR = "ocr"  # Tesseract text lines


@dataclass(frozen=True)
class Pipeline:
    pipeline_id: str
    description: str
    stages: tuple[Stage, ...]

    def runs(self, stage: Stage) -> bool:
        return stage in self.stages


_ALL = (
    Pipeline("yolo_ocr", "Objects (YOLO, tracked across frames) and text (Tesseract) in each analysed frame.",
             (Stage.DETECT, Stage.TRACK, Stage.OCR)),
    Pipeline("yolo", "Objects (YOLO, tracked across frames) in each analysed frame.", (Stage.DETECT, Stage.TRACK)),
    Pipeline("ocr", "Text (Tesseract) in each analysed frame.", (Stage.OCR,)),
)
PIPELINES: dict[str, Pipeline] = {p.pipeline_id: p for p in _ALL}
DEFAULT_PIPELINE = "yolo_ocr"


def get_pipeline(pipeline_id: str | None) -> Pipeline:
    """The registered pipeline (the default when empty), or InvalidOptions naming the choices."""
    key = (pipeline_id or DEFAULT_PIPELINE).strip()
    try:
        return PIPELINES[key]
    except KeyError:
        choices = ", ".join(PIPELINES)
        shown = key if len(key) <= 64 else key[:64] + "..."
        message = f"unknown pipeline_id {shown!r}; expected one of {choices}"
        raise InvalidOptions(message, [FieldViolation("pipeline_id", message)]) from None
