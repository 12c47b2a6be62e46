#!/usr/bin/env python3
"""Peak memory of one job by frame size, against the worker's memory limit on Kubernetes.

A decoded frame is width x height x 3 bytes: 6 MiB at 1920x1080, 24 MiB at 3840x2160, 95 MiB at
7680x4320. A job holds several at once (the decoder's queue, the batch being read and the one in
flight, the OCR threads' working copies), so its memory grows with the frame's size. For each size
this script encodes a clip (the shared sample scaled up, with lines of text drawn on it; H.264 at
10 frames/s), and for each pipeline analyses it in a child process of its own, the analyzer built
from the worker's settings as the worker builds it:

  base      resident memory once the detector is ready for that frame size (warmed on one frame)
  peak      the child's own peak (``VmHWM``, started again from ``base``) while it analyses the clip
  over      peak - base: what the job itself held at most
  batch     frames per batch the pipeline chose for that size

and checks every peak against the worker's memory limit in ``deploy/k8s/base/worker.yaml``. A clip
the service refuses at open (``--x264-params ref=16`` at 7680x4320) is a row of its own, within the limit.
``--worker-threads N`` runs N analyzers in the child, each on the clip at once, as a worker with
``VIDEOJOBS_WORKER_THREADS=N`` (``--manifest``: the overlay whose limit applies then).
Each row is the median of ``--repeat`` runs (by peak; frames/s is the median of its own).
``--fixed-batches`` also runs each with batches of 8 frames whatever their size, as the
pipeline did before it sized batches by bytes (``BATCH_BYTES``), for the ratio of the two in one run.
Prints a table and writes JSON (default var/bench-frame-memory.json).

    .venv/bin/python scripts/bench_frame_memory.py
    .venv/bin/python scripts/bench_frame_memory.py --sizes 1280x720,7680x4320 --seconds 10 --pipelines yolo
    .venv/bin/python scripts/bench_frame_memory.py --sizes 7680x4320 --x264-params ref=16
    .venv/bin/python scripts/bench_frame_memory.py --sizes 7680x4320 --x264-params ref=2 --pix-fmt yuv420p10le
    .venv/bin/python scripts/bench_frame_memory.py --sizes 7680x4320 --x264-params ref=5 --pipelines yolo_ocr \
        --worker-threads 2 --manifest deploy/k8s/overlays/prod/patches/worker.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bench_results import peak_mib, reset_peak, rss_mib  # noqa: E402

SHARED = Path(os.environ.get("VIDEOJOBS_SHARED_DIR", ROOT.parent / "shared"))
SIZES = ("1280x720", "1920x1080", "3840x2160", "7680x4320")
PIPELINES = ("yolo", "yolo_ocr")
WORKER_MANIFEST = ROOT / "deploy" / "k8s" / "base" / "worker.yaml"
LINES = ("QUARTERLY REPORT", "SALES UP 12 PERCENT", "SHIP VERSION 2")


def make_clip(sample: Path, path: Path, size: tuple[int, int], seconds: float, fps: int = 10,
              x264_params: str = "", pix_fmt: str = "yuv420p") -> Path:
    """The sample's frames scaled to `size` with three lines of dark text on a light band, H.264
    (x264's ultrafast preset; `x264_params` as in ``x264 --x264-params``, e.g. ``ref=16``; `pix_fmt`
    e.g. ``yuv420p10le`` for High 10)."""
    import av
    import cv2

    width, height = size
    cap = cv2.VideoCapture(str(sample))
    step = max(1, round(cap.get(cv2.CAP_PROP_FPS) / fps))
    scale = height / 720
    with av.open(str(path), "w") as out:
        options = {"preset": "ultrafast", "crf": "23", **({"x264-params": x264_params} if x264_params else {})}
        stream = out.add_stream("libx264", rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for i in range(int(seconds * fps)):
            for _ in range(step):
                ok, frame = cap.read()
            if not ok:
                break
            image = cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)
            image[int(40 * scale):int(330 * scale), int(40 * scale):int(1000 * scale)] = 235
            for k, line in enumerate(LINES):
                cv2.putText(image, line, (int(70 * scale), int((120 + 90 * k) * scale)), cv2.FONT_HERSHEY_SIMPLEX,
                            1.8 * scale, (20, 20, 20), max(1, int(4 * scale)), cv2.LINE_AA)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format=pix_fmt)):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    cap.release()
    return path


def worker_memory_limit(manifest: Path = WORKER_MANIFEST) -> int:
    """The worker container's `resources.limits.memory`, in bytes."""
    import yaml
    from k8s_check import containers, pod_spec, quantity_bytes

    for doc in yaml.safe_load_all(manifest.read_text()):
        for _, container in containers((doc and pod_spec(doc)) or {}):
            if container["name"] == "worker":
                return quantity_bytes(container["resources"]["limits"]["memory"])
    raise ValueError(f"no worker container with a memory limit in {manifest}")


def child(pipeline: str, clip: Path, fixed_batches: bool = False, worker_threads: int = 1,
          sample_fps: float | None = None) -> dict:
    """Run in a child process: warm the analyzer for the clip's frame size, then measure one job; with
    `worker_threads` > 1, that many analyzers (as a worker with VIDEOJOBS_WORKER_THREADS builds them)
    each running the same job at once. `sample_fps`: the job's option (None: the service's default)."""
    from concurrent.futures import ThreadPoolExecutor

    from videojobs.common.config import load_settings
    from videojobs.common.options import AnalysisOptions
    from videojobs.worker.bootstrap import build_analyzer
    from videojobs.worker.pipeline import BadVideo
    from videojobs.worker.pipeline import service as pipeline_service

    if fixed_batches:  # batches of `batch_size` frames, whatever their size
        pipeline_service.BATCH_BYTES = 2**62
    settings = load_settings(worker_threads=worker_threads)
    services = [build_analyzer(settings) for _ in range(worker_threads)]
    try:
        try:
            for service in services:
                service.run_on_file(pipeline, clip, AnalysisOptions(max_frames=1))
        except BadVideo as exc:  # the job would FAIL at open, naming why
            return {"refused": str(exc)}
        base = rss_mib()
        reset_peak()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(worker_threads) as pool:
            options = AnalysisOptions() if sample_fps is None else AnalysisOptions(sample_fps=sample_fps)
            documents = list(pool.map(lambda service: service.run_on_file(pipeline, clip, options), services))
        seconds = time.perf_counter() - t0
        peak = peak_mib()
        timings = services[0].last_timings
    finally:
        for service in services:
            service.close()
    frames = sum(len(document.results) for document in documents)
    return {"base_mib": base, "peak_mib": peak, "over_mib": round(peak - base, 1), "frames": frames,
            "batch_frames": int(timings.get("batch_frames", 0)) or None,
            "frames_per_second": round(frames / seconds, 2)}


def measure(pipeline: str, clip: Path, repeat: int, fixed_batches: bool = False, worker_threads: int = 1,
            sample_fps: float | None = None) -> dict:
    """The median run of `repeat` child processes, by peak (frames/s: the median of its own)."""
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, __file__, "--child", pipeline, str(clip),
                              "--worker-threads", str(worker_threads)]
                             + (["--fixed-batches"] if fixed_batches else [])
                             + ([] if sample_fps is None else ["--sample-fps", str(sample_fps)]), capture_output=True, text=True, cwd=ROOT)
        if out.returncode != 0:
            return {"error": (out.stderr.strip().splitlines() or ["exit %d" % out.returncode])[-1]}
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        if "refused" in runs[-1]:
            return runs[-1]
    row = sorted(runs, key=lambda run: run["over_mib"])[len(runs) // 2]
    rates = sorted(run["frames_per_second"] for run in runs)
    return {**row, "frames_per_second": rates[len(rates) // 2], "runs": runs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default=",".join(SIZES), help="comma-separated WxH")
    p.add_argument("--pipelines", default=",".join(PIPELINES))
    p.add_argument("--seconds", type=float, default=20.0, help="clip length (analysed at 1 frame per second)")
    p.add_argument("--sample-fps", type=float, default=None,
                   help="the jobs' sample_fps (default: the service's, 1; 0: every frame, decoded in order)")
    p.add_argument("--sample", type=Path, default=SHARED / "media" / "bottle-detection.mp4")
    p.add_argument("--repeat", type=int, default=3, help="runs per row (the median is reported)")
    p.add_argument("--fixed-batches", action="store_true",
                   help="also run with batches of 8 frames whatever their size (the rule before BATCH_BYTES)")
    p.add_argument("--x264-params", default="",
                   help="encoder settings of the clips, e.g. ref=16 (reference frames the decoder must keep)")
    p.add_argument("--pix-fmt", default="yuv420p", help="pixel format of the clips, e.g. yuv420p10le (10 bits)")
    p.add_argument("--worker-threads", type=int, default=1,
                   help="jobs at once in one process, as VIDEOJOBS_WORKER_THREADS (the prod overlay runs 2)")
    p.add_argument("--manifest", type=Path, default=WORKER_MANIFEST,
                   help="the worker manifest whose memory limit the peaks are checked against")
    p.add_argument("--out", type=Path, default=ROOT / "var" / "bench-frame-memory.json")
    p.add_argument("--child", nargs=2, metavar=("PIPELINE", "CLIP"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]), args.fixed_batches, args.worker_threads,
                               args.sample_fps)))
        return 0

    from videojobs.common.cpus import cpu_model

    limit_mib = worker_memory_limit(args.manifest) / 2**20
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-frame-memory-") as tmp:
        for size in args.sizes.split(","):
            width, height = (int(v) for v in size.split("x"))
            clip = make_clip(args.sample, Path(tmp) / f"{size}.mp4", (width, height), args.seconds,
                             x264_params=args.x264_params, pix_fmt=args.pix_fmt)
            for pipeline in args.pipelines.split(","):
                for fixed in (False, True) if args.fixed_batches else (False,):
                    row = {"size": size, "frame_mib": round(width * height * 3 / 2**20, 1), "pipeline": pipeline,
                           "batches": "fixed 8" if fixed else "by bytes", **measure(pipeline, clip, args.repeat, fixed, args.worker_threads,
                                                                            args.sample_fps)}
                    row["fits_worker_limit"] = "refused" in row or ("peak_mib" in row and row["peak_mib"] <= limit_mib)
                    rows.append(row)
                    print(_line(row), flush=True)
    report = {"cpu": cpu_model(), "cores": os.cpu_count(), "worker_memory_limit_mib": limit_mib,
              "seconds": args.seconds, "x264_params": args.x264_params, "pix_fmt": args.pix_fmt,
              "worker_threads": args.worker_threads, "manifest": str(args.manifest), "sample_fps": args.sample_fps, "repeat": args.repeat, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"worker memory limit ({args.manifest}): {limit_mib:.0f} MiB; JSON in {args.out}")
    return 0 if all(row["fits_worker_limit"] for row in rows if row["batches"] == "by bytes") else 1


def _line(row: dict) -> str:
    if "error" in row:
        return f"{row['size']:>10} {row['pipeline']:>8}  error: {row['error']}"
    if "refused" in row:
        return f"{row['size']:>10} {row['pipeline']:>8}  FAILED at open: {row['refused']}"
    return (f"{row['size']:>10} {row['pipeline']:>8} {row['batches']:>8}  frame {row['frame_mib']:6.1f} MiB  "
            f"batch {row['batch_frames']}  "
            f"base {row['base_mib']:7.1f}  peak {row['peak_mib']:7.1f}  over {row['over_mib']:7.1f} MiB  "
            f"{row['frames']} frames {row['frames_per_second']:5.2f}/s  "
            f"{'fits' if row['fits_worker_limit'] else 'OVER the worker limit'}")


if __name__ == "__main__":
    sys.exit(main())
