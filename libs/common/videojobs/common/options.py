"""Analysis options: one validated value object shared by the edges and the worker."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

from videojobs.common.errors import InvalidOptions

PIPELINES = ("yolo_ocr", "yolo", "ocr")
DEFAULT_PIPELINE = "yolo_ocr"

DEFAULT_SAMPLE_FPS = 1.0
DEFAULT_MIN_CONFIDENCE = 0.25
DEFAULT_OCR_LANG = "eng"
DEFAULT_IMGSZ = 640
MAX_SAMPLE_FPS = 240.0
MAX_IMGSZ = 2048

_LANG_RE = re.compile(r"^[A-Za-z_]{3,16}(\+[A-Za-z_]{3,16}){0,4}$")
_CLASS_RE = re.compile(r"^[\w .\-]{1,64}$")


def validate_pipeline_id(pipeline_id: str | None) -> str:
    pipeline_id = (pipeline_id or DEFAULT_PIPELINE).strip()
    if pipeline_id not in PIPELINES:
        raise InvalidOptions(f"unknown pipeline_id {pipeline_id!r}; expected one of {', '.join(PIPELINES)}")
    return pipeline_id


@dataclass(frozen=True)
class AnalysisOptions:
    """What to analyse and how. Every field has a documented default.

    sample_fps: frames analysed per second of video (0 = every frame), default 1.0.
    max_frames: upper bound on analysed frames (0 = no bound).
    min_confidence: detections below it are dropped (0..1), default 0.25.
    classes: keep only these class names (empty = all).
    ocr_lang: Tesseract language(s), e.g. "eng" or "eng+deu".
    imgsz: detector input size in pixels (multiple of 32).
    """

    sample_fps: float = DEFAULT_SAMPLE_FPS
    max_frames: int = 0
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    classes: tuple[str, ...] = field(default_factory=tuple)
    ocr_lang: str = DEFAULT_OCR_LANG
    imgsz: int = DEFAULT_IMGSZ

    def __post_init__(self) -> None:
        if not isinstance(self.sample_fps, (int, float)) or not math.isfinite(self.sample_fps):
            raise InvalidOptions("sample_fps must be a finite number")
        if not 0 <= self.sample_fps <= MAX_SAMPLE_FPS:
            raise InvalidOptions(f"sample_fps must be between 0 and {MAX_SAMPLE_FPS:g} (0 = every frame)")
        if isinstance(self.max_frames, bool) or not isinstance(self.max_frames, int) or self.max_frames < 0:
            raise InvalidOptions("max_frames must be a whole number >= 0 (0 = no bound)")
        if not isinstance(self.min_confidence, (int, float)) or not 0.0 <= self.min_confidence <= 1.0:
            raise InvalidOptions("min_confidence must be between 0 and 1")
        for name in self.classes:
            if not isinstance(name, str) or not _CLASS_RE.match(name):
                raise InvalidOptions(f"class name {name!r} is not valid")
        if not isinstance(self.ocr_lang, str) or not _LANG_RE.match(self.ocr_lang):
            raise InvalidOptions(f"ocr_lang {self.ocr_lang!r} is not a Tesseract language code like 'eng'")
        if isinstance(self.imgsz, bool) or not isinstance(self.imgsz, int) or not 32 <= self.imgsz <= MAX_IMGSZ or self.imgsz % 32:
            raise InvalidOptions(f"imgsz must be a multiple of 32 between 32 and {MAX_IMGSZ}")

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> "AnalysisOptions":
        """Build from loosely typed input (form fields, JSON); unknown keys are an error."""
        raw = {k: v for k, v in (raw or {}).items() if v is not None and v != ""}
        unknown = set(raw) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise InvalidOptions(f"unknown option(s): {', '.join(sorted(unknown))}")
        kwargs: dict[str, Any] = {}
        try:
            if "sample_fps" in raw:
                kwargs["sample_fps"] = float(raw["sample_fps"])
            if "max_frames" in raw:
                kwargs["max_frames"] = _to_int(raw["max_frames"], "max_frames")
            if "min_confidence" in raw:
                kwargs["min_confidence"] = float(raw["min_confidence"])
            if "imgsz" in raw:
                kwargs["imgsz"] = _to_int(raw["imgsz"], "imgsz")
        except (TypeError, ValueError):
            raise InvalidOptions(f"options must be numbers where numbers are expected: {raw}") from None
        if "classes" in raw:
            kwargs["classes"] = _to_classes(raw["classes"])
        if "ocr_lang" in raw:
            kwargs["ocr_lang"] = str(raw["ocr_lang"]).strip()
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form with a fixed key order (stored with the job, echoed in provenance)."""
        d = asdict(self)
        d["classes"] = list(self.classes)
        return d


def _to_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise InvalidOptions(f"{name} must be a whole number")
    if isinstance(value, float):
        if not value.is_integer():
            raise InvalidOptions(f"{name} must be a whole number")
        return int(value)
    return int(str(value).strip())


def _to_classes(value: Any) -> tuple[str, ...]:
    items: Iterable[Any]
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, (list, tuple)):
        items = [p for v in value for p in (v.split(",") if isinstance(v, str) else [v])]
    else:
        raise InvalidOptions("classes must be a list of class names or a comma-separated string")
    out = []
    for item in items:
        if not isinstance(item, str):
            raise InvalidOptions(f"class name {item!r} is not a string")
        if item.strip():
            out.append(item.strip())
    return tuple(dict.fromkeys(out))
