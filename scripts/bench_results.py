#!/usr/bin/env python3
"""Memory and time of a long job's results: the worker's merge, the api's document, the gateway's unpaged answer.

A results document of N frames (each like the sample clip's: two detections and an OCR line) is
written once; then, each in a child process of its own (so each peak is its own):

  merge, before  every segment output parsed, then the whole document built and serialised, as the
                 worker's merge did (the same tracking, all frames held as objects)
  merge, now     the worker's merge (VideoFilePipelineService.merge_segments): a segment at a time,
                 tracked frames spooled to a temporary file
  api, before    the stored document parsed whole (ResultsDocument), as the api kept it per job
  api, now       the document indexed (IndexedResults): its JSON and each frame's span
  api, ranged    the document indexed as the api indexes one longer than a quarter of its results cache:
                 read in chunks, only the spans kept, each page read back from storage (a local folder here)
  gateway, before  every page of the unpaged answer gathered into one document, as the gateway did
  gateway, now     the unpaged answer streamed a page at a time (the route's own generator)

The merges get segment outputs of 304 frames (the default VIDEOJOBS_SEGMENT_FRAMES) made from the
same frames, with the detections the tracker is fed; their documents are checked equal. The gateway
children get their pages from a stub that answers GetResults from the indexed document, so what they
measure is the gateway's own work. Prints a table and writes JSON.

    .venv/bin/python scripts/bench_results.py                     # 10,000 and 100,000 frames
    .venv/bin/python scripts/bench_results.py --frames 2500 --out /tmp/r.json
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = ("merge-before", "merge-now", "api-before", "api-now", "api-ranged", "gateway-before", "gateway-now")
SEGMENT_FRAMES = 304


def document_bytes(frames: int) -> bytes:
    """A valid results document of `frames` frames (serialised by the model, as the worker writes it)."""
    from videojobs.common.options import AnalysisOptions
    from videojobs.common.results import (Box, Detection, FrameAnalysis, FrameResult, ModelInfo, OcrLine, Provenance,
                                          ResultsDocument, Sampling, VideoMetadata)

    box, norm = Box(x1=101.25, y1=40.5, x2=220.75, y2=330.0), Box(x1=0.1582, y1=0.1125, x2=0.3449, y2=0.9167)
    template = FrameResult(frame_index=0, timestamp_ms=0.0, result=FrameAnalysis(
        detections=[Detection(class_id=39, class_name="bottle", confidence=0.8731, box=box, box_norm=norm, track_id=1),
                    Detection(class_id=0, class_name="person", confidence=0.4412, box=box, box_norm=norm, track_id=2)],
        text="BEST BEFORE 2027",
        ocr=[OcrLine(text="BEST BEFORE 2027", confidence=0.91, box=box, detection_index=0)]))
    frame_json = template.model_dump_json()
    head = ResultsDocument(
        pipeline_id="yolo_ocr",
        video=VideoMetadata(width=640, height=360, fps=30.0, frame_count=frames, duration_ms=round(frames * 1000 / 30, 3),
                            codec="avc1", container="iso-bmff"),
        sampling=Sampling(sample_fps=30.0, frame_step=1.0, max_frames=0, frames_analysed=frames,
                          requested_sample_fps=0.0, every_frame=True),
        provenance=Provenance(model=ModelInfo(file="yolov8n.pt", sha256="0" * 64, backend="openvino",
                                              input_shape=[384, 640]), options=AnalysisOptions(sample_fps=0)),
        results=[]).model_dump_json()
    before, after = head.split('"results":[]')
    parts = []
    for i in range(frames):
        parts.append(frame_json.replace('"frame_index":0,"timestamp_ms":0.0',
                                        f'"frame_index":{i},"timestamp_ms":{round(i * 1000 / 30, 3)}', 1))
    return f'{before}"results":[{",".join(parts)}]{after}'.encode()


def segment_parts(path: Path, segment_frames: int = SEGMENT_FRAMES):
    """The stored document's frames as the segment outputs a split job leaves, one at a time (bytes),
    without track ids and with the detections the tracker is fed."""
    from videojobs.common.results import IndexedResults
    from videojobs.worker.pipeline.service import SegmentOutput

    document = IndexedResults.from_bytes(path.read_bytes(), check=False)
    header = document.page(0, 0)
    for first in range(0, len(document), segment_frames):
        frames = [f.model_copy(update={"result": f.result.model_copy(update={
            "detections": [d.model_copy(update={"track_id": None}) for d in f.result.detections]})})
            for f in document.frames(first, first + segment_frames)]
        rows = [[[d.box.x1, d.box.y1, d.box.x2, d.box.y2, d.confidence, float(d.class_id)]
                 for d in f.result.detections] for f in frames]
        yield SegmentOutput(first_sample=first, end_sample=first + len(frames), fps=header.video.fps,
                            frame_count=header.video.frame_count, video=header.video, provenance=header.provenance,
                            class_names={0: "person", 39: "bottle"}, frames=frames, detections=rows).to_bytes()


def _merge_whole(parts: list[bytes], options) -> bytes:
    """The worker's former merge: every output parsed first and kept, the whole document built, then
    serialised (with the tracking of the merge now)."""
    from videojobs.common.pipelines import get_pipeline
    from videojobs.common.results import ResultsDocument
    from videojobs.worker.pipeline.service import _Merge

    merge = _Merge(get_pipeline("yolo_ocr"), options)
    outputs = [merge.parse(part) for part in parts]
    frames = []
    for output in outputs:
        frames.extend(merge.add(output))
    merge.frames = len(frames)
    return ResultsDocument(**{**dict(merge.header()), "results": frames}).to_bytes(), len(frames)


def peak_mib() -> float:
    return _status("VmHWM")


def reset_peak() -> None:
    """Start this process's peak (VmHWM) again from its resident memory now (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def rss_mib() -> float:
    return _status("VmRSS")


def _status(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


class PagesStub:
    """GetResults answered from an indexed document, as the api answers it."""

    def __init__(self, results) -> None:
        self.results = results
        self.calls = 0

    async def GetResults(self, request, metadata=None):  # noqa: N802 - the gRPC method's name
        from videojobs.common import wire
        from videojobs.common.job import JobStatus
        from videojobs.common.results import page_bounds

        self.calls += 1
        start, end, token = page_bounds(len(self.results), request.page_size, request.page_token)
        return wire.results_page_to_pb(request.job_id, JobStatus.COMPLETED, self.results.page(start, end),
                                       len(self.results), token)


async def _gather_all(stub) -> int:
    """The gateway's former unpaged answer: every page's frames in one list, then the whole answer."""
    from videojobs.common import wire
    from videojobs.common.results import MAX_PAGE_SIZE, JobResults
    from videojobs.v1 import jobs_pb2

    first = await stub.GetResults(jobs_pb2.GetResultsRequest(job_id="j", page_size=MAX_PAGE_SIZE))
    document = wire.results_page_from_pb(first)
    frames, token = list(document.results), first.next_page_token
    while token:
        page = await stub.GetResults(jobs_pb2.GetResultsRequest(job_id="j", page_size=MAX_PAGE_SIZE,
                                                                page_token=token))
        frames.extend(wire.results_page_from_pb(page).results)
        token = page.next_page_token
    answer = JobResults(job_id="j", status=wire.status_from_pb(first.status),
                        **dict(document.model_copy(update={"results": frames})), next_page_token="",
                        total_size=first.total_size)
    return len(answer.model_dump_json())


async def _stream_all(stub) -> int:
    """The gateway's unpaged answer now: the route's own generator, consumed as uvicorn would send it."""
    from videojobs.common import wire
    from videojobs.common.results import MAX_PAGE_SIZE
    from videojobs.gateway.app import _whole_results
    from videojobs.v1 import jobs_pb2

    first = await stub.GetResults(jobs_pb2.GetResultsRequest(job_id="j", page_size=MAX_PAGE_SIZE))
    size = 0
    async for chunk in _whole_results(stub, first, wire.results_page_from_pb(first), ()):
        size += len(chunk)
    return size


def prepare(path: Path, frames: int) -> None:
    """Write the document of `frames` frames at `path`, and beside it (``.parts``) its segment outputs,
    one a line."""
    path.write_bytes(document_bytes(frames))
    with path.with_suffix(".parts").open("wb") as parts:
        parts.writelines(part + b"\n" for part in segment_parts(path))


def measure(mode: str, path: Path) -> dict:
    """One mode, in this process: the peak and the resident memory it added, and its time."""
    import videojobs.gateway.app  # noqa: F401 - imported before the baseline: its modules are not the work measured
    from videojobs.api.service import index_stored_results
    from videojobs.storage.local import LocalFolderStorage
    from videojobs.common.results import IndexedResults, ResultsDocument

    # The gateway's pages come from the api's side, the merges' parts from a split job: set up before the baseline.
    stub = PagesStub(IndexedResults.from_bytes(path.read_bytes(), check=False)) if mode.startswith("gateway") else None
    if mode.startswith("merge"):
        from videojobs.common.options import AnalysisOptions
        from videojobs.worker.pipeline.service import VideoFilePipelineService

        parts_file = path.with_suffix(".parts")
        options = AnalysisOptions(sample_fps=0)
        merger = VideoFilePipelineService(model="unused.pt", scratch_dir=path.parent)
        _merge_whole([next(segment_parts(path))], options)  # the tracker's imports, before the baseline
    reset_peak()  # what the set-up above peaked at is not the mode's
    base_peak, base_rss = peak_mib(), rss_mib()
    started = time.perf_counter()
    out: dict = {"mode": mode}
    if mode.startswith("merge"):  # the parts are read one at a time, as the worker reads them from storage
        with parts_file.open("rb") as lines:
            if mode == "merge-before":  # (the worker read every part before it merged)
                data, out["frames"] = _merge_whole(list(lines), options)
                out["sha256"] = hashlib.sha256(data).hexdigest()
            else:
                with merger.merge_segments("yolo_ocr", options, lines) as merged:
                    out["frames"] = merged.frames
                    out["sha256"] = hashlib.file_digest(merged.rewound(), "sha256").hexdigest()
        kept = None
    elif mode == "api-before":  # the stored bytes are read, parsed, and dropped: the objects stay
        kept = ResultsDocument.from_bytes(path.read_bytes())
        out["frames"] = len(kept.results)
    elif mode in ("api-now", "api-ranged"):  # the stored bytes stay, with the index; or only the index
        if mode == "api-now":
            kept = IndexedResults.from_bytes(path.read_bytes())
        else:
            kept = index_stored_results(LocalFolderStorage(path.parent), path.name, keep_whole_bytes=0)
        out["frames"] = len(kept)
        out["load_seconds"] = round(time.perf_counter() - started, 2)
        t = time.perf_counter()
        kept.page(len(kept) // 2, len(kept) // 2 + 1000)
        out["page_of_1000_ms"] = round((time.perf_counter() - t) * 1000, 1)
    else:
        out["answer_bytes"] = asyncio.run((_gather_all if mode == "gateway-before" else _stream_all)(stub))
        out["frames"] = len(stub.results)
        kept = None
    out["seconds"] = round(time.perf_counter() - started, 2)
    out["peak_added_mib"] = round(peak_mib() - base_peak, 1)
    out["resident_added_mib"] = round(rss_mib() - base_rss, 1)  # what stays while the document is kept (api)
    del kept
    return out


def run_child(mode: str, path: Path) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); from pathlib import Path; "
            f"from scripts.bench_results import measure; print(json.dumps(measure({mode!r}, Path({str(path)!r}))))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if run.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, action="append", help="frames in the document (repeatable)")
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench-results.json")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for frames in args.frames or [10_000, 100_000]:
            path = Path(tmp) / f"results-{frames}.json"
            prepare(path, frames)
            json_mib = round(path.stat().st_size / 2**20, 1)
            for mode in MODES:
                row = {"json_mib": json_mib, **run_child(mode, path)}
                rows.append(row)
                print(f"{frames:>8} frames  {json_mib:>6} MiB JSON  {mode:15s} peak +{row['peak_added_mib']:>7} MiB  "
                      f"kept +{row['resident_added_mib']:>7} MiB  {row['seconds']:>6} s", flush=True)
            merges = [r for r in rows[-len(MODES):] if r["mode"].startswith("merge")]
            if len({r["sha256"] for r in merges}) != 1 or any(r["frames"] != frames for r in merges):
                raise SystemExit(f"the merges' documents differ: {merges}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
