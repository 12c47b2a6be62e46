#!/usr/bin/env python
"""Benchmark the analysis pipeline against what users write with Ultralytics alone.

(a) baseline, what a user writes first with the checkpoint: per sampled frame,
    encode to JPEG and decode again (as the seed's reference worker does),
    ``YOLO("yolov8n.pt").predict(frame)`` with Ultralytics' defaults (PyTorch, its own
    letterbox, conf 0.25), and full-frame ``pytesseract.image_to_data`` with defaults.
(b) ``VideoFilePipelineService.run_on_file("yolo_ocr", ...)`` built from the default
    settings (detector backend ``auto``, inference threads from the usable cores).
    Where the runtime's default precision is not f32 (OpenVINO runs bf16 on CPUs with AMX or AVX-512 BF16),
    (b) runs again with ``VIDEOJOBS_DETECTOR_PRECISION=f32``: speed and agreement of both.
(c) what an expert does with Ultralytics alone, detection only:
    ``YOLO(<its OpenVINO export at the video's letterbox shape>).predict(source=video,
    vid_stride=k, stream=True)``, against the ``yolo`` pipeline on the same frames
    (every k-th frame) and against the bare model forward at the same input shape.

Agreement of (b) with (a): detections matched (class, IoU >= 0.5), and OCR words both as (a)
reports them (every word with a confidence) and through the service's default line filter
(``min_text_confidence``, a letter or digit in the line), which is how the pipeline reports
text; the detector and OCR engine are also compared with Ultralytics and pytesseract on the
very same decoded pixels (no JPEG round trip).

Clips: the shared sample (640x360 H.264), a generated 1280x720 text clip (MJPEG
slides) and a 16:9 clip without text (the sample scaled to 1280x720, mp4v). Each
measurement is the median of ``--repeat`` runs (default 3); (a) and (c) run in child
processes (their own thread settings). Prints a summary and writes JSON (default
``bench-results/pipeline.json``). Peak RSS is measured in child processes for the
40 s clip and a longer one (``--skip-rss`` leaves it out).

    python scripts/bench_pipeline.py                      # everything (slow: (a) is)
    python scripts/bench_pipeline.py --max-frames 12      # fewer frames per clip
    python scripts/bench_pipeline.py --baseline both      # also (a) without OMP_THREAD_LIMIT
    python scripts/bench_pipeline.py --isa avx2           # everything capped at AVX2 (see ISA_CAPS)

``--isa avx2`` stands in for an AVX2-only CPU on one with AVX-512: the script starts again with
the libraries' own instruction-set switches set (inherited by every child): oneDNN, which runs
the convolutions of both PyTorch and OpenVINO's CPU plugin, PyTorch's own kernels, OpenCV and
NumPy stop at AVX2, and OpenVINO runs f32, its default on such CPUs (its bf16 needs AVX-512 or
AMX). What the cap reached is checked and written to the JSON (``isa_cap``; OpenVINO's, the
kernel its CPU plugin chose for each layer, is ``detector_kernels``, on every run). Not capped, for
want of a switch: FFmpeg's decoders and Tesseract's float dot product (its int8 matrix code,
which the shipped ``fast`` models run, is AVX2 at most). The core is still this CPU's: the
ratios show what the instruction set does to them, not what an older core would.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from videojobs.common.cpus import cpu_model  # noqa: E402
from videojobs.worker.pipeline.offline import keep_offline  # noqa: E402 - before ultralytics or openvino

keep_offline()
os.environ.setdefault("OMP_THREAD_LIMIT", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")

ISA_ENV = "VIDEOJOBS_BENCH_ISA"  # set while a cap is in effect, for this process and its children
ISA_CAPS = {
    "avx2": {
        "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN: PyTorch's convolutions and OpenVINO's CPU plugin
        "ATEN_CPU_CAPABILITY": "avx2",  # PyTorch's own vectorised kernels
        "OPENCV_CPU_DISABLE": "AVX512-SKX",  # the one AVX-512 level its wheels dispatch to
        "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
        "VIDEOJOBS_DETECTOR_PRECISION": "f32",  # OpenVINO's default where there is no AVX-512 BF16 or AMX
    },
}


def isa_cap_environment(isa: str) -> dict[str, str]:
    return {**os.environ, **ISA_CAPS[isa], ISA_ENV: isa}


def openvino_default_f32() -> None:
    """Under a cap, a fresh ``ov.Core`` infers in f32, as OpenVINO does by default on an AVX2-only CPU
    (left to itself it picks bf16 from the real CPU's flags, which oneDNN, capped, then cannot run).
    The same property Ultralytics sets on Windows."""
    import openvino as ov

    class Core(ov.Core):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.set_property("CPU", {"INFERENCE_PRECISION_HINT": ov.Type.f32})

    ov.Core = Core


import cv2  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VIDEOJOBS_SHARED_DIR", REPO.parent / "shared"))

SLIDES = [
    ["QUARTERLY REPORT", "SALES UP 12 PERCENT"],
    ["NEXT STEPS", "SHIP VERSION 2"],
    ["THANK YOU"],
    ["OPEN QUESTIONS", "BUDGET AND HIRING"],
]


# -- inputs -------------------------------------------------------------------------------
def make_text_clip(path: Path, seconds: int, fps: float = 30.0) -> Path:
    """1280x720 slides of dark text on a light background, a new slide every 4 s.

    Written as MJPEG: every frame is coded on its own, so a slide's frames decode
    identically, as in a screen recording (OpenCV's wheels cannot write H.264).
    """
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (1280, 720))
    frames_per_slide = int(4 * fps)
    for i in range(int(seconds * fps)):
        lines = SLIDES[(i // frames_per_slide) % len(SLIDES)]
        img = np.full((720, 1280, 3), 240, np.uint8)
        for k, line in enumerate(lines):
            cv2.putText(img, line, (80, 170 + 170 * k), cv2.FONT_HERSHEY_SIMPLEX, 2.5, (20, 20, 20), 5, cv2.LINE_AA)
        writer.write(img)
    writer.release()
    return path


def make_repeated_clip(src: Path, dst: Path, times: int) -> Path:
    """`src` re-encoded `times` times over into one file (mp4v)."""
    writer = None
    for _ in range(times):
        cap = cv2.VideoCapture(str(src))
        fps = cap.get(cv2.CAP_PROP_FPS)
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if writer is None:
                h, w = frame.shape[:2]
                writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
            writer.write(frame)
        cap.release()
    assert writer is not None
    writer.release()
    return dst


def sampled_frames(path: Path, sample_fps: float, max_frames: int):
    """Yield (index, frame) of the frames the pipeline samples, decoded plainly."""
    from videojobs.worker.pipeline.video import SamplingPlan

    cap = cv2.VideoCapture(str(path))
    plan = SamplingPlan(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), cap.get(cv2.CAP_PROP_FPS), sample_fps, max_frames)
    wanted = iter(plan)
    target = next(wanted, None)
    index = 0
    while target is not None:
        ok, frame = cap.read()
        if not ok:
            break
        if index == target:
            yield index, frame
            target = next(wanted, None)
        index += 1
    cap.release()


def make_scaled_clip(src: Path, dst: Path, size: tuple[int, int], seconds: float) -> Path:
    """The first `seconds` of `src` scaled to `size` (w, h), mp4v: a 16:9 clip with objects and no text."""
    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS)
    writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for _ in range(int(seconds * fps)):
        ok, frame = cap.read()
        if not ok:
            break
        writer.write(cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR))
    cap.release()
    writer.release()
    return dst


def median(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2]


def boxes_of(result) -> list:
    """(class id, [x1, y1, x2, y2]) of each box of an Ultralytics ``Results``."""
    return [(int(c), [float(v) for v in box]) for c, box in zip(result.boxes.cls, result.boxes.xyxy)]


# -- (a) baseline ---------------------------------------------------------------------------
def tesseract_words(data: dict) -> tuple[list[str], list[str]]:
    """Words of a ``pytesseract.image_to_data`` dict: every word it reports (confidence >= 0), and those
    of the lines the service keeps by default (the pipeline's own rule: a letter or digit in the line,
    mean word confidence >= ``min_text_confidence``)."""
    from videojobs.common.options import AnalysisOptions
    from videojobs.worker.pipeline.ocr import OcrWord, group_lines, is_worth_reading

    words, line = [], None
    for text, conf, *key in zip(data["text"], data["conf"], data["block_num"], data["par_num"], data["line_num"]):
        if text.strip() and float(conf) >= 0:
            words.append((OcrWord(text.strip(), float(conf) / 100, (0, 0, 0, 0)), key != line))
            line = key
    kept = [line for line in group_lines(words) if is_worth_reading(line, AnalysisOptions().min_text_confidence)]
    return [w.text for w, _ in words], [w for line in kept for w in line.text.split()]


def run_baseline(path: Path, model: str, sample_fps: float, max_frames: int, repeat: int) -> dict:
    import pytesseract
    from PIL import Image
    from ultralytics import YOLO

    yolo = YOLO(model)
    warm = np.zeros((360, 640, 3), np.uint8)
    yolo.predict(warm, verbose=False)
    backend = yolo.predictor.model.format if yolo.predictor else "?"
    runs = []
    frames: dict = {}
    for _ in range(repeat):
        frames = {}
        t0 = time.perf_counter()
        for index, frame in sampled_frames(path, sample_fps, max_frames):
            ok, jpeg = cv2.imencode(".jpg", frame)
            image = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
            result = yolo.predict(image, verbose=False)[0]
            dets = boxes_of(result)
            data = pytesseract.image_to_data(Image.fromarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)),
                                             output_type=pytesseract.Output.DICT)
            words, kept = tesseract_words(data)
            frames[index] = {"detections": dets, "words": words, "words_kept": kept}
        runs.append(time.perf_counter() - t0)
    return {"frames": frames, "seconds": median(runs), "runs": [round(r, 3) for r in runs], "backend": backend,
            "input_shape": list(yolo.predictor.preprocess([warm]).shape[2:]) if yolo.predictor else None}


BASELINES = {
    # key: (label, OMP_THREAD_LIMIT for the child; None = removed from its environment)
    "omp_thread_limit_1": ("baseline with OMP_THREAD_LIMIT=1", "1"),
    "environment_defaults": ("baseline, environment defaults (OMP_THREAD_LIMIT unset)", None),
}


def baseline_child(path: str, model: str, sample_fps: float, max_frames: int, omp: str, repeat: int) -> None:
    """--baseline-child: run the baseline here and print its result as JSON (last stdout line).

    This script (and the pipeline's OCR module, imported for the sampling plan)
    default OMP_THREAD_LIMIT to 1 on import; the variable is set or removed here,
    after those imports, so the tesseract processes pytesseract starts see `omp`.
    """
    import logging

    import videojobs.worker.pipeline.ocr  # noqa: F401  (its import-time default, then ours)
    import videojobs.worker.pipeline.video  # noqa: F401

    if omp == "unset":
        os.environ.pop("OMP_THREAD_LIMIT", None)
    else:
        os.environ["OMP_THREAD_LIMIT"] = omp
    logging.getLogger("ultralytics").setLevel(logging.WARNING)
    r = run_baseline(Path(path), model, sample_fps, max_frames, repeat)
    r["frames"] = {str(k): v for k, v in r["frames"].items()}
    r["omp_thread_limit"] = os.environ.get("OMP_THREAD_LIMIT")
    print(json.dumps(r))


def _child(args: list[str], env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"child {args[:2]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_baseline(kind: str, path: Path, model: str, sample_fps: float, max_frames: int, repeat: int) -> dict:
    """The baseline in a fresh process, with OMP_THREAD_LIMIT as `kind` says."""
    _, omp = BASELINES[kind]
    env = dict(os.environ)
    env.pop("OMP_THREAD_LIMIT", None)
    if omp is not None:
        env["OMP_THREAD_LIMIT"] = omp
    r = _child(["--baseline-child", str(path), "--model", model, "--sample-fps", str(sample_fps),
                "--max-frames", str(max_frames), "--baseline-omp", "unset" if omp is None else omp,
                "--repeat", str(repeat)], env)
    r["frames"] = {int(k): {**v, "detections": [(c, b) for c, b in v["detections"]]} for k, v in r["frames"].items()}
    return r


# -- (c) Ultralytics alone, OpenVINO export, streamed -------------------------------------------
def expert_child(path: str, model: str, shape: str, stride: int, max_frames: int, repeat: int, tmp: str) -> None:
    """--expert-child: export the checkpoint to OpenVINO at `shape` and stream-predict every `stride`-th frame."""
    import logging
    import shutil

    from ultralytics import YOLO

    if os.environ.get(ISA_ENV):
        openvino_default_f32()
    logging.getLogger("ultralytics").setLevel(logging.WARNING)
    h, w = (int(v) for v in shape.split("x"))
    local = Path(tmp) / Path(model).name
    exported = Path(tmp) / f"{local.stem}_openvino_model"
    export_s = 0.0
    if not exported.is_dir():  # exported by the first round, reused by the next ones
        shutil.copy2(model, local)
        t0 = time.perf_counter()
        exported = Path(YOLO(str(local)).export(format="openvino", imgsz=(h, w), half=False, verbose=False))
        export_s = time.perf_counter() - t0
    yolo = YOLO(str(exported), task="detect")
    runs, n = [], 0
    frames: dict = {}
    for _ in range(repeat + 1):  # the first run compiles and warms up; not counted
        frames, n = {}, 0
        t0 = time.perf_counter()
        for k, r in enumerate(yolo.predict(source=path, vid_stride=stride, stream=True, verbose=False)):
            # Ultralytics grabs `stride` frames, then keeps the last: frames stride-1, 2*stride-1, ...
            frames[str((k + 1) * stride - 1)] = boxes_of(r)
            n += 1
            if max_frames and n >= max_frames:
                break
        runs.append(time.perf_counter() - t0)
    runs = runs[1:]
    print(json.dumps({"frames": n, "seconds": median(runs), "runs": [round(r, 3) for r in runs],
                      "export_seconds": round(export_s, 2), "input_shape": [h, w], "detections": frames}))


def parity_child(path: str, model: str, sample_fps: float, max_frames: int) -> None:
    """--parity-child: ``YOLO(model).predict(frame)`` (PyTorch, defaults) on the decoded frames themselves,
    without (a)'s JPEG round trip; detections per frame as JSON (last stdout line). Untimed."""
    import logging

    from ultralytics import YOLO

    logging.getLogger("ultralytics").setLevel(logging.WARNING)
    yolo = YOLO(model)
    frames = {}
    for index, frame in sampled_frames(Path(path), sample_fps, max_frames):
        result = yolo.predict(frame, verbose=False)[0]
        frames[str(index)] = boxes_of(result)
    print(json.dumps(frames))


def detector_parity(path: Path, model: str, a: dict, b: dict, sample_fps: float, max_frames: int) -> dict:
    """Pipeline detections against Ultralytics' own ``predict`` on the very same decoded pixels.

    Untimed. The baseline (a) detects on a JPEG round trip of each frame; this separates
    "the detector differs" from "the input pixels differ". It also accounts for each detection
    of (a) that the pipeline misses: whether Ultralytics itself finds it on the decoded pixels
    (a detector difference) or not (the JPEG round trip made it), and how many of (a)'s
    detections Ultralytics finds there at all (what a detector equal to its own would match).
    """
    raw = _child(["--parity-child", str(path), "--model", model, "--sample-fps", str(sample_fps),
                  "--max-frames", str(max_frames)])
    plain = {"frames": {int(k): {"detections": [(c, box) for c, box in v], "words": []} for k, v in raw.items()}}
    ag = agreement(plain, b)
    a_on_raw = agreement(a, plain)
    not_on_raw = missed(a, plain)
    return {**{k: ag[k] for k in ("frames_compared", "detections_a", "detections_b", "detections_matched",
                                  "detection_agreement")},
            "a_detections": a_on_raw["detections_a"],
            "a_matched_by_ultralytics_on_raw_pixels": a_on_raw["detections_matched"],
            "a_missed_by_pipeline": [{"frame": index, "class": cls, "box": [round(v, 1) for v in box],
                                      "ultralytics_finds_it_on_raw_pixels": (index, cls, box) not in not_on_raw}
                                     for index, cls, box in missed(a, b)]}


class WordTally:
    """Words of side (a) against side (b), frame by frame: totals, multiset matches, identical frames."""

    def __init__(self) -> None:
        self.frames_same = self.words_a = self.words_b = self.matched = 0

    def add(self, a: Counter, b: Counter) -> None:
        self.frames_same += a == b
        self.words_a += sum(a.values())
        self.words_b += sum(b.values())
        self.matched += sum((a & b).values())

    @property
    def agreement(self) -> float:
        """Matched words over the larger side (1.0 when neither has a word)."""
        larger = max(self.words_a, self.words_b)
        return round(self.matched / larger, 4) if larger else 1.0


def ocr_engine_parity(path: Path, b: dict, sample_fps: float, max_frames: int) -> dict:
    """Pipeline words against plain ``pytesseract.image_to_data`` on the very same decoded pixels.

    Untimed. The baseline OCRs a JPEG round trip of each frame; this separates
    "different engine or settings" from "different input pixels".
    """
    import pytesseract
    from PIL import Image

    total, raw, kept = 0, WordTally(), WordTally()
    for index, frame in sampled_frames(path, sample_fps, max_frames):
        data = pytesseract.image_to_data(Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)),
                                         output_type=pytesseract.Output.DICT)
        words, words_kept = (Counter(w) for w in tesseract_words(data))
        wb = Counter(b["frames"].get(index, {"words": []})["words"])
        total += 1
        raw.add(words, wb)
        kept.add(words_kept, wb)
    return {
        "frames": total,
        "frames_same_words": raw.frames_same,
        "words_pytesseract_raw_frame": raw.words_a,
        # the same words through the service's default line filter (min_text_confidence, a letter or digit)
        "words_pytesseract_kept": kept.words_a,
        "words_matched_kept": kept.matched,
        "frames_same_words_kept": kept.frames_same,
        "words_pipeline": raw.words_b,
        "words_matched": raw.matched,
        "cli_tesseract": pytesseract.get_tesseract_version().base_version,
    }


# -- (b) pipeline ----------------------------------------------------------------------------
def run_pipeline(service, path: Path, sample_fps: float, max_frames: int, pipeline: str = "yolo_ocr") -> dict:
    from videojobs.common.options import AnalysisOptions

    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    document = service.run_on_file(pipeline, path, AnalysisOptions(sample_fps=sample_fps, max_frames=max_frames))
    t1 = time.perf_counter()
    document.to_bytes()
    t2 = time.perf_counter()
    cpu = _cpu_seconds() - cpu0
    doc = document.model_dump(mode="json")
    timings = dict(service.last_timings)
    timings["write"] += t2 - t1
    frames = {}
    for f in doc["results"]:
        r = f["result"]
        frames[f["frame_index"]] = {
            "detections": [(d["class_id"], [d["box"][k] for k in ("x1", "y1", "x2", "y2")]) for d in r["detections"]],
            "words": [w for line in r["ocr"] for w in line["text"].split()],
        }
    return {"frames": frames, "seconds": t2 - t0, "cpu_seconds": cpu, "timings": timings,
            "model": doc["provenance"]["model"]}


def _cpu_seconds() -> float:
    """CPU time of this process, every thread (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def median_run(runs: list[dict]) -> dict:
    """The median run (by wall time), with every run's seconds."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    mid = dict(ordered[len(ordered) // 2])
    mid["runs"] = [round(r["seconds"], 3) for r in runs]
    return mid


def decode_alone(path: Path, sample_fps: float, max_frames: int, threads: int = 0, repeat: int = 3) -> dict:
    """The decoding the pipeline does for this sampling, and nothing else: its own ``FrameReader``
    through the same plan (by keyframes, skipping unreferenced frames, where the file allows it), in
    CPU time per analysed frame, median of `repeat`. What decoding alone adds to the forward's CPU."""
    from videojobs.worker.pipeline.video import FrameReader, SamplingPlan

    runs, decoded, frames = [], 0, 0
    for _ in range(repeat):
        cpu0 = _cpu_seconds()
        with FrameReader(path, timeout=120, threads=threads) as reader:
            info = reader.open()
            plan = SamplingPlan(info.frame_count, info.fps, sample_fps, max_frames)
            frames = sum(1 for _ in reader.frames(plan))
        runs.append(_cpu_seconds() - cpu0)
        decoded = reader.frames_decoded
    return {"frames": frames, "frames_decoded": decoded,
            "core_ms_per_frame": round(median(runs) * 1000 / max(1, frames), 2)}


def build_service(model: str, cache: Path, precision: str | None = None):
    """The pipeline as the worker builds it from its settings (defaults: auto backend, threads from the
    cores, the precision from the environment: auto unless VIDEOJOBS_DETECTOR_PRECISION says otherwise)."""
    from videojobs.common.config import load_settings
    from videojobs.worker.bootstrap import build_analyzer

    overrides = {} if precision is None else {"detector_precision": precision}
    return build_analyzer(load_settings(model=model, model_cache_dir=cache, **overrides))


# -- agreement --------------------------------------------------------------------------------
def iou(a, b) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, iw) * max(0.0, ih)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def matches(dets_a: list, dets_b: list) -> list[bool]:
    """For each detection of `dets_a`, in order, whether `dets_b` has it: same class, IoU >= 0.5, each
    box of `dets_b` matched at most once (to the first of `dets_a` that overlaps it best)."""
    used: set[int] = set()
    found = []
    for cls, box in dets_a:
        best, best_iou = None, 0.5
        for j, (cls_b, box_b) in enumerate(dets_b):
            if j not in used and cls_b == cls and iou(box, box_b) >= best_iou:
                best, best_iou = j, iou(box, box_b)
        if best is not None:
            used.add(best)
        found.append(best is not None)
    return found


def missed(a: dict, b: dict) -> list[tuple[int, int, list]]:
    """``(frame, class, box)`` of each detection of `a` that `b` does not have, frame by frame."""
    out = []
    for index, fa in sorted(a["frames"].items()):
        fb = b["frames"].get(index, {"detections": []})
        out += [(index, cls, box) for (cls, box), hit in zip(fa["detections"], matches(fa["detections"],
                                                                                        fb["detections"])) if not hit]
    return out


def agreement(a: dict, b: dict) -> dict:
    matched = n_a = n_b = 0
    raw, kept = WordTally(), WordTally()
    for index, fa in a["frames"].items():
        fb = b["frames"].get(index, {"detections": [], "words": []})
        n_a += len(fa["detections"])
        n_b += len(fb["detections"])
        matched += sum(matches(fa["detections"], fb["detections"]))
        wb = Counter(fb["words"])
        raw.add(Counter(fa["words"]), wb)
        kept.add(Counter(fa.get("words_kept", [])), wb)  # (a) frames carry both word lists
    frames = len(a["frames"])
    return {
        "frames_compared": frames,
        "frames_missing_in_b": sum(1 for i in a["frames"] if i not in b["frames"]),
        "detections_a": n_a,
        "detections_b": n_b,
        "detections_matched": matched,
        # Matched pairs over the larger side: a box found by only one side counts against.
        "detection_agreement": round(matched / max(n_a, n_b), 4) if max(n_a, n_b) else 1.0,
        "ocr_words_a": raw.words_a,
        "ocr_words_b": raw.words_b,
        "ocr_words_matched": raw.matched,
        "ocr_word_agreement": raw.agreement,
        "ocr_frames_same_words": raw.frames_same,
        # (a)'s words through the service's default line filter, as the pipeline reports text
        "ocr_words_a_kept": kept.words_a,
        "ocr_words_matched_kept": kept.matched,
        "ocr_word_agreement_kept": kept.agreement,
        "ocr_frames_same_words_kept": kept.frames_same,
    }


# -- RSS child --------------------------------------------------------------------------------
def rss_child(path: str, model: str, cache: str, sample_fps: float) -> None:
    from videojobs.common.options import AnalysisOptions

    service = build_service(model, Path(cache))
    t0 = time.perf_counter()
    document = service.run_on_file("yolo_ocr", Path(path), AnalysisOptions(sample_fps=sample_fps))
    size = len(document.to_bytes())
    doc = document.model_dump(mode="json")
    seconds = time.perf_counter() - t0
    service.close()
    print(json.dumps({"peak_rss_mib": peak_rss_mib(), "frames": len(doc["results"]),
                      "seconds": round(seconds, 2), "results_bytes": size}))


def peak_rss_mib() -> float:
    """This process's own peak resident memory, in MiB.

    Linux's ``VmHWM``, not ``getrusage``'s ``ru_maxrss``: the latter survives ``execve``, and a
    child started by ``subprocess`` (vfork + exec) inherits the parent's peak in it, so a child of
    this benchmark reported the benchmark's 2.2 GiB, whatever it used itself.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM in /proc/self/status: peak memory is measured on Linux only")


def measure_rss(path: Path, model: str, cache: Path, sample_fps: float) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", str(path), "--model", model, "--cache", str(cache),
         "--sample-fps", str(sample_fps)],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- main -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sample", type=Path, default=SHARED / "media" / "bottle-detection.mp4")
    p.add_argument("--model", default=str(SHARED / "models" / "yolov8n.pt"))
    p.add_argument("--out", type=Path, default=REPO / "bench-results" / "pipeline.json")
    p.add_argument("--sample-fps", type=float, default=1.0)
    p.add_argument("--max-frames", type=int, default=0, help="bound analysed frames per clip (0 = all sampled)")
    p.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is reported")
    p.add_argument("--text-seconds", type=int, default=32, help="length of the generated text clip")
    p.add_argument("--notext-seconds", type=int, default=40,
                   help="length of the 1280x720 clip without text (40: all of the sample)")
    p.add_argument("--long-factor", type=int, default=10, help="the long clip is the sample this many times over")
    p.add_argument("--skip-rss", action="store_true")
    p.add_argument("--baseline", choices=("both", *BASELINES), default="omp_thread_limit_1",
                   help="which baseline(s) to run, each in its own process (default: OMP_THREAD_LIMIT=1, "
                        "the faster of the two, so the harder one to beat)")
    p.add_argument("--isa", choices=sorted(ISA_CAPS), default=None,
                   help="cap every library's instruction set (an AVX2-only CPU's stand-in; see above)")
    p.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    p.add_argument("--baseline-child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--baseline-omp", default="1", help=argparse.SUPPRESS)
    p.add_argument("--expert-child", nargs=4, default=None, help=argparse.SUPPRESS)
    p.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--parity-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.isa and os.environ.get(ISA_ENV) != args.isa:  # the switches are read when the libraries load
        argv = sys.argv[1:] if argv is None else argv
        os.execve(sys.executable, [sys.executable, __file__, *argv], isa_cap_environment(args.isa))
    if args.parity_child:
        parity_child(args.parity_child, args.model, args.sample_fps, args.max_frames)
        return 0
    if args.rss_child:
        rss_child(args.rss_child, args.model, args.cache, args.sample_fps)
        return 0
    if args.baseline_child:
        baseline_child(args.baseline_child, args.model, args.sample_fps, args.max_frames, args.baseline_omp,
                       args.repeat)
        return 0
    if args.expert_child:
        path, shape, stride, tmp = args.expert_child
        expert_child(path, args.model, shape, int(stride), args.max_frames, args.repeat, tmp)
        return 0

    import logging

    logging.getLogger("ultralytics").setLevel(logging.WARNING)
    import pytesseract

    from videojobs.common.config import load_settings
    from videojobs.worker.pipeline.ocr import tesseract_version

    settings = load_settings(model=args.model)
    report: dict = {"load_average_at_start": [round(v, 2) for v in os.getloadavg()], "cpu_count": os.cpu_count(), "cpu_model": cpu_model(), "usable_cores": len(os.sched_getaffinity(0)),
                    "inference_threads": settings.effective_inference_threads, "model": Path(args.model).name,
                    "sample_fps": args.sample_fps, "repeat": args.repeat,
                    "tesseract": {"pipeline_tesserocr": tesseract_version(),
                                  "baseline_cli": pytesseract.get_tesseract_version().base_version}}
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp_name:
        tmp = Path(tmp_name)
        cache = tmp / "models"
        clips_in = {
            "sample": args.sample,
            "text_1280x720": make_text_clip(tmp / "text-1280x720.avi", args.text_seconds),
            "notext_1280x720": make_scaled_clip(args.sample, tmp / "notext-1280x720.mp4", (1280, 720),
                                                args.notext_seconds),
        }
        service = build_service(args.model, cache)
        # Warm-up: export, auto's measurement, compile and Tesseract start are one-off costs per shape.
        prepare = {}
        for name, path in clips_in.items():
            run_pipeline(service, path, args.sample_fps, 2)
            prepare[name] = round(service.last_timings.get("detector_prepare", 0.0), 2)
        # Where the runtime's default precision is not f32 (OpenVINO with AMX or AVX-512 BF16: bf16), (b) also
        # runs with VIDEOJOBS_DETECTOR_PRECISION=f32: what exact agreement costs.
        service_f32 = None
        if run_pipeline(service, args.sample, args.sample_fps, 1)["model"]["precision"] != "f32":
            service_f32 = build_service(args.model, cache, precision="f32")
            for path in clips_in.values():
                run_pipeline(service_f32, path, args.sample_fps, 2)

        kinds = list(BASELINES) if args.baseline == "both" else [args.baseline]
        clips = {}
        for name, path in clips_in.items():
            # Interleaved, one run of each per round: a change in the machine's load hits both sides alike.
            a_runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
            b_runs = []
            for _ in range(args.repeat):
                for kind in kinds:
                    a_runs[kind].append(measure_baseline(kind, path, args.model, args.sample_fps, args.max_frames, 1))
                b_runs.append(run_pipeline(service, path, args.sample_fps, args.max_frames))
            baselines = {kind: median_run(runs) for kind, runs in a_runs.items()}
            b = median_run(b_runs)
            n = len(b["frames"])
            t = b["timings"]
            b_fps = n / b["seconds"]
            clip = {
                "frames": n,
                "b_model": b["model"],
                "b_first_run_prepare_s": prepare[name],
                "b_frames_per_s": round(b_fps, 2),
                "b_runs_s": b["runs"],
                "b_stage_ms_per_frame": {
                    k: round(t[k] * 1000 / n, 2) for k in ("decode", "detect", "track", "ocr", "write")
                },
                "b_wall_ms_per_frame": round(b["seconds"] * 1000 / n, 2),
                # CPU of every thread (detector streams, decoder, OCR) per frame, and the cores that makes
                "b_cpu_ms_per_frame": round(b["cpu_seconds"] * 1000 / n, 2),
                "b_cores_used": round(b["cpu_seconds"] / b["seconds"], 2),
                "b_frames_decoded": int(t.get("frames_decoded", 0)),
                "b_ocr_frames_read": int(t.get("ocr_frames_read", 0)),
                "b_ocr_frames_reused": int(t.get("ocr_frames_reused", 0)),
                "baselines": {},
            }
            for kind, a in baselines.items():
                a_fps = len(a["frames"]) / a["seconds"]
                # Each round's own ratio too: (a) and (b) of one round ran back to back, so a drift of the
                # machine's speed between rounds cancels in it, where the ratio of the medians mixes rounds.
                rounds = [(len(rb["frames"]) / rb["seconds"]) / (len(ra["frames"]) / ra["seconds"])
                          for ra, rb in zip(a_runs[kind], b_runs)]
                clip["baselines"][kind] = {
                    "label": BASELINES[kind][0],
                    "omp_thread_limit": a["omp_thread_limit"],
                    "a_backend": a["backend"],
                    "a_input_shape": a["input_shape"],
                    "a_frames_per_s": round(a_fps, 2),
                    "a_runs_s": a["runs"],
                    "ratio_b_over_a": round(b_fps / a_fps, 2),
                    "ratio_b_over_a_rounds": [round(r, 2) for r in rounds],
                    "ratio_b_over_a_median_of_rounds": round(median(rounds), 2),
                    "agreement": agreement(a, b),
                }
            if service_f32 is not None:
                f32 = median_run([run_pipeline(service_f32, path, args.sample_fps, args.max_frames)
                                  for _ in range(args.repeat)])
                f32_fps = len(f32["frames"]) / f32["seconds"]
                clip["b_f32"] = {
                    "frames_per_s": round(f32_fps, 2),
                    "runs_s": f32["runs"],
                    "stage_ms_per_frame": {k: round(f32["timings"][k] * 1000 / n, 2)
                                           for k in ("decode", "detect", "ocr")},
                    "baselines": {kind: {"ratio_b_over_a": round(f32_fps / (len(a["frames"]) / a["seconds"]), 2),
                                         "agreement": agreement(a, f32)} for kind, a in baselines.items()},
                }
            clip["ocr_engine_parity"] = ocr_engine_parity(path, b, args.sample_fps, args.max_frames)
            clip["detector_parity"] = detector_parity(path, args.model, baselines[kinds[0]], b, args.sample_fps,
                                                      args.max_frames)
            clip["yolo_vs_expert"] = yolo_vs_expert(service, path, args, tmp)
            clips[name] = clip
        report["clips"] = clips
        service.close()
        if args.isa:
            report["isa_cap"] = isa_cap_report(args.isa)
        b_model = clips["sample"]["b_model"]
        if b_model["backend"] == "openvino":  # the kernels (b)'s forward ran, at its precision
            report["detector_kernels"] = {"precision": b_model["precision"],
                                          "layers": openvino_layer_kernels(cache, b_model["precision"])}

        if not args.skip_rss:
            long_clip = make_repeated_clip(args.sample, tmp / "long.mp4", args.long_factor)
            short_clip = make_repeated_clip(args.sample, tmp / "short.mp4", 1)
            rss = {
                "sample_h264_40s": measure_rss(args.sample, args.model, cache, args.sample_fps),
                "mp4v_40s": measure_rss(short_clip, args.model, cache, args.sample_fps),
                f"mp4v_{40 * args.long_factor}s": measure_rss(long_clip, args.model, cache, args.sample_fps),
            }
            s, l_ = rss["mp4v_40s"]["peak_rss_mib"], rss[f"mp4v_{40 * args.long_factor}s"]["peak_rss_mib"]
            rss["long_over_short"] = round(l_ / s, 3)
            report["peak_rss"] = rss

    report["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_summary(report)
    print(f"\nwritten: {args.out}")
    return 0


def yolo_vs_expert(service, path: Path, args, tmp: Path) -> dict:
    """The yolo pipeline on every k-th frame against (c) on the same frames, and against the bare forward."""
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    ok, first = cap.read()
    cap.release()
    stride = max(1, round(fps / args.sample_fps)) if args.sample_fps > 0 else 1
    shape = service.detector.input_shape(first.shape[:2], 640)
    folder = tmp / f"expert-{path.stem}"
    folder.mkdir()

    def paired(run: dict) -> dict:
        # The bare forward per frame over a batch as the pipeline sends them (its batch size), so a runtime
        # that runs several frames side by side (OpenVINO streams) is measured as the pipeline uses it.
        forward = service.detector.forward_seconds(first, repeat=10, frames=service.batch_size)
        return run | {"bare_forward_s": forward, "ratio": run["seconds"] / len(run["frames"]) / forward}

    def rounds_of(rounds: list[dict]) -> dict:
        return {"ratio_to_bare_forward": round(median([r["ratio"] for r in rounds]), 3),
                "ratio_to_bare_forward_rounds": [round(r["ratio"], 3) for r in rounds],
                "bare_forward_rounds_ms": [round(r["bare_forward_s"] * 1000, 2) for r in rounds]}

    # Interleaved, as for (a) and (b); and the bare forward measured right after each yolo run, so each
    # round's ratio compares the two at the same machine speed (a shared machine's speed drifts by a
    # half between minutes), and the reported ratio is the median of the rounds' ratios.
    yolo_rounds, c_runs = [], []
    for _ in range(args.repeat):
        yolo_rounds.append(paired(run_pipeline(service, path, fps / stride, args.max_frames, "yolo")))
        c_runs.append(_child(["--expert-child", str(path), f"{shape[0]}x{shape[1]}", str(stride), str(folder),
                              "--model", args.model, "--max-frames", str(args.max_frames), "--repeat", "1"]))
    yolo, c = median_run(yolo_rounds), median_run(c_runs)
    shape = yolo["model"]["input_shape"]
    n = len(yolo["frames"])
    per = yolo["seconds"] / n
    c_fps = c["frames"] / c["seconds"]
    # The same pipeline analysing every frame (the first 4n): no frame decoded only to reach the next
    # sample, so what remains over the bare forward is the pipeline's own work per frame.
    every_rounds = [paired(run_pipeline(service, path, 0, 4 * n, "yolo")) for _ in range(args.repeat)]
    every = median_run(every_rounds)
    every_per = every["seconds"] / len(every["frames"])
    # The decoding these frames need, alone, against the bare forward's CPU (its time per frame on all
    # its threads): the share of the cores that decoding takes from the forward at this sampling.
    decoding = decode_alone(path, fps / stride, args.max_frames, service.decode_threads, args.repeat)
    forward_core_ms = median([r["bare_forward_s"] for r in yolo_rounds]) * 1000 * service.detector.threads
    return {
        "vid_stride": stride,
        "frames": n,
        "input_shape": shape,
        # The same number of frames, one every `stride`, so the same decoding work; Ultralytics keeps
        # the last frame of each stride (29, 59, ...), the pipeline's plan the first (0, 30, ...).
        "yolo_frame_indices": sorted(yolo["frames"])[:3],
        "c_frame_indices": sorted(int(k) for k in c["detections"])[:3],
        "yolo_frames_per_s": round(n / yolo["seconds"], 2),
        "yolo_runs_s": yolo["runs"],
        "c_frames_per_s": round(c_fps, 2),
        "c_runs_s": c["runs"],
        "c_export_s": max(r["export_seconds"] for r in c_runs),
        "ratio_yolo_over_c": round((n / yolo["seconds"]) / c_fps, 3),
        "yolo_ms_per_frame": round(per * 1000, 2),
        "bare_forward_ms": round(median([r["bare_forward_s"] for r in yolo_rounds]) * 1000, 2),
        **rounds_of(yolo_rounds),
        "every_frame": {"frames": len(every["frames"]), "ms_per_frame": round(every_per * 1000, 2),
                        **rounds_of(every_rounds),
                        "frames_decoded": int(every["timings"].get("frames_decoded", 0))},
        "stage_ms_per_frame": {k: round(yolo["timings"][k] * 1000 / n, 2) for k in ("decode", "detect", "track",
                                                                                    "write")},
        "decode_alone": decoding | {"forward_threads": service.detector.threads,
                                    "over_bare_forward_core_ms": round(decoding["core_ms_per_frame"] / forward_core_ms, 3)},
        "frames_decoded": int(yolo["timings"].get("frames_decoded", 0)),
    }


def isa_cap_report(isa: str) -> dict:
    """What a cap reached, in each library's own words (OpenVINO's: the report's detector_kernels)."""
    import torch
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    return {"isa": isa, "environment": ISA_CAPS[isa],
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "opencv_cpu_features": cv2.getCPUFeaturesLine(),  # a "?" marks a level switched off
            "numpy_dispatch_levels": {name: bool(__cpu_features__.get(name)) for name in __cpu_dispatch__}}


def openvino_layer_kernels(cache: Path, precision: str) -> dict:
    """The JIT kernel OpenVINO's CPU plugin chose for each layer of the pipeline's exported model(s), counted
    by (layer type, kernel): which instruction set the forward runs (e.g. brgconv_avx512_amx_bf16)."""
    import openvino as ov

    kernels: Counter = Counter()
    for xml in sorted(cache.rglob("*.xml")):
        compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": precision})
        for op in compiled.get_runtime_model().get_ops():
            rt = op.get_rt_info()
            kind = rt["primitiveType"].astype(str) if "primitiveType" in rt else ""
            if "avx" in kind or "sse" in kind:  # kernels for an instruction set (AMX's: avx512_amx_*)
                kernels[f"{rt['layerType'].astype(str)}: {kind}"] += 1
    return dict(sorted(kernels.items()))



def print_summary(r: dict) -> None:
    print(f"CPU: {r['cpu_model']}  cores: {r['cpu_count']} (usable {r['usable_cores']}), inference threads "
          f"{r['inference_threads']}  model: {r['model']}  sample_fps: {r['sample_fps']}  medians of {r['repeat']}")
    print(f"Tesseract: pipeline {r['tesseract']['pipeline_tesserocr']} (tesserocr), baseline "
          f"{r['tesseract']['baseline_cli']} (CLI); load average (1, 5, 15 min) at start {r['load_average_at_start']}, "
          f"at end {r['load_average_at_end']}")
    if "isa_cap" in r:
        cap = r["isa_cap"]
        print(f"Instruction set capped at {cap['isa']}: PyTorch {cap['torch_cpu_capability']}, OpenCV "
              f"{cap['opencv_cpu_features']}, NumPy {cap['numpy_dispatch_levels']}")
    if "detector_kernels" in r:
        k = r["detector_kernels"]
        print(f"OpenVINO kernels by layer of (b)'s forward ({k['precision']}): {k['layers']}")
    for name, c in r["clips"].items():
        m = c["b_model"]
        choice = m.get("backend_choice") or {}
        print(f"\n[{name}] {c['frames']} frames; b runs {m['backend']} ({m['precision']}, {m['threads']} threads) at "
              f"{m['input_shape'][0]}x{m['input_shape'][1]}; auto measured {choice.get('forward_ms')} ms "
              f"(first-run prepare {c['b_first_run_prepare_s']} s)")
        print(f"  b {c['b_frames_per_s']:.2f} frames/s, {c['b_wall_ms_per_frame']} ms/frame (runs {c['b_runs_s']} s); "
              f"stages (ms/frame): {c['b_stage_ms_per_frame']}")
        print(f"  b CPU {c['b_cpu_ms_per_frame']} core-ms/frame over all its threads = {c['b_cores_used']} cores busy")
        print(f"  b decoded {c['b_frames_decoded']} frames for {c['frames']} analysed; OCR frames read "
              f"{c['b_ocr_frames_read']}, reused (identical to the last) {c['b_ocr_frames_reused']}")
        for kind, v in c["baselines"].items():
            ag = v["agreement"]
            print(f"  (a) {v['label']}: {v['a_backend']} at {v['a_input_shape']}, {v['a_frames_per_s']:.2f} frames/s "
                  f"(runs {v['a_runs_s']} s)   b/a = {v['ratio_b_over_a']:.2f}x (of the medians; each round's "
                  f"{v['ratio_b_over_a_rounds']}, median {v['ratio_b_over_a_median_of_rounds']:.2f}x)")
            print(f"    detections a={ag['detections_a']} b={ag['detections_b']} matched={ag['detections_matched']}"
                  f" agreement={ag['detection_agreement']:.4f}")
            print(f"    OCR words a={ag['ocr_words_a']} b={ag['ocr_words_b']} matched={ag['ocr_words_matched']}"
                  f" agreement={ag['ocr_word_agreement']:.4f}; frames with the same words "
                  f"{ag['ocr_frames_same_words']}/{ag['frames_compared']}")
            print(f"    OCR words of (a) through the service's default line filter: a={ag['ocr_words_a_kept']} "
                  f"b={ag['ocr_words_b']} matched={ag['ocr_words_matched_kept']} "
                  f"agreement={ag['ocr_word_agreement_kept']:.4f}; frames with the same words "
                  f"{ag['ocr_frames_same_words_kept']}/{ag['frames_compared']}")
        if "b_f32" in c:
            f = c["b_f32"]
            for kind, v in f["baselines"].items():
                ag = v["agreement"]
                print(f"  b with VIDEOJOBS_DETECTOR_PRECISION=f32: {f['frames_per_s']:.2f} frames/s (runs {f['runs_s']} s), "
                      f"stages {f['stage_ms_per_frame']}; b/a = {v['ratio_b_over_a']:.2f}x; detections a="
                      f"{ag['detections_a']} b={ag['detections_b']} matched={ag['detections_matched']} "
                      f"agreement={ag['detection_agreement']:.4f}; OCR words matched {ag['ocr_words_matched']}"
                      f"/{ag['ocr_words_a']}")
        p = c["ocr_engine_parity"]
        print(f"  OCR engine parity (pytesseract on the same decoded pixels, no JPEG): words "
              f"{p['words_pytesseract_raw_frame']} vs pipeline {p['words_pipeline']}, matched {p['words_matched']}; "
              f"frames with the same words {p['frames_same_words']}/{p['frames']}; through the service's default "
              f"line filter {p['words_pytesseract_kept']} words, matched {p['words_matched_kept']}, frames with the "
              f"same words {p['frames_same_words_kept']}/{p['frames']}")
        d = c["detector_parity"]
        print(f"  Detector parity (Ultralytics predict, PyTorch, on the same decoded pixels, no JPEG): detections "
              f"{d['detections_a']} vs pipeline {d['detections_b']}, matched {d['detections_matched']}, agreement "
              f"{d['detection_agreement']:.4f}")
        lost = d["a_missed_by_pipeline"]
        if lost:
            on_raw = sum(m["ultralytics_finds_it_on_raw_pixels"] for m in lost)
            where = ", ".join(f"frame {m['frame']} class {m['class']}" for m in lost)
            print(f"  (a)'s detections the pipeline misses: {len(lost)} ({where}); "
                  f"Ultralytics' predict finds {on_raw} of them on the same frames without the JPEG round trip, "
                  f"and {d['a_matched_by_ultralytics_on_raw_pixels']}/{d['a_detections']} of (a)'s detections "
                  f"there (what a detector equal to Ultralytics' own would match)")
        y = c["yolo_vs_expert"]
        print(f"  yolo pipeline vs (c) Ultralytics+OpenVINO stream, vid_stride={y['vid_stride']}, {y['frames']} frames "
              f"at {y['input_shape']} (frames {y['yolo_frame_indices']}... vs {y['c_frame_indices']}...): yolo "
              f"{y['yolo_frames_per_s']} frames/s (runs {y['yolo_runs_s']} s), (c) {y['c_frames_per_s']} frames/s "
              f"(runs {y['c_runs_s']} s) -> {y['ratio_yolo_over_c']}x")
        print(f"  yolo {y['yolo_ms_per_frame']} ms/frame, {y['ratio_to_bare_forward']}x the bare forward "
              f"(median of the rounds' {y['ratio_to_bare_forward_rounds']}, each against the forward measured right "
              f"after it: {y['bare_forward_rounds_ms']} ms); stages {y['stage_ms_per_frame']}; "
              f"decoded {y['frames_decoded']} frames")
        d = y["decode_alone"]
        print(f"  decoding alone for these frames ({d['frames_decoded']} decoded for {d['frames']}): "
              f"{d['core_ms_per_frame']} core-ms per analysed frame = {d['over_bare_forward_core_ms']} of the bare "
              f"forward's CPU ({y['bare_forward_ms']} ms on {d['forward_threads']} threads)")
        e = y["every_frame"]
        print(f"  yolo on every frame (the first {e['frames']}, {e['frames_decoded']} decoded): {e['ms_per_frame']} ms/frame, "
              f"{e['ratio_to_bare_forward']}x the bare forward (rounds {e['ratio_to_bare_forward_rounds']})")
    if "peak_rss" in r:
        print("\n[peak RSS, yolo_ocr in its own process]")
        for k, v in r["peak_rss"].items():
            print(f"  {k}: {v}")


if __name__ == "__main__":
    sys.exit(main())
