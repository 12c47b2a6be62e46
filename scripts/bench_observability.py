#!/usr/bin/env python
"""Overhead of metrics + tracing on the yolo pipeline, per analysed frame.

Runs ``VideoFilePipelineService.run_on_file("yolo", ...)`` on the shared footage,
alternating two arms in one process (same model, same warm caches):

- disabled: the default (no OTLP endpoint): tracing is a shared no-op context;
- enabled: tracing on the production path (SDK, BatchSpanProcessor, OTLP/HTTP
  exporter) sending to a local sink that answers 200, i.e. spans are really
  built, batched, encoded and posted.

Prometheus metrics are recorded in both arms (they cannot be switched off; a job
records a handful of histogram observations), so "enabled" is metrics + tracing and
"disabled" metrics alone; the per-job metric calls are also timed on their own.
On a shared machine the frame times swing more than the overhead, so the script also
counts the spans a run makes and times one span enabled and disabled in a tight loop:
spans per frame x extra cost per span bounds the overhead independently of that noise.
Prints a summary and writes JSON (default var/bench-observability.json).

    python scripts/bench_observability.py                  # 7 runs per arm, 32 frames each
    python scripts/bench_observability.py --runs 3 --frames 16
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

from videojobs.worker.pipeline.offline import keep_offline  # noqa: E402 - before ultralytics or openvino

keep_offline()
os.environ.setdefault("OMP_THREAD_LIMIT", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VIDEOJOBS_SHARED_DIR", REPO.parent / "shared"))


class _Sink(http.server.BaseHTTPRequestHandler):
    posts = 0

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length", 0)))
        _Sink.posts += 1
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="runs per arm (median reported)")
    parser.add_argument("--frames", type=int, default=32, help="frames analysed per run")
    parser.add_argument("--model", default=str(SHARED / "models" / "yolov8n.pt"))
    parser.add_argument("--video", default=str(SHARED / "media" / "bottle-detection.mp4"))
    parser.add_argument("--json", type=Path, default=REPO / "var" / "bench-observability.json")
    args = parser.parse_args(argv)

    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{sink.server_port}"
    os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "1000"

    from videojobs.common.observability import tracing
    from videojobs.common.options import AnalysisOptions
    from videojobs.worker import metrics
    from videojobs.worker.pipeline.service import VideoFilePipelineService

    service = VideoFilePipelineService(args.model, model_cache_dir=REPO / "var" / "models")
    options = AnalysisOptions(max_frames=args.frames, sample_fps=0)
    video = Path(args.video)
    service.run_on_file("yolo", video, options)  # warm-up: model load, caches
    tracing.configure_tracing("bench")
    tracer = tracing.tracer("bench")

    from opentelemetry.sdk.trace import SpanProcessor

    class _Counter(SpanProcessor):
        spans = 0

        def on_end(self, span) -> None:  # noqa: ANN001
            _Counter.spans += 1

    tracing._provider.add_span_processor(_Counter())
    per_frame: dict[str, list[float]] = {"disabled": [], "enabled": []}
    frames_traced = 0
    for run in range(args.runs):
        for arm in (("disabled", "enabled") if run % 2 == 0 else ("enabled", "disabled")):
            (tracing.resume if arm == "enabled" else tracing.disable)()
            start = time.perf_counter()
            with tracing.span(tracer, "job"):
                document = service.run_on_file("yolo", video, options)
            seconds = time.perf_counter() - start
            per_frame[arm].append(seconds / len(document.results))
            frames_traced += len(document.results) if arm == "enabled" else 0
    spans_per_frame = _Counter.spans / frames_traced

    def span_seconds(on: bool, n: int = 2000) -> float:  # below the batch queue (2048): nothing dropped
        (tracing.resume if on else tracing.disable)()
        start = time.perf_counter()
        for _ in range(n):
            with tracing.span(tracer, "s", **{"videojobs.frames": 8}):
                pass
        return (time.perf_counter() - start) / n

    span_cost = {"enabled": span_seconds(True), "disabled": span_seconds(False)}
    tracing.shutdown_tracing()

    start = time.perf_counter()
    for _ in range(1000):  # what one job records in the worker, outside the pipeline
        metrics.observe_final("yolo", "COMPLETED", 1.0, 1.0, frames=args.frames)
        metrics.QUEUE_WAIT.labels("yolo").observe(0.1)
        for stage in metrics.STAGES:
            metrics.observe_stage("yolo", stage, 0.1)
    metrics_per_job = (time.perf_counter() - start) / 1000

    median = {arm: statistics.median(values) for arm, values in per_frame.items()}
    overhead = (median["enabled"] - median["disabled"]) / median["disabled"]
    bound = (spans_per_frame * (span_cost["enabled"] - span_cost["disabled"])
             + metrics_per_job / args.frames) / median["disabled"]
    result = {
        "pipeline": "yolo", "frames_per_run": args.frames, "runs_per_arm": args.runs, "model": Path(args.model).name,
        "seconds_per_frame": {arm: [round(v, 6) for v in values] for arm, values in per_frame.items()},
        "median_seconds_per_frame": {arm: round(v, 6) for arm, v in median.items()},
        "overhead_ratio": round(overhead, 4),
        "metrics_seconds_per_job": round(metrics_per_job, 7),
        "otlp_posts": _Sink.posts,
        "spans_per_frame": round(spans_per_frame, 3),
        "seconds_per_span": {arm: round(v, 9) for arm, v in span_cost.items()},
        "overhead_from_span_cost": round(bound, 6),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"yolo, {args.frames} frames x {args.runs} runs per arm: median per frame "
          f"disabled {median['disabled'] * 1000:.2f} ms, enabled {median['enabled'] * 1000:.2f} ms "
          f"-> overhead {overhead * 100:+.2f}%  (metrics per job: {metrics_per_job * 1e6:.0f} us; "
          f"{_Sink.posts} OTLP posts)\n{spans_per_frame:.2f} spans per frame x "
          f"{(span_cost['enabled'] - span_cost['disabled']) * 1e6:.1f} us extra per span (+ metrics per job) "
          f"= {bound * 100:.3f}% of a frame  -> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
