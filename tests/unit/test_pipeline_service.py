"""VideoFilePipelineService with a fake detector and a fake OCR engine on a tiny generated clip."""

from __future__ import annotations

import threading
from concurrent.futures import wait

import numpy as np
import pytest

from tests.integration.conftest_pipeline import write_clip
from videojobs.common.cpus import usable_cpus
from videojobs.common.errors import InvalidOptions, JobInterrupted, UnknownClass
from videojobs.common.options import AnalysisOptions
from videojobs.worker.pipeline import VideoFilePipelineService
from videojobs.worker.pipeline.detector import ModelRef
from videojobs.worker.pipeline import service as service_module
from videojobs.worker.pipeline.ocr import OcrLine, OcrPool


class FakeDetector:
    """One box per frame that drifts right; records what it was asked."""

    names = {0: "person", 39: "bottle"}

    def __init__(self):
        self.calls = []
        self.events = []  # ("submit" | "result" | "discard", the batch's number)

    def load(self):
        return ModelRef("fake.onnx", "0" * 64, "onnx", "fake.onnx")

    def prepare(self, frame_hw, imgsz):
        self.prepared = (tuple(frame_hw), imgsz)
        return {"file": "fake.onnx", "sha256": "0" * 64, "backend": "fake", "input_size": 64,
                "input_shape": [48, 64], "precision": "f32", "threads": 1}

    def class_ids(self, names):
        if not names:
            return None
        by = {v: k for k, v in self.names.items()}
        unknown = [n for n in names if n not in by]
        if unknown:
            raise UnknownClass(unknown, sorted(by))
        return [by[n] for n in names]

    def submit(self, frames, conf, imgsz, classes=None):
        found = self.detect(list(frames), conf, imgsz, classes)
        events, first = self.events, len(self.calls) - 1  # the batch's number in the job
        events.append(("submit", first))

        class Pending:
            def result(self):
                events.append(("result", first))
                return found

            def discard(self):
                events.append(("discard", first))

        return Pending()

    def detect(self, frames, conf, imgsz, classes=None):
        self.calls.append((len(frames), conf, imgsz, classes))
        out = []
        for frame in frames:
            x = float(round(frame[0, 0, 0] / 4))  # the clip encodes its frame number in the pixels
            out.append(np.array([[x, 10, x + 20, 40, 0.9, 39], [0, 0, 5, 5, 0.2, 0]]))
        return out


class FakeOcr:
    def __init__(self):
        self.frames = 0
        self.frames_read = 0
        self.frames_reused = 0
        self.holding = False  # whether it keeps the last frame's answer, as the real engine does
        self.threads = set()  # names of the threads that called it

    def reset(self):
        self.frames = 0

    def forget_frame(self):
        self.threads.add(threading.current_thread().name)
        self.holding = False

    def read(self, frame):
        self.threads.add(threading.current_thread().name)
        self.frames += 1
        self.frames_read += 1
        self.holding = True
        return [OcrLine("FAKE TEXT", 0.87654, (12, 12, 18, 30), ())]

    def close(self):
        self.closed_on = threading.current_thread().name


@pytest.fixture
def clip(tmp_path):
    frames = [np.full((48, 64, 3), 4 * i, np.uint8) for i in range(30)]
    return write_clip(tmp_path / "clip.mp4", frames, fps=10.0)


@pytest.fixture
def service(tmp_path):
    svc = VideoFilePipelineService("fake.onnx", tmp_path / "cache", batch_size=4)
    svc.detector = FakeDetector()
    svc._ocr = OcrPool(1, engine_factory=lambda lang, tessdata: FakeOcr())
    yield svc
    svc.close()


def test_samples_progress_and_document_shape(service, clip):
    progress = []
    doc = service.run_on_file("yolo_ocr", clip, AnalysisOptions(sample_fps=2.0),
                              on_progress=lambda d, t: progress.append((d, t))).model_dump(mode="json")
    assert [f["frame_index"] for f in doc["results"]] == [0, 5, 10, 15, 20, 25]
    assert [f["timestamp_ms"] for f in doc["results"]] == [0.0, 500.0, 1000.0, 1500.0, 2000.0, 2500.0]
    assert progress == [(0, 6), (4, 6), (6, 6)]
    video = dict(doc["video"])
    assert video.pop("codec") in ("mp4v", "FMP4")  # the tag FFmpeg reports for OpenCV's MPEG-4 part 2
    assert video == {"width": 64, "height": 48, "fps": 10.0, "frame_count": 30, "duration_ms": 3000.0,
                     "container": "iso-bmff"}
    assert doc["sampling"]["frames_analysed"] == 6
    first = doc["results"][0]["result"]
    # The 0.2 box is below min_confidence: gone; the bottle box is tracked.
    assert [d["class_name"] for d in first["detections"]] == ["bottle"]
    assert first["detections"][0]["track_id"] == 1
    assert first["ocr"][0]["detection_index"] == 0
    assert first["ocr"][0]["confidence"] == 0.8765
    assert first["text"] == "FAKE TEXT"
    assert doc["tracks"][0]["track_id"] == 1 and doc["tracks"][0]["frames"] == 6
    assert doc["provenance"]["model"] == {"file": "fake.onnx", "sha256": "0" * 64, "backend": "fake", "input_size": 64,
                                          "input_shape": [48, 64], "precision": "f32", "threads": 1,
                                          "backend_choice": None}
    assert service.detector.prepared == ((48, 64), 640)  # prepared for the video's frame size before the frames
    assert doc["provenance"]["options"] == AnalysisOptions(sample_fps=2.0).to_dict()
    # The detector sees scores down to ByteTrack's second-stage threshold.
    assert service.detector.calls[0][1] == 0.1
    # Two batches deep: the next batch is with the detector before the last one is finished.
    assert service.detector.events == [("submit", 0), ("submit", 1), ("result", 0), ("result", 1)]


def test_same_input_same_bytes(service, clip):
    a = service.run_on_file("yolo_ocr", clip, AnalysisOptions(sample_fps=0)).to_bytes()
    b = service.run_on_file("yolo_ocr", clip, AnalysisOptions(sample_fps=0)).to_bytes()
    assert a == b


def test_pipelines_run_only_their_stages(service, clip):
    yolo = service.run_on_file("yolo", clip, AnalysisOptions(max_frames=2)).model_dump(mode="json")
    assert all(f["result"]["text"] == "" and f["result"]["ocr"] == [] for f in yolo["results"])
    assert yolo["provenance"]["ocr_lang"] is None
    calls = len(service.detector.calls)
    ocr = service.run_on_file("ocr", clip, AnalysisOptions(max_frames=2)).model_dump(mode="json")
    assert len(service.detector.calls) == calls
    assert all(f["result"]["detections"] == [] for f in ocr["results"])
    assert ocr["tracks"] == [] and ocr["provenance"]["model"] is None


def test_unknown_pipeline_fails_before_touching_the_file(service, tmp_path):
    with pytest.raises(InvalidOptions):
        service.run_on_file("faces", tmp_path / "does-not-exist.mp4")
    assert service.detector.calls == []


def test_unknown_class_is_invalid_options_naming_the_valid_ones(service, clip):
    with pytest.raises(UnknownClass) as err:
        service.run_on_file("yolo", clip, AnalysisOptions(classes=("unicorn",)))
    assert err.value.unknown == ("unicorn",) and "bottle" in err.value.valid


def test_stop_between_batches(service, clip):
    progress = []
    with pytest.raises(JobInterrupted):
        service.run_on_file(
            "yolo", clip, AnalysisOptions(sample_fps=0),
            on_progress=lambda d, t: progress.append(d), should_stop=lambda: len(progress) >= 2,
        )
    assert progress == [0, 4]
    # The batch after the last one finished was already with the detector: waited for and dropped.
    assert service.detector.events == [("submit", 0), ("submit", 1), ("result", 0), ("discard", 1)]
    # The service is usable again afterwards.
    assert len(service.run_on_file("yolo", clip, AnalysisOptions(max_frames=3)).results) == 3


def test_missing_file_is_not_poison(service, tmp_path):
    with pytest.raises(FileNotFoundError):
        service.run_on_file("yolo", tmp_path / "nope.mp4")


def test_the_worker_builds_the_analyzer_from_its_settings(tmp_path):
    from videojobs.common.config import Settings
    from videojobs.worker.bootstrap import build_analyzer

    settings = Settings(model="m.onnx", model_cache_dir=tmp_path, detector_backend="onnxruntime",
                        decode_timeout_seconds=3, inference_threads=3)
    svc = build_analyzer(settings)
    assert svc.detector.model_spec == "m.onnx" and svc.detector.backend == "onnxruntime"
    assert svc.detector.threads == 3 and svc.decode_threads == 3  # set: it bounds the decoder too
    assert svc.ocr_threads == 3  # OCR runs on as many threads as the detector (each a Tesseract engine)
    assert svc.detector.cache_dir == tmp_path and svc.decode_timeout_seconds == 3.0
    assert not svc.detector.loaded  # nothing loaded until a job needs it


# -- frames of any size: batches by bytes -------------------------------------------------------
def test_batch_frames_shrink_with_the_frame_size(tmp_path):
    svc = VideoFilePipelineService("fake.onnx", tmp_path / "cache")  # 8 frames a batch at most
    assert svc.batch_frames(640, 360) == 8
    assert svc.batch_frames(1920, 1080) == 8  # 6 MiB a frame
    assert svc.batch_frames(2560, 1440) == 6  # 10.5 MiB
    assert svc.batch_frames(3840, 2160) == 2  # 24 MiB
    assert svc.batch_frames(7680, 4320) == 1  # 95 MiB: never fewer than one
    assert svc.batch_frames(8192, 4320) == 1
    for width, height in ((640, 360), (1920, 1080), (3840, 2160), (7680, 4320)):
        frames = svc.batch_frames(width, height)
        assert frames == 1 or frames * width * height * 3 <= service_module.BATCH_BYTES


def test_large_frames_go_in_smaller_batches_with_the_same_results(service, clip, monkeypatch):
    options = AnalysisOptions(sample_fps=0)
    whole = service.run_on_file("yolo_ocr", clip, options)
    assert [calls[0] for calls in service.detector.calls] == [4] * 7 + [2]  # the fixture's batch size: 30 frames
    assert service.last_timings["batch_frames"] == 4
    service.detector.calls.clear()
    # As if the clip's 64x48 frames were large: two fit in a batch's bytes.
    monkeypatch.setattr(service_module, "BATCH_BYTES", 2 * 64 * 48 * 3 + 100)
    halved = service.run_on_file("yolo_ocr", clip, options)
    assert [calls[0] for calls in service.detector.calls] == [2] * 15
    assert service.last_timings["batch_frames"] == 2
    assert halved.to_bytes() == whole.to_bytes()


def test_the_decoder_runs_no_more_frame_threads_than_a_batch_holds_frames(service, clip, monkeypatch):
    # FFmpeg's frame threads each decode a frame of their own: at 7680x4320, one batch frame, one thread.
    options = AnalysisOptions(sample_fps=0)  # every frame: the sequential decoder, a thread per usable core
    whole = service.run_on_file("yolo", clip, options)
    assert service.last_timings["decoder_threads"] == min(usable_cpus(), 4) > 1  # the fixture's 4 frames a batch
    monkeypatch.setattr(service_module, "BATCH_BYTES", 64 * 48 * 3)  # as if the clip's frames were large
    single = service.run_on_file("yolo", clip, options)
    assert service.last_timings["decoder_threads"] == 1
    assert single.to_bytes() == whole.to_bytes()


def test_segments_align_to_the_batches_of_the_video_s_frame_size(service, clip, monkeypatch):
    def ranges():
        plan = service.plan_split("yolo", clip, AnalysisOptions(sample_fps=0), 10)  # 30 samples, about 10 a segment
        return [(r.first_sample, r.end_sample) for r in plan.ranges]

    assert ranges() == [(0, 12), (12, 24), (24, 30)]  # aligned to the fixture's 4 frames a batch
    monkeypatch.setattr(service_module, "BATCH_BYTES", 2 * 64 * 48 * 3)  # two of the clip's frames a batch
    assert ranges() == [(0, 10), (10, 20), (20, 30)]


def test_ocr_threads_take_turns_on_batches_shorter_than_the_thread_count():
    # One large frame a batch: the runs go round the threads, so batch k+1 is read while batch k is.
    pool = OcrPool(2, engine_factory=lambda lang, tessdata: FakeOcr())
    gate = threading.Event()

    def reader():
        def read(engine, frames):
            gate.wait(5)
            return [engine.read(frame) for frame in frames], 0.0
        return read

    try:
        pool.start("eng")
        frame = np.zeros((4, 4, 3), np.uint8)
        first = pool.submit("eng", [frame], reader)
        second = pool.submit("eng", [frame], reader)
        gate.set()
        wait(first + second)
        engines = [lane["eng"] for lane in pool._engines]
        assert [engine.frames for engine in engines] == [1, 1]
        assert engines[0].threads != engines[1].threads
        pool.start("eng")  # a new job starts on the first thread again
        wait(pool.submit("eng", [frame, frame, frame, frame], reader))
        assert [engine.frames for engine in engines] == [2, 2]  # a run of two each, as before
    finally:
        pool.close()


def test_ocr_engines_let_go_of_their_frames_when_a_job_ends(service, clip):
    engines = [lane["eng"] for lane in (service._ocr_pool("eng")._engines)]
    service.run_on_file("yolo_ocr", clip, AnalysisOptions(max_frames=3))
    assert engines[0].frames == 3 and not engines[0].holding
    with pytest.raises(JobInterrupted):  # and when it stops midway
        service.run_on_file("yolo_ocr", clip, AnalysisOptions(sample_fps=0), should_stop=lambda: engines[0].frames >= 4)
    assert engines[0].frames >= 4 and not engines[0].holding


def test_each_ocr_thread_keeps_engines_for_its_last_three_language_settings():
    # "eng", "eng+deu", "deu+eng"... are settings of their own: a tenant cycling through them must not grow
    # the worker by an engine (30-150 MiB) per setting and thread.
    made = []

    def factory(lang, tessdata):
        made.append(FakeOcr())
        return made[-1]

    pool = OcrPool(2, engine_factory=factory)
    try:
        for lang in ("eng", "deu", "eng+deu", "deu+eng", "fra"):
            pool.start(lang)
        assert [list(lane) for lane in pool._engines] == [["eng+deu", "deu+eng", "fra"]] * 2
        assert len(made) == 10
        closed = [engine.closed_on for engine in made if hasattr(engine, "closed_on")]
        assert len(closed) == 4 and all(name.startswith("ocr-") for name in closed)  # each on its own thread
        pool.start("eng+deu")  # kept: reused, and now the most recent
        assert len(made) == 10 and list(pool._engines[0])[-1] == "eng+deu"
        pool.start("eng")  # gone: made again, and the least recent one goes
        assert len(made) == 12 and [list(lane) for lane in pool._engines] == [["fra", "eng+deu", "eng"]] * 2
    finally:
        pool.close()
