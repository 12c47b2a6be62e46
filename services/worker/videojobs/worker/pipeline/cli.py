"""``videojobs analyze FILE``: analyse one local video and print the results JSON on stdout."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional

from videojobs.common.errors import VideoJobsError
from videojobs.common.options import DEFAULT_PIPELINE, PIPELINES, AnalysisOptions


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="videojobs analyze",
        description="Analyse one local video file and print the results JSON to stdout.",
    )
    p.add_argument("file", type=Path, help="video file (MP4 or anything OpenCV decodes)")
    p.add_argument("--pipeline", default=DEFAULT_PIPELINE, help=f"one of {', '.join(PIPELINES)} (default {DEFAULT_PIPELINE})")
    p.add_argument("--sample-fps", type=float, default=None, help="frames analysed per second of video; 0 = every frame (default 1)")
    p.add_argument("--max-frames", type=int, default=None, help="analyse at most this many frames (0 = no bound)")
    p.add_argument("--min-confidence", type=float, default=None, help="drop detections below this (default 0.25)")
    p.add_argument("--classes", default=None, help="comma-separated class names to keep, e.g. bottle,person")
    p.add_argument("--ocr-lang", default=None, help="Tesseract language(s), e.g. eng or eng+deu")
    p.add_argument("--imgsz", type=int, default=None, help="detector input size (multiple of 32)")
    p.add_argument("--model", default=None, help="Ultralytics-loadable model (default: $VIDEOJOBS_MODEL or yolov8n.pt)")
    p.add_argument("--backend", default=None, help="detector backend: auto, openvino, onnx or native")
    return p


def _quiet_ultralytics() -> None:
    # Ultralytics logs to stdout, which carries the JSON here; its handler exists once it is imported.
    import ultralytics.utils  # noqa: F401

    logger = logging.getLogger("ultralytics")
    logger.setLevel(logging.WARNING)
    for handler in logger.handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setStream(sys.stderr)


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``videojobs analyze``; exit code 0 on success, 2 on a readable error."""
    args = _parser().parse_args(argv)
    try:
        from videojobs.common.config import load_settings
        from videojobs.common.results import results_to_bytes
        from videojobs.worker.pipeline.service import VideoFilePipelineService

        overrides = {k: v for k, v in (("model", args.model), ("detector_backend", args.backend)) if v}
        settings = load_settings(**overrides)
        options = AnalysisOptions.parse(
            {
                "sample_fps": args.sample_fps,
                "max_frames": args.max_frames,
                "min_confidence": args.min_confidence,
                "classes": args.classes,
                "ocr_lang": args.ocr_lang,
                "imgsz": args.imgsz,
            }
        )
        _quiet_ultralytics()
        service = VideoFilePipelineService.from_settings(settings)
        try:
            document = service.run_on_file(args.pipeline, args.file, options)
        finally:
            service.close()
    except (VideoJobsError, FileNotFoundError) as exc:
        print(f"videojobs analyze: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    sys.stdout.buffer.write(results_to_bytes(document) + b"\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
