"""Analysis options: one typed, validated value defined once.

Edges parse loosely typed input (form fields, CLI flags, proto messages) into an
:class:`AnalysisOptions` exactly once, with :meth:`AnalysisOptions.parse`; the
api, the worker and the pipeline then pass it around typed. The field list, the
defaults, the ranges and the descriptions below are the single source: the REST
form, the OpenAPI document, the CLI flags, the capabilities answer and the proto
conversion all derive from them (the proto message mirrors the field names).
"""

from __future__ import annotations

import argparse
from typing import Annotated, Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from videojobs.common.errors import FieldViolation, InvalidOptions

INT32_MAX = 2**31 - 1
MIN_SAMPLE_FPS = 0.01
MAX_SAMPLE_FPS = 240.0
MIN_IMGSZ, MAX_IMGSZ, IMGSZ_MULTIPLE = 32, 2048, 32
MAX_CLASSES = 100

ClassName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64,
                                             pattern=r"^[\w .\-]+$")]
_LANG_PATTERN = r"^[A-Za-z_]{3,16}(\+[A-Za-z_]{3,16}){0,4}$"


class AnalysisOptions(BaseModel):
    """What to analyse and how. Every field has a default; unknown fields are an error."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    sample_fps: float = Field(
        1.0, ge=0.0, le=MAX_SAMPLE_FPS,
        description=f"Frames analysed per second of video; 0 analyses every frame (else {MIN_SAMPLE_FPS:g}.."
                    f"{MAX_SAMPLE_FPS:g}).")
    max_frames: int = Field(0, ge=0, le=INT32_MAX, description="Upper bound on analysed frames; 0 means no bound.")
    min_confidence: float = Field(0.25, ge=0.0, le=1.0,
                                  description="Detections below this confidence (0..1) are dropped.")
    classes: tuple[ClassName, ...] = Field(
        (), max_length=MAX_CLASSES,
        description="Keep only detections of these class names (comma-separated; empty keeps all). "
                    "GET /video/capabilities lists the names.")
    ocr_lang: str = Field("eng", pattern=_LANG_PATTERN,
                          description="Tesseract language(s), e.g. eng or eng+deu (installed ones: capabilities).")
    imgsz: int = Field(640, ge=MIN_IMGSZ, le=MAX_IMGSZ, multiple_of=IMGSZ_MULTIPLE,
                       description="Detector input size in pixels (longest side, a multiple of 32).")
    min_text_confidence: float = Field(
        0.6, ge=0.0, le=1.0,
        description="OCR lines whose mean word confidence (0..1) is below this are dropped, as are lines "
                    "with no letter or digit.")
    on_bad_frames: Literal["fail", "skip"] = Field(
        "fail",
        description="A range of a long video (one segment) that cannot be decoded: fail the job (fail), or "
                    "leave the range out, list it in the results' sampling.skipped_ranges and complete (skip). "
                    "A video analysed in one pass fails either way.")

    @field_validator("sample_fps")
    @classmethod
    def _sample_fps_zero_or_sane(cls, value: float) -> float:
        if 0.0 < value < MIN_SAMPLE_FPS:
            raise ValueError(f"must be 0 (every frame) or at least {MIN_SAMPLE_FPS:g}")
        return value

    @field_validator("classes", mode="before")
    @classmethod
    def _split_classes(cls, value: Any) -> Any:
        """'a,b' and ['a', 'b,c'] both mean a list of names; blanks and repeats are dropped."""
        if isinstance(value, str):
            value = [value]
        if isinstance(value, (list, tuple)):
            names: list[Any] = []
            for item in value:
                parts = item.split(",") if isinstance(item, str) else [item]
                names.extend(p.strip() if isinstance(p, str) else p for p in parts)
                if len(names) > MAX_CLASSES * 4:
                    break  # the length check below reports it; no need to read further
            return tuple(dict.fromkeys(n for n in names if n != ""))
        return value

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> "AnalysisOptions":
        """Build from loosely typed input; None and '' mean "unset". Raises InvalidOptions with field violations."""
        values = {k: v for k, v in (raw or {}).items() if v is not None and v != ""}
        try:
            return cls(**values)
        except ValidationError as exc:
            raise invalid_options(exc) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form in field order (stored with the job, echoed in provenance)."""
        return self.model_dump(mode="json")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(cls.model_fields)


def invalid_options(exc: ValidationError) -> InvalidOptions:
    """A pydantic ValidationError as InvalidOptions: one field violation per error."""
    violations = []
    for err in exc.errors(include_url=False, include_input=False):
        name = ".".join(str(p) for p in err["loc"] if not isinstance(p, int)) or "options"
        reason = "unknown option" if err["type"] == "extra_forbidden" else err["msg"]
        if reason.startswith("Value error, "):
            reason = reason[len("Value error, "):]
        violations.append(FieldViolation(name, reason))
    summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return InvalidOptions(f"invalid analysis options: {summary}", violations)


def _cli_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_option_arguments(parser: argparse.ArgumentParser) -> None:
    """One --flag per option (e.g. --sample-fps), help and default from the field."""
    group = parser.add_argument_group("analysis options")
    for name, info in AnalysisOptions.model_fields.items():
        default = info.default
        shown = ",".join(default) if isinstance(default, tuple) else default
        group.add_argument(_cli_flag(name), dest=name, default=None, metavar=name.upper(),
                           help=f"{info.description} Default: {shown if shown != '' else 'none'}.")


def options_from_arguments(args: argparse.Namespace) -> AnalysisOptions:
    return AnalysisOptions.parse({name: getattr(args, name, None) for name in AnalysisOptions.model_fields})
