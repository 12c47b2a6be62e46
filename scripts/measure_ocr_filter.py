#!/usr/bin/env python3
"""How many OCR lines the `min_text_confidence` filter drops, on the sample video and on a text clip.

Runs the `ocr` pipeline with the filter off (min_text_confidence=0), then counts,
for several thresholds, the lines the filter would drop (below the threshold, or
with no letter or digit) and whether every word of the text clip survives.

    .venv/bin/python scripts/measure_ocr_filter.py [--json var/ocr-filter.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bench_pipeline import SLIDES, make_text_clip  # noqa: E402

SAMPLE = ROOT.parent / "shared" / "media" / "bottle-detection.mp4"
THRESHOLDS = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8)


def lines_of(path: Path, sample_fps: float) -> list[tuple[str, float]]:
    from videojobs.common.options import AnalysisOptions
    from videojobs.worker.pipeline.service import VideoFilePipelineService

    service = VideoFilePipelineService("unused.pt", Path(tempfile.mkdtemp()))
    try:
        doc = service.run_on_file("ocr", path, AnalysisOptions(sample_fps=sample_fps, min_text_confidence=0.0))
    finally:
        service.close()
    return [(line.text, line.confidence) for frame in doc.results for line in frame.result.ocr]


def report(lines: list[tuple[str, float]], expected_words: set[str] | None) -> dict:
    from videojobs.worker.pipeline.ocr import OcrLine, is_worth_reading

    out = {"lines_read": len(lines), "lines_without_letter_or_digit": sum(not any(c.isalnum() for c in t)
                                                                        for t, _ in lines)}
    for threshold in THRESHOLDS:
        kept = [t for t, c in lines if is_worth_reading(OcrLine(t, c, (0, 0, 0, 0), ()), threshold)]
        entry = {"dropped": len(lines) - len(kept), "kept": len(kept),
                 "examples_dropped": sorted({t for t, c in lines if t not in kept})[:8]}
        if expected_words is not None:
            words = {w for t in kept for w in t.split()}
            entry["missing_real_words"] = sorted(expected_words - words)
        out[f"min_text_confidence={threshold:g}"] = entry
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_text_clip(Path(tmp) / "text.avi", seconds=len(SLIDES) * 4, fps=2.0)
        text_words = {w for slide in SLIDES for line in slide for w in line.split()}
        result = {
            "sample_video_1fps": report(lines_of(SAMPLE, 1.0), None),
            "text_clip_every_frame": report(lines_of(clip, 0.0), text_words),
        }
    print(json.dumps(result, indent=2, ensure_ascii=False))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
