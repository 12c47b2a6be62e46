"""The pipeline on the real COCO model and the real sample footage (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import weakref

import numpy as np
import pytest

from tests.integration.conftest_pipeline import (  # noqa: F401  (fixtures)
    MODEL_PATH,
    model_path,
    pipeline_service,
    sample_video,
    text_frame,
    write_clip,
)
from tests.terminal import run_on_terminal
from videojobs.common.options import AnalysisOptions

pytestmark = pytest.mark.slow


def analysed(service, *args, **kwargs) -> dict:
    """The results document as JSON-shaped data (what REST returns)."""
    return service.run_on_file(*args, **kwargs).model_dump(mode="json")


@pytest.fixture(scope="module")
def default_run(pipeline_service, sample_video):
    """yolo_ocr at the default options over the whole ~40 s clip, with its progress calls."""
    progress = []
    doc = analysed(pipeline_service, 
        "yolo_ocr", sample_video, AnalysisOptions(), on_progress=lambda d, t: progress.append((d, t))
    )
    return doc, progress


def test_bottle_in_every_analysed_frame_at_default_confidence(default_run):
    doc, _ = default_run
    assert doc["results"]
    for frame in doc["results"]:
        names = [d["class_name"] for d in frame["result"]["detections"]]
        assert "bottle" in names, f"no bottle in frame {frame['frame_index']}: {names}"
        assert all(d["confidence"] >= 0.25 for d in frame["result"]["detections"])


def test_one_fps_on_the_forty_second_clip_gives_about_forty_frames(default_run):
    doc, progress = default_run
    n = len(doc["results"])
    assert 39 <= n <= 41
    assert doc["sampling"]["frames_analysed"] == n
    assert progress[0] == (0, n) and progress[-1] == (n, n)
    assert all(t == n for _, t in progress) and [d for d, _ in progress] == sorted(d for d, _ in progress)


def test_timestamps_match_the_frame_rate(default_run):
    doc, _ = default_run
    fps = doc["video"]["fps"]
    assert abs(fps - 29.8333) < 1e-3 and doc["video"]["frame_count"] == 1189
    assert doc["video"]["width"] == 640 and doc["video"]["height"] == 360 and doc["video"]["codec"] == "h264"
    indices = [f["frame_index"] for f in doc["results"]]
    assert indices == sorted(set(indices))
    for k, frame in enumerate(doc["results"]):
        assert abs(frame["timestamp_ms"] - frame["frame_index"] * 1000 / 29.833333333) < 0.01
        assert abs(frame["timestamp_ms"] - k * 1000) <= 1000 / 29.83 / 2 + 0.01  # one sample per second


def test_tracks_and_provenance(default_run):
    doc, _ = default_run
    tracks = doc["tracks"]
    assert tracks and tracks[0]["track_id"] == 1
    assert any(t["class_name"] == "bottle" and t["frames"] >= 3 for t in tracks)
    ids = {d["track_id"] for f in doc["results"] for d in f["result"]["detections"]} - {None}
    assert ids == {t["track_id"] for t in tracks}
    prov = doc["provenance"]
    assert prov["model"]["file"] == "yolov8n.pt"
    assert prov["model"]["sha256"].startswith("804c9171")
    # 640x360 (16:9) runs at 384x640, as Ultralytics' predict letterboxes it; auto measured the runtimes.
    assert prov["model"]["input_shape"] == [384, 640] and prov["model"]["input_size"] == 640
    choice = prov["model"]["backend_choice"]
    assert choice["requested"] == "auto" and prov["model"]["backend"] in choice["forward_ms"]
    assert prov["model"]["backend"] == min(choice["forward_ms"], key=choice["forward_ms"].get)
    assert prov["model"]["threads"] >= 1 and prov["model"]["precision"] in ("f32", "bf16")
    assert set(prov["libraries"]) >= {"ultralytics", "opencv", "tesseract", "openvino", "videojobs"}
    assert prov["ocr_lang"] == "eng" and prov["options"] == AnalysisOptions().to_dict()


def test_same_run_twice_is_byte_identical(pipeline_service, sample_video, model_path, tmp_path):
    from videojobs.worker.pipeline import VideoFilePipelineService

    def fresh_run(cache, backend="auto") -> bytes:
        other = VideoFilePipelineService(str(model_path), cache, backend)
        try:
            return other.run_on_file("yolo_ocr", sample_video, options).to_bytes()
        finally:
            other.close()

    options = AnalysisOptions(sample_fps=2.0, max_frames=12)
    a = pipeline_service.run_on_file("yolo_ocr", sample_video, options).to_bytes()
    b = pipeline_service.run_on_file("yolo_ocr", sample_video, options).to_bytes()
    # A fresh service (model loaded and compiled anew) on the same cache reads auto's record: same bytes.
    c = fresh_run(pipeline_service.detector.cache_dir)
    assert a == b == c
    # The same backend named explicitly, each with an empty cache (exported anew): same bytes again,
    # and the same frames as auto's run when auto chose that backend.
    chosen = json.loads(a)["provenance"]["model"]["backend"]
    d, e = fresh_run(tmp_path / "d", chosen), fresh_run(tmp_path / "e", chosen)
    assert d == e
    assert json.loads(d)["results"] == json.loads(a)["results"]


def test_classes_filter_and_every_frame_sampling(pipeline_service, sample_video):
    doc = analysed(pipeline_service, "yolo", sample_video, AnalysisOptions(sample_fps=0, max_frames=5, classes=("bottle",)))
    assert [f["frame_index"] for f in doc["results"]] == [0, 1, 2, 3, 4]
    assert {d["class_name"] for f in doc["results"] for d in f["result"]["detections"]} == {"bottle"}
    assert all(f["result"]["ocr"] == [] for f in doc["results"])


@pytest.fixture(scope="module")
def text_clip(tmp_path_factory):
    frames = [text_frame(["HELLO WORLD", "VIDEO JOBS 2024"])] * 5 + [text_frame(["SECOND SLIDE"])] * 5
    return write_clip(tmp_path_factory.mktemp("text") / "text.mp4", frames, fps=5.0)


def test_ocr_reads_rendered_text_exactly(pipeline_service, text_clip):
    doc = analysed(pipeline_service, "ocr", text_clip, AnalysisOptions(sample_fps=0))
    texts = [f["result"]["text"] for f in doc["results"]]
    assert texts[:5] == ["HELLO WORLD\nVIDEO JOBS 2024"] * 5
    assert texts[5:] == ["SECOND SLIDE"] * 5
    first = doc["results"][0]["result"]["ocr"]
    assert [line["text"] for line in first] == ["HELLO WORLD", "VIDEO JOBS 2024"]
    for line in first:
        assert 0.8 <= line["confidence"] <= 1.0
        assert line["detection_index"] is None
        assert 0 <= line["box"]["x1"] < line["box"]["x2"] <= 1280


def test_skipping_identical_frames_changes_nothing(pipeline_service, tmp_path):
    from videojobs.worker.pipeline.ocr import OcrEngine

    frame = text_frame(["SAME TEXT"])
    clip = write_clip(tmp_path / "still.avi", [frame] * 6, fps=6.0, fourcc="MJPG")
    doc = analysed(pipeline_service, "ocr", clip, AnalysisOptions(sample_fps=0))
    assert pipeline_service.last_timings["ocr_frames_reused"] >= 1
    engine = OcrEngine("eng")
    try:
        from tests.integration.conftest_pipeline import read_frames

        fresh = [[line.text for line in engine._recognize(f)] for f in read_frames(clip, range(6))]
    finally:
        engine.close()
    assert [[o["text"] for o in f["result"]["ocr"]] for f in doc["results"]] == fresh


def test_an_ocr_engine_keeps_no_frame_and_tells_frames_apart_by_every_pixel():
    from videojobs.worker.pipeline.ocr import OcrEngine

    frame = text_frame(["SAME TEXT"])
    probe = frame.copy()
    watcher = weakref.ref(probe)
    engine = OcrEngine("eng")
    try:
        first = engine.read(probe)
        del probe
        assert watcher() is None  # an 8K frame is 95 MiB: the engine keeps its digest, not the frame
        assert engine.read(frame.copy()) == first and (engine.frames_read, engine.frames_reused) == (1, 1)
        changed = frame.copy()
        changed[-1, -1, -1] ^= 1  # one bit of the last pixel
        engine.read(changed)
        engine.read(frame[:, ::-1])  # mirrored: not contiguous, read all the same
        assert (engine.frames_read, engine.frames_reused) == (3, 1)
    finally:
        engine.close()


def test_an_ocr_engine_lets_tesseracts_image_go_however_reading_ends():
    from videojobs.worker.pipeline.ocr import OcrEngine

    class Api:
        """The engine's Tesseract, counting Clear calls; `fail` makes Recognize find nothing or raise."""

        def __init__(self, real, fail):
            self.real, self.fail, self.cleared = real, fail, 0

        def __getattr__(self, name):
            return getattr(self.real, name)

        def GetIterator(self):  # noqa: N802 - tesserocr's name
            return None if self.fail == "nothing" else self.real.GetIterator()

        def Recognize(self):  # noqa: N802
            if self.fail == "raise":
                raise RuntimeError("Recognize failed")
            return self.real.Recognize()

        def Clear(self):  # noqa: N802
            self.cleared += 1
            self.real.Clear()

    engine = OcrEngine("eng")
    real = engine._api
    try:
        for fail in (None, "nothing", "raise"):
            engine._api = api = Api(real, fail)
            engine.forget_frame()
            if fail == "raise":
                with pytest.raises(RuntimeError):
                    engine.read(text_frame([f"CASE {fail}"]))
            else:
                lines = engine.read(text_frame([f"CASE {fail}"]))
                assert (lines != []) == (fail is None)
            assert api.cleared == 1, fail
    finally:
        engine._api = real
        engine.close()


def test_ocr_on_several_threads_gives_the_same_bytes(pipeline_service, sample_video, text_clip, model_path):
    # Each OCR thread reads a consecutive run of every batch with its own Tesseract engine: the
    # documents are byte-identical to one thread's, on real footage and on slides.
    from videojobs.worker.pipeline import VideoFilePipelineService

    two = VideoFilePipelineService(str(model_path), pipeline_service.detector.cache_dir, ocr_threads=2)
    try:
        for pipeline, clip, options in (("yolo_ocr", sample_video, AnalysisOptions(sample_fps=2.0, max_frames=12)),
                                        ("ocr", text_clip, AnalysisOptions(sample_fps=0))):
            one_bytes = pipeline_service.run_on_file(pipeline, clip, options).to_bytes()
            two_bytes = two.run_on_file(pipeline, clip, options).to_bytes()
            assert two_bytes == one_bytes
        assert sum(1 for engines in two._ocr._engines if engines["eng"].frames_read) == 2  # both threads read
        assert b"SECOND SLIDE" in two_bytes
    finally:
        two.close()


def test_cli_prints_results_json(sample_video, model_path, tmp_path):
    env = dict(os.environ, VIDEOJOBS_MODEL=str(model_path), VIDEOJOBS_MODEL_CACHE_DIR=str(tmp_path / "cache"))
    run = subprocess.run(
        [sys.executable, "-m", "videojobs.cli", "analyze", str(sample_video), "--max-frames", "2", "--classes", "bottle"],
        capture_output=True, env=env, timeout=240,
    )
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    doc = json.loads(run.stdout)
    assert len(doc["results"]) == 2 and doc["pipeline_id"] == "yolo_ocr"
    assert run.stderr == b""  # quiet: no progress bar off a terminal, no third-party chatter
    bad = subprocess.run(
        [sys.executable, "-m", "videojobs.cli", "analyze", str(tmp_path / "x.mp4")], capture_output=True, env=env, timeout=120
    )
    assert bad.returncode == 2 and b"x.mp4" in bad.stderr and bad.stdout == b""


def test_unknown_ocr_language_names_the_installed_ones(pipeline_service, text_clip):
    from videojobs.common.errors import UnknownLanguage

    with pytest.raises(UnknownLanguage) as err:
        pipeline_service.run_on_file("ocr", text_clip, AnalysisOptions(ocr_lang="klingon"))
    assert err.value.unknown == ("klingon",) and "eng" in err.value.valid
    assert "/" not in str(err.value)  # no tessdata path in what clients read


def test_frames_are_not_kept_in_memory(pipeline_service, sample_video):
    # The decoder hands over at most two batches: its queue is bounded.
    pipeline_service.run_on_file("yolo", sample_video, AnalysisOptions(sample_fps=0, max_frames=40))
    assert pipeline_service.batch_size * 2 <= 16
    assert np.isfinite(pipeline_service.last_timings["decode"])


def test_cli_shows_a_progress_bar_on_a_terminal(sample_video, model_path, tmp_path):
    env = dict(os.environ, VIDEOJOBS_MODEL=str(model_path), VIDEOJOBS_MODEL_CACHE_DIR=str(tmp_path / "cache"),
               COLUMNS="100", TERM="xterm")
    returncode, terminal, stdout = run_on_terminal(
        [sys.executable, "-m", "videojobs.cli", "analyze", str(sample_video), "--max-frames", "4", "--pipeline", "yolo"],
        env, timeout=240)
    assert returncode == 0, terminal[-2000:]
    assert "analysing" in terminal and "4/4" in terminal and "frames" in terminal
    assert json.loads(stdout)["sampling"]["frames_analysed"] == 4  # stdout still carries only the document
