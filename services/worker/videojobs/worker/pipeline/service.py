"""VideoFilePipelineService: runs yolo_ocr / yolo / ocr over one local video file."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable, Iterator, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict

from videojobs.common.errors import InvalidOptions, JobInterrupted, PoisonInput, out_of_space_is_temporary
from videojobs.common.formats import SNIFF_BYTES, sniff
from videojobs.common.observability import logs, tracing
from videojobs.common.options import AnalysisOptions
from videojobs.common.pipelines import Pipeline, Stage, get_pipeline
from videojobs.common.ports.analysis import (
    AnalyzerCapabilities,
    FrameCallback,
    ResultsFile,
    ProgressCallback,
    SegmentRange,
    SplitPlan,
    StopCheck,
    VideoAnalyzer,
)
from videojobs.common import results
from videojobs.common.results import Detection, FrameResult, ModelInfo, Provenance, ResultsDocument, VideoMetadata
from videojobs.common.segments import SkippedSegment, split_samples
from videojobs.worker.metrics import observe_stage
from videojobs.worker.pipeline import document as doc
from videojobs.worker.pipeline.detector import Detector, PendingDetections
from videojobs.worker.pipeline.noise import quiet_third_party
from videojobs.worker.pipeline.ocr import (
    OcrEngine,
    OcrLine,
    OcrPool,
    installed_languages,
    is_worth_reading,
    tesseract_version,
)
from videojobs.worker.pipeline.tracking import TRACK_LOW_CONFIDENCE, JobTracker
from videojobs.worker.pipeline.video import FrameReader, SamplingPlan

DEFAULT_BATCH_SIZE = 8
# Decoded frames (BGR) a batch may hold: a job holds about four batches at once (the decoder's queue of two,
# the batch being read, the one in flight), so larger frames make smaller batches and a job's frames stay
# near 256 MiB whatever their size: 8 frames of 1920x1080, 2 of 3840x2160, 1 of 7680x4320 (95 MiB).
BATCH_BYTES = 64 * 2**20
_tracer = tracing.tracer(__name__)


class SegmentOutput(BaseModel):
    """What one segment leaves for the merge (``segments/{job_id}/{index}.json``).

    ``frames`` are the segment's results without track ids; ``detections`` are, per frame,
    every detection the tracker is fed (``x1, y1, x2, y2, confidence, class_id`` as floats,
    down to the tracker's low threshold), so the merge runs the tracker exactly as one pass
    would. ``fps`` and ``frame_count`` are the decoder's, unrounded, to rebuild the plan.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    first_sample: int
    end_sample: int
    fps: float
    frame_count: int
    video: VideoMetadata
    provenance: Provenance
    class_names: dict[int, str]
    frames: list[FrameResult]
    detections: list[list[list[float]]]

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode("utf-8")


def library_versions() -> dict[str, str]:
    """Versions of everything that shapes the results, for provenance."""
    import cv2
    import onnxruntime
    import openvino
    import torch
    import ultralytics

    def dist(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return ""

    return {
        "videojobs": dist("videojobs"),
        "ultralytics": ultralytics.__version__,
        "opencv": cv2.__version__,
        "tesseract": tesseract_version(),
        "openvino": openvino.__version__.split("-")[0],
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
    }


class _Merge:
    """The state of a merge of segment outputs given in segment order: the first output's header, the
    tracker, the last frame written and the segments left out."""

    def __init__(self, pipeline: Pipeline, options: AnalysisOptions) -> None:
        self.pipeline, self.options = pipeline, options
        self.head: Optional[SegmentOutput] = None
        self.plan: Optional[SamplingPlan] = None
        self.tracker: Optional[JobTracker] = None
        self.skipped: list[SkippedSegment] = []
        self.starts: set[int] = set()
        self.last_frame = -1
        self.frames = 0  # written so far

    @staticmethod
    def parse(part: bytes) -> "SegmentOutput | SkippedSegment":
        raw = json.loads(part)
        return SkippedSegment.model_validate(raw) if "skipped" in raw else SegmentOutput.model_validate(raw)

    def add(self, item: "SegmentOutput | SkippedSegment") -> list[FrameResult]:
        """The frames of one more part that are new, tracked."""
        if self.starts and item.first_sample < max(self.starts):
            raise ValueError("segment outputs must be merged in segment order")
        self.starts.add(item.first_sample)
        if isinstance(item, SkippedSegment):
            self.skipped.append(item)
            return []
        if self.head is None:
            self.head = item.model_copy(update={"frames": [], "detections": []})
            self.plan = SamplingPlan(item.frame_count, item.fps, self.options.sample_fps, self.options.max_frames)
            if self.pipeline.runs(Stage.TRACK):
                self.tracker = JobTracker(self.plan.effective_sample_fps)
        frames = []
        for frame, rows in zip(item.frames, item.detections):
            if frame.frame_index <= self.last_frame:  # given before
                continue
            self.last_frame = frame.frame_index
            frames.append(self._tracked(frame, rows) if self.tracker is not None else frame)
        return frames

    def _tracked(self, frame: FrameResult, rows: list[list[float]]) -> FrameResult:
        arr = np.array(rows, dtype=np.float64).reshape(-1, 6)
        reported = arr[:, 4] >= self.options.min_confidence
        ids = self.tracker.update(arr, reported, frame.frame_index, frame.timestamp_ms)
        detections = [d.model_copy(update={"track_id": t}) for d, t in zip(frame.result.detections, ids)]
        return frame.model_copy(update={"result": frame.result.model_copy(update={"detections": detections})})

    def header(self) -> ResultsDocument:
        """The document without its frames (``results`` empty), once every part was added."""
        head, plan = self.head, self.plan
        if head is None or plan is None:
            if self.skipped:
                raise PoisonInput("no range of the video could be decoded: " + self.skipped[0].skipped.reason)
            raise ValueError("no segment outputs to merge")
        sampling = plan.sampling(self.frames).model_copy(update={
            "segments": len(self.starts),
            "skipped_ranges": [k.skipped for k in self.skipped] or None})
        return ResultsDocument(
            pipeline_id=self.pipeline.pipeline_id,
            video=head.video,
            sampling=sampling,
            provenance=head.provenance,
            results=[],
            tracks=self.tracker.summaries(head.class_names) if self.tracker is not None else [],
        )


def _scratch_space() -> ContextManager[None]:
    """A full scratch folder is ``OutOfSpace``: the job is retried once there is room, not failed."""
    return out_of_space_is_temporary("the scratch folder")


class _FrameSpool:
    """A results document written without holding its frames: they go, as they come, to an unnamed
    temporary file (in `scratch_dir`; nothing is left if the process dies) until the document's header,
    which comes before them and counts them, is known; then header, frames and the rest go to a second
    one (``document``)."""

    def __init__(self, scratch_dir: Path) -> None:
        with _scratch_space():
            scratch_dir.mkdir(parents=True, exist_ok=True)
            self._spool = tempfile.TemporaryFile(dir=scratch_dir)
        self._dir = scratch_dir
        self.frames = 0

    def add(self, frames: list[FrameResult]) -> None:
        with _scratch_space():
            self._spool.write(results.frames_json(frames, first=not self.frames).encode())
        self.frames += len(frames)

    def document(self, header: ResultsDocument) -> ResultsFile:
        """The document: `header` (its ``results`` empty) with the frames added."""
        before, after = results.around_results(header)
        with _scratch_space():
            out = tempfile.TemporaryFile(dir=self._dir)
            try:
                out.write(before.encode())
                self._spool.seek(0)
                shutil.copyfileobj(self._spool, out)
                out.write(after.encode())
                out.flush()  # a full disk shows here, not when the file is read back
                out.seek(0)
            except BaseException:
                _discard(out)
                raise
        return ResultsFile(out, self.frames)

    def __enter__(self) -> "_FrameSpool":
        return self

    def __exit__(self, *exc: object) -> None:
        _discard(self._spool)


def _discard(file: Any) -> None:
    """Close a temporary file whose content is no longer wanted: what its buffer still held cannot be
    written to a full disk, and that must not hide the error being handled."""
    with contextlib.suppress(OSError):
        file.close()


class VideoFilePipelineService(VideoAnalyzer):
    """The worker's analysis engine (a ``VideoAnalyzer``).

    Pipelines: ``yolo_ocr`` (detection, tracking and OCR), ``yolo`` (detection and
    tracking), ``ocr`` (text only). The detector is loaded on first use and kept
    for later jobs; each job gets fresh tracker state. One instance runs one job at
    a time (a lock serialises callers); use one instance per worker thread.

    After each run ``last_timings`` holds seconds per stage (decode, detect, track,
    ocr, write, total) and OCR frame counts; they are kept out of the document so
    it stays byte-identical between runs.
    """

    def __init__(
        self,
        model: str,
        model_cache_dir: Path | str = Path("var/models"),
        detector_backend: str = "auto",
        inference_threads: int = 1,
        decode_timeout_seconds: float = 30.0,
        batch_size: int = DEFAULT_BATCH_SIZE,
        tessdata_dir: Optional[str] = None,
        decode_threads: int = 0,
        detector_precision: str = "auto",
        ocr_threads: int = 1,
        scratch_dir: Optional[Path | str] = None,
        model_cache_bytes: int = 0,
    ) -> None:
        quiet_third_party()
        self.detector = Detector(model, Path(model_cache_dir), detector_backend, inference_threads,
                                 precision=detector_precision, cache_bytes=model_cache_bytes)
        self.decode_threads = max(0, int(decode_threads))  # FFmpeg decoder threads; 0: its default
        self.decode_timeout_seconds = float(decode_timeout_seconds)
        self.batch_size = max(1, int(batch_size))
        self.tessdata_dir = tessdata_dir
        self.ocr_threads = max(1, int(ocr_threads))
        # Where a merge's temporary files go (they have no name, so nothing is left if the process dies).
        self.scratch_dir = Path(scratch_dir) if scratch_dir is not None else Path(tempfile.gettempdir())
        self._ocr: Optional[OcrPool] = None  # started with the first job that reads text
        self._lock = threading.Lock()
        self._versions: Optional[dict[str, str]] = None
        self.last_timings: dict[str, float] = {}

    def close(self) -> None:
        """Release the OCR threads and engines."""
        if self._ocr is not None:
            self._ocr.close()
            self._ocr = None

    # -- VideoAnalyzer ------------------------------------------------------------------
    def run_on_file(
        self,
        pipeline_id: str,
        file_path: Path,
        options: Optional[AnalysisOptions] = None,
        on_progress: Optional[ProgressCallback] = None,
        should_stop: Optional[StopCheck] = None,
        on_frame: Optional[FrameCallback] = None,
        frames_to: Optional[Callable[[list[FrameResult]], None]] = None,
    ) -> ResultsDocument:
        """Analyse the sampled frames of `file_path`; see ``VideoAnalyzer.run_on_file``. With `frames_to`,
        each batch's frames are given to it as they are done, and the document returned has none."""
        pipeline = get_pipeline(pipeline_id)
        if options is None:
            options = AnalysisOptions()
        if not isinstance(options, AnalysisOptions):
            raise InvalidOptions("options must be an AnalysisOptions")
        path = Path(file_path)
        if not path.exists() or path.is_dir():
            raise FileNotFoundError(f"no input file at {path}")
        with self._lock, tracing.span(_tracer, "analyse", **{"videojobs.pipeline": pipeline.pipeline_id}):
            document = self._run(pipeline, path, options, on_progress, should_stop, on_frame, frames_to=frames_to)
        self._observe(pipeline)
        return document

    def _observe(self, pipeline: Pipeline) -> None:
        timings = self.last_timings
        for stage in (Stage.DETECT, Stage.TRACK, Stage.OCR):
            if pipeline.runs(stage):
                observe_stage(pipeline.pipeline_id, stage.value, timings[stage.value])
        observe_stage(pipeline.pipeline_id, "decode", timings["decode"])

    # -- segments ----------------------------------------------------------------------------
    def plan_split(self, pipeline_id: str, file_path: Path, options: AnalysisOptions,
                   segment_frames: int) -> SplitPlan:
        """Segments of about `segment_frames` samples, aligned to the analysis batch so each batch of
        a segment is a batch of one pass; one segment (with the reason) if seeking is not exact."""
        get_pipeline(pipeline_id)
        path = Path(file_path)
        with FrameReader(path, self.decode_timeout_seconds) as reader:
            info = reader.open()
        plan = SamplingPlan(info.frame_count, info.fps, options.sample_fps, options.max_frames)
        ranges = split_samples(len(plan), segment_frames, self.batch_frames(info.width, info.height))
        note = None
        if len(ranges) > 1:
            index = reader.seek_index
            if not index.exact:
                note = f"analysed in one pass: the video cannot be seeked exactly ({index.reason})"
                ranges = [(0, len(plan))]
        return SplitPlan(
            samples=len(plan),
            ranges=[SegmentRange(a, b, plan.index(a), plan.index(b - 1)) for a, b in ranges],
            note=note,
        )

    def run_segment(self, pipeline_id, file_path, options, first_sample, end_sample, on_progress=None,
                    should_stop=None, on_frame=None) -> bytes:
        """Analyse samples [first_sample, end_sample) (decoding from the keyframe before the first)."""
        pipeline = get_pipeline(pipeline_id)
        with self._lock, tracing.span(_tracer, "analyse segment", **{"videojobs.pipeline": pipeline.pipeline_id,
                                                                     "videojobs.first_sample": first_sample}):
            output = self._run(pipeline, Path(file_path), options, on_progress, should_stop, on_frame,
                               part=(first_sample, end_sample))
        self._observe(pipeline)
        assert isinstance(output, SegmentOutput)
        return output.to_bytes()

    def merge_segments(self, pipeline_id: str, options: AnalysisOptions, parts: Iterable[bytes]) -> ResultsFile:
        """Concatenate the segments' frames in order (a part given twice counts once) and run the
        tracker over all of them, as one pass does batch after batch. One segment's frames are in
        memory at a time (``_FrameSpool``)."""
        pipeline = get_pipeline(pipeline_id)
        merge = _Merge(pipeline, options)
        with _FrameSpool(self.scratch_dir) as spool:
            for part in parts:
                spool.add(merge.add(merge.parse(part)))
            merge.frames = spool.frames
            return spool.document(merge.header())

    def run_to_file(self, pipeline_id: str, file_path: Path, options: Optional[AnalysisOptions] = None, *,
                    segmentation_note: Optional[str] = None, **callbacks: Any) -> ResultsFile:
        """``run_on_file`` with each batch's frames written as they come (``_FrameSpool``)."""
        with _FrameSpool(self.scratch_dir) as spool:
            header = self.run_on_file(pipeline_id, file_path, options, frames_to=spool.add, **callbacks)
            return spool.document(header.with_segmentation_note(segmentation_note))

    def describe(self) -> AnalyzerCapabilities:
        """Loads the detector (so the first job does not wait for it) and lists the OCR languages."""
        ref = self.detector.load()
        names = self.detector.names
        return AnalyzerCapabilities(
            model_file=ref.file,
            model_sha256=ref.sha256,
            class_names=[names[k] for k in sorted(names)],
            ocr_languages=installed_languages(self.tessdata_dir),
        )

    def batch_frames(self, width: int, height: int) -> int:
        """Frames per batch for frames of this size: ``batch_size`` at most, ``BATCH_BYTES`` of them at
        most, one at least. A function of the size alone, so a segment's batches are those of one pass
        (the torch runtime's forward of a batch differs in its last bits with the batch's length)."""
        return max(1, min(self.batch_size, BATCH_BYTES // (width * height * 3)))

    # -- internals ----------------------------------------------------------------------
    def _ocr_pool(self, lang: str) -> OcrPool:
        """The OCR threads, their engines for `lang` ready for a new job."""
        if self._ocr is None:
            self._ocr = OcrPool(self.ocr_threads, self.tessdata_dir)
        self._ocr.start(lang)
        return self._ocr

    def _run(
        self,
        pipeline: Pipeline,
        path: Path,
        options: AnalysisOptions,
        on_progress: Optional[ProgressCallback],
        should_stop: Optional[StopCheck],
        on_frame: Optional[FrameCallback] = None,
        part: Optional[tuple[int, int]] = None,
        frames_to: Optional[Callable[[list[FrameResult]], None]] = None,
    ) -> "ResultsDocument | SegmentOutput":
        """One pass over the plan, or (with `part`) over samples [first, end) of it: then no
        tracker runs here, and the detections it would be fed are kept for the merge. With
        `frames_to` (not with `part`), frames go there batch by batch instead of into the document."""
        t_start = time.perf_counter()
        use_detector = pipeline.runs(Stage.DETECT)
        use_tracker = pipeline.runs(Stage.TRACK)
        use_ocr = pipeline.runs(Stage.OCR)
        timings = {"decode": 0.0, "decode_wait": 0.0, "detect": 0.0, "track": 0.0, "ocr": 0.0, "write": 0.0,
                   "ocr_lines_read": 0.0, "ocr_lines_dropped": 0.0}

        # No more decoder frame threads than a batch holds frames: each holds a frame of its own.
        with FrameReader(path, self.decode_timeout_seconds, threads=self.decode_threads,
                         thread_cap=self.batch_frames) as reader:
            info = reader.open()
            batch_frames = self.batch_frames(info.width, info.height)
            timings["batch_frames"] = float(batch_frames)
            # Engines after the cheap file checks, so bad input fails fast even on a cold worker.
            class_ids = None
            model_info: Optional[ModelInfo] = None
            names: dict[int, str] = {}
            if use_detector:
                self.detector.load()
                names = self.detector.names
                class_ids = self.detector.class_ids(options.classes)
                # Export / backend choice / compilation for this frame size, before the clock of `detect`.
                t0 = time.perf_counter()
                model_info = ModelInfo(**self.detector.prepare((info.height, info.width), options.imgsz))
                timings["detector_prepare"] = time.perf_counter() - t0
            ocr = self._ocr_pool(options.ocr_lang) if use_ocr else None
            plan = SamplingPlan(info.frame_count, info.fps, options.sample_fps, options.max_frames)
            first, end = (0, len(plan)) if part is None else (max(0, part[0]), min(part[1], len(plan)))
            total = max(0, end - first)
            if total and first > 0 and not reader.seek_index.exact:  # the split checked this; the file changed?
                raise InvalidOptions(f"segment cannot be decoded exactly: {reader.seek_index.reason}")
            tracker = JobTracker(plan.effective_sample_fps) if use_tracker and part is None else None
            raw: Optional[list[list[list[float]]]] = [] if part is not None else None
            detect_conf = min(options.min_confidence, TRACK_LOW_CONFIDENCE)
            if on_progress:
                on_progress(0, total)

            frames_out: list = []
            analysis = _BatchContext(info.fps, info.width, info.height, options, names, class_ids, detect_conf,
                                     use_detector, tracker, ocr, timings, raw)
            source = reader.frames(plan, first, end, buffer=2 * batch_frames)
            done = 0
            # Two batches deep: batch k+1 is handed to the detector (and the OCR threads) before batch k
            # is finished, so the model works on it while batch k is post-processed and tracked; and
            # each frame goes to the detector as soon as it is decoded, not when its batch is complete.
            pending: Optional[_StartedBatch] = None
            try:
                while True:
                    if should_stop is not None and should_stop():
                        raise JobInterrupted(f"stopped after {done} of {total} frames")
                    started = self._start_batch(self._read_batch(source, done, batch_frames, timings), analysis)
                    if pending is not None:
                        finishing, pending = pending, None
                        finished = self._finish_batch(finishing, analysis)
                        if frames_to is not None:
                            frames_to(finished)
                        else:
                            frames_out.extend(finished)
                        if on_frame is not None:
                            t0 = time.perf_counter()
                            for index, frame in finishing.batch:
                                on_frame(index, frame)
                            timings["frame_images"] = timings.get("frame_images", 0.0) + time.perf_counter() - t0
                        done += len(finishing.batch)
                        if on_progress:
                            on_progress(done, total)
                    if started is None:
                        break
                    pending = started
            finally:
                if pending is not None:  # a job stopped or failed: nothing of it stays in flight
                    pending.discard()
                if ocr is not None:
                    ocr.forget_frames()
            timings["decode"] = reader.decode_seconds
            timings["decoder_threads"] = float(reader.decoder_threads)
            timings["frames_decoded"] = float(reader.frames_decoded)

        t0 = time.perf_counter()
        provenance = Provenance(
            model=model_info,
            libraries=self._library_versions(),
            ocr_lang=options.ocr_lang if use_ocr else None,
            options=options,
        )
        result: "ResultsDocument | SegmentOutput"
        if part is not None:
            assert raw is not None
            result = SegmentOutput(
                first_sample=first, end_sample=end, fps=info.fps, frame_count=info.frame_count,
                video=info.metadata(container=_container_of(path)), provenance=provenance, class_names=names,
                frames=frames_out, detections=raw if use_detector else [[] for _ in frames_out],
            )
        else:
            result = ResultsDocument(
                pipeline_id=pipeline.pipeline_id,
                video=info.metadata(container=_container_of(path)),
                sampling=plan.sampling(done),
                provenance=provenance,
                results=frames_out,
                tracks=tracker.summaries(names) if tracker is not None else [],
            )
        timings["write"] += time.perf_counter() - t0
        timings["total"] = time.perf_counter() - t_start
        timings["frames"] = float(done)
        if ocr is not None:
            read, reused = ocr.counts(options.ocr_lang)
            timings["ocr_frames_read"], timings["ocr_frames_reused"] = float(read), float(reused)
        self.last_timings = timings
        return result

    def _read_batch(self, source: Iterator[tuple[int, np.ndarray]], first: int, size: int,
                    timings: dict[str, float]) -> "_BatchFrames":
        """The next batch of `size` frames, read from the decoder frame by frame (a ``decode`` span over it)."""
        span = tracing.start_span(_tracer, "decode", **{"videojobs.batch_start": first})
        return _BatchFrames(source, size, timings, span)

    def _start_batch(self, frames: "_BatchFrames", ctx: "_BatchContext") -> Optional["_StartedBatch"]:
        """Hand a batch to the detector, each frame as soon as it is decoded, then to the OCR threads;
        both work on it in the background. None when the plan is done."""
        detections = None
        if ctx.use_detector and frames.peek():
            waited = ctx.timings["decode_wait"]
            t0 = time.perf_counter()
            with tracing.span(_tracer, "detect", **{"videojobs.batch_start": frames.first}):
                detections = self.detector.submit(frames, conf=ctx.detect_conf, imgsz=ctx.options.imgsz,
                                                  classes=ctx.class_ids)
            ctx.timings["detect"] += time.perf_counter() - t0 - (ctx.timings["decode_wait"] - waited)
        batch = frames.rest()
        if not batch:
            return None
        ocr_futures: list[Future] = []
        if ctx.ocr is not None:
            ocr_futures = ctx.ocr.submit(ctx.options.ocr_lang, [frame for _, frame in batch],
                                         lambda: logs.in_current_context(_read_all))
        return _StartedBatch(batch, detections, ocr_futures)

    def _finish_batch(self, started: "_StartedBatch", ctx: "_BatchContext") -> list:
        """The batch's detections (tracked, in frame order) and OCR lines, as results items."""
        batch, options, timings = started.batch, ctx.options, ctx.timings
        per_frame_dets: list[list[Detection]] = [[] for _ in batch]
        if started.detections is not None:
            t0 = time.perf_counter()
            with tracing.span(_tracer, "detect results", **{"videojobs.frames": len(batch)}):
                found = started.detections.result()
            t1 = time.perf_counter()
            timings["detect"] += t1 - t0
            with tracing.span(_tracer, "track"):
                for k, ((index, _), dets) in enumerate(zip(batch, found)):
                    reported = dets[:, 4] >= options.min_confidence
                    if ctx.raw is not None:  # a segment: the merge runs the tracker on these
                        ctx.raw.append(dets.tolist())
                    if ctx.tracker is not None:
                        ids = ctx.tracker.update(dets, reported, index, doc.timestamp_ms(index, ctx.fps))
                    else:
                        ids = [None] * int(reported.sum())
                    per_frame_dets[k] = doc.detection_items(dets[reported], ids, ctx.names, ctx.width, ctx.height)
            timings["track"] += time.perf_counter() - t1

        lines_per_frame: list[list[OcrLine]] = [[] for _ in batch]
        if started.ocr:
            read: list[list[OcrLine]] = []
            for future in started.ocr:  # consecutive runs of the batch, in order
                lines_of_run, ocr_seconds = future.result()
                read.extend(lines_of_run)
                timings["ocr"] += ocr_seconds
            for k, lines in enumerate(read):
                kept = [line for line in lines if is_worth_reading(line, options.min_text_confidence)]
                timings["ocr_lines_read"] += len(lines)
                timings["ocr_lines_dropped"] += len(lines) - len(kept)
                lines_per_frame[k] = kept

        t0 = time.perf_counter()
        out = [
            doc.frame_item(index, doc.timestamp_ms(index, ctx.fps), dets, lines)
            for (index, _), dets, lines in zip(batch, per_frame_dets, lines_per_frame)
        ]
        timings["write"] += time.perf_counter() - t0
        return out

    def _library_versions(self) -> dict[str, str]:
        if self._versions is None:
            self._versions = library_versions()
        return dict(sorted(self._versions.items()))


class _BatchFrames:
    """The frames of one batch as the decoder hands them over: iterating yields each frame at once
    (and keeps it in ``batch``); ``rest()`` reads whatever the iteration did not reach."""

    def __init__(self, source: Iterator[tuple[int, np.ndarray]], size: int, timings: dict[str, float],
                 span: Any) -> None:
        self._source = source
        self._size = size
        self._timings = timings
        self._span = span  # the batch's ``decode`` span, ended once the batch is read
        self.batch: list[tuple[int, np.ndarray]] = []

    @property
    def first(self) -> int:
        """Frame index of the batch's first frame (-1 before it is read)."""
        return self.batch[0][0] if self.batch else -1

    def _next(self) -> bool:
        """Read one more frame into the batch; False once it is full or the plan is done."""
        if len(self.batch) < self._size:
            t0 = time.perf_counter()
            item = next(self._source, None)
            self._timings["decode_wait"] += time.perf_counter() - t0
            if item is not None:
                self.batch.append(item)
                return True
        tracing.end_span(self._span)
        self._span = None
        return False

    def peek(self) -> bool:
        """Whether the batch has a frame (reads the first one)."""
        return bool(self.batch) or self._next()

    def __iter__(self) -> Iterator[np.ndarray]:
        k = 0
        while k < len(self.batch) or self._next():
            yield self.batch[k][1]
            k += 1

    def rest(self) -> list[tuple[int, np.ndarray]]:
        while self._next():
            pass
        return self.batch


@dataclass(frozen=True)
class _BatchContext:
    """What every batch of one pass is analysed with."""

    fps: float
    width: int
    height: int
    options: AnalysisOptions
    names: dict[int, str]
    class_ids: Optional[list[int]]
    detect_conf: float
    use_detector: bool
    tracker: Optional[JobTracker]
    ocr: Optional[OcrPool]
    timings: dict[str, float]
    raw: Optional[list[list[list[float]]]]


@dataclass(frozen=True)
class _StartedBatch:
    """A batch handed to the detector and the OCR threads, not yet finished."""

    batch: list[tuple[int, np.ndarray]]
    detections: Optional[PendingDetections]
    ocr: list[Future]

    def discard(self) -> None:
        """Wait for the work of a batch nobody will finish (the job stopped or failed)."""
        if self.detections is not None:
            self.detections.discard()
        wait([future for future in self.ocr if not future.cancel()])


def _container_of(path: Path) -> str:
    with path.open("rb") as f:
        fmt = sniff(f.read(SNIFF_BYTES))
    return fmt.format_id if fmt is not None else ""


def _read_all(engine: OcrEngine, frames: list[np.ndarray]) -> tuple[list[list[OcrLine]], float]:
    t0 = time.perf_counter()
    with tracing.span(_tracer, "ocr", **{"videojobs.frames": len(frames)}):
        lines = [engine.read(frame) for frame in frames]
    return lines, time.perf_counter() - t0
