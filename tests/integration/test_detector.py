"""The detector on the shared checkpoint: input shapes, exports, backend choice, parity with Ultralytics."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.integration.conftest_pipeline import (  # noqa: F401  (fixtures)
    REPO_ROOT,
    model_path,
    read_frames,
    sample_video,
)
from videojobs.worker.pipeline import runtimes
from videojobs.worker.pipeline.detector import Detector
from videojobs.worker.pipeline.errors import DetectorUnavailable

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def yolo(model_path):
    from ultralytics import YOLO

    return YOLO(str(model_path))


@pytest.fixture(scope="module")
def frame(sample_video):
    return read_frames(sample_video, [300])[0]


@pytest.mark.parametrize("frame_hw", [(720, 1280), (480, 640), (1280, 720), (360, 640)],
                         ids=["16:9", "4:3", "portrait", "sample"])
@pytest.mark.parametrize("imgsz", [640, 320])
def test_input_shape_is_what_ultralytics_predict_uses(yolo, model_path, tmp_path, frame_hw, imgsz):
    image = np.random.default_rng(7).integers(0, 256, (*frame_hw, 3), np.uint8)
    yolo.predict(image, imgsz=imgsz, verbose=False)
    tensor = yolo.predictor.preprocess([image]).numpy()
    expected = tuple(tensor.shape[2:])
    detector = Detector(str(model_path), tmp_path)
    assert detector.input_shape(frame_hw, imgsz) == expected
    # and the very same input values: letterboxed, RGB planes, x / 255 in float32 (into a buffer too)
    assert np.array_equal(detector.preprocess([image], expected), tensor)
    buffer = np.full((1, 3, *expected), np.nan, np.float32)
    assert detector.letterboxed(image, expected, buffer) is buffer and np.array_equal(buffer, tensor)
    if imgsz == 640:
        assert expected == {(720, 1280): (384, 640), (480, 640): (480, 640), (1280, 720): (640, 384),
                            (360, 640): (384, 640)}[frame_hw]


@pytest.fixture(scope="module")
def auto_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("auto-cache")


@pytest.fixture(scope="module")
def auto_detector(model_path, auto_cache):
    return Detector(str(model_path), auto_cache, "auto", threads=1)


def test_auto_measures_the_available_runtimes_and_records_the_choice(auto_detector, auto_cache):
    info = auto_detector.prepare((360, 640), 640)
    choice = info["backend_choice"]
    assert choice["requested"] == "auto" and "fastest" in choice["rule"]
    assert set(choice["forward_ms"]) == set(auto_detector.available_backends()) >= {"openvino", "torch"}
    assert info["backend"] == min(choice["forward_ms"], key=choice["forward_ms"].get)
    assert info["input_shape"] == [384, 640] and info["input_size"] == 640 and info["threads"] == 1
    assert info["sha256"].startswith("804c9171") and info["file"] == "yolov8n.pt"
    # One export per (sha256, shape, format) and one record per (model, shape, threads) in the cache.
    names = sorted(p.name for p in auto_cache.iterdir() if not p.name.startswith("."))
    assert names == ["yolov8n-804c9171bab39e51-384x640-t1-auto.json", "yolov8n-804c9171bab39e51-384x640_openvino_model"]


def test_a_second_worker_on_the_same_cache_reuses_the_record(model_path, auto_detector, auto_cache, monkeypatch):
    first = auto_detector.prepare((360, 640), 640)

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(runtimes, "median_forward_ms", no_measuring)
    again = Detector(str(model_path), auto_cache, "auto", threads=1).prepare((720, 1280), 640)  # same 384x640
    assert again == first


def _ultralytics_boxes(yolo, frame, conf):
    r = yolo.predict(frame, conf=conf, verbose=False)[0]
    return r.boxes.data.cpu().numpy().astype(np.float64)


def _matched(a: np.ndarray, b: np.ndarray) -> int:
    """Boxes of `a` with a same-class box in `b` at IoU >= 0.5 (greedy, one to one)."""
    used, n = set(), 0
    for box in a:
        for j, other in enumerate(b):
            if j in used or other[5] != box[5]:
                continue
            iw = min(box[2], other[2]) - max(box[0], other[0])
            ih = min(box[3], other[3]) - max(box[1], other[1])
            inter = max(iw, 0) * max(ih, 0)
            union = (box[2] - box[0]) * (box[3] - box[1]) + (other[2] - other[0]) * (other[3] - other[1]) - inter
            if inter / union >= 0.5:
                used.add(j)
                n += 1
                break
    return n


def test_torch_backend_gives_ultralytics_predict_detections(yolo, model_path, tmp_path, frame):
    expected = _ultralytics_boxes(yolo, frame, 0.1)
    detector = Detector(str(model_path), tmp_path, "torch", threads=1)
    info = detector.prepare(frame.shape[:2], 640)
    assert info["backend"] == "torch" and info["precision"] == "f32" and "backend_choice" not in info
    got = detector.detect([frame], conf=0.1, imgsz=640)[0]
    assert len(got) == len(expected) >= 3
    order = np.lexsort((expected[:, 1], expected[:, 0], expected[:, 5], -expected[:, 4]))
    assert np.allclose(got, expected[order], atol=1e-3)
    assert list(tmp_path.iterdir()) == []  # nothing exported for torch


def test_openvino_backend_matches_ultralytics_predict(yolo, model_path, auto_cache, frame):
    expected = _ultralytics_boxes(yolo, frame, 0.25)
    detector = Detector(str(model_path), auto_cache, "openvino", threads=1)
    got = detector.detect([frame, frame], conf=0.25, imgsz=640)
    assert detector.prepare(frame.shape[:2], 640)["backend"] == "openvino"
    assert np.array_equal(got[0], got[1])  # the same frame twice in a batch: the same boxes
    assert _matched(expected, got[0]) >= len(expected) - 1 and abs(len(got[0]) - len(expected)) <= 1


def test_nms_runs_torch_on_one_thread_and_the_torch_runtime_on_its_own_count(model_path, tmp_path, frame,
                                                                            monkeypatch):
    # Ultralytics' NMS runs in torch while the runtime's threads work on the next batch; at torch's default
    # count a second OpenMP thread spun on a core the forward needed (5 core-ms more per analysed frame on
    # the sample). torch's count belongs to the calling thread, so it is checked in a job-like thread that
    # already ran torch at a count of its own, and must have it back afterwards.
    import threading

    import torch
    from ultralytics.utils import nms

    seen: list[tuple[str, int]] = []
    real_nms = nms.non_max_suppression
    monkeypatch.setattr(nms, "non_max_suppression",
                        lambda *a, **k: seen.append(("nms", torch.get_num_threads())) or real_nms(*a, **k))
    detector = Detector(str(model_path), tmp_path, "torch", threads=2)
    detector.prepare(frame.shape[:2], 640)
    module = detector._session(detector.input_shape(frame.shape[:2], 640)).runtime.module
    module.register_forward_pre_hook(lambda *_: seen.append(("forward", torch.get_num_threads())))
    after: list[int] = []

    def job() -> None:
        torch.set_num_threads(3)
        torch.ones(4).sum()
        detector.detect([frame], conf=0.25, imgsz=640)
        after.append(torch.get_num_threads())

    thread = threading.Thread(target=job)
    thread.start()
    thread.join()
    assert seen == [("forward", 2), ("nms", 1)]
    assert after == [3]


def test_unavailable_backend_is_a_clear_error(tmp_path):
    from tests.integration.conftest_pipeline import SHARED_DIR

    onnx = SHARED_DIR / "models" / "yolov8n_fp32.onnx"
    detector = Detector(str(onnx), tmp_path, "torch")
    with pytest.raises(DetectorUnavailable, match="'torch' cannot run yolov8n_fp32.onnx"):
        detector.prepare((360, 640), 640)


def test_fixed_shape_onnx_file_still_runs_at_its_size(tmp_path, frame):
    from tests.integration.conftest_pipeline import SHARED_DIR

    detector = Detector(str(SHARED_DIR / "models" / "yolov8n_fp32.onnx"), tmp_path, "onnxruntime")
    assert detector.input_shape(frame.shape[:2], 640) == (640, 640)
    info = detector.prepare(frame.shape[:2], 640)
    assert info["backend"] == "onnxruntime" and info["input_shape"] == [640, 640]
    assert "bottle" in {detector.names[int(c)] for c in detector.detect([frame], 0.25, 640)[0][:, 5]}


_EXPORT_CHILD = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from videojobs.worker.pipeline.runtimes import cached, export_checkpoint

    model, cache, log = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])

    def produce(tmp):
        with log.open("a") as f:
            f.write(f"{os.getpid()}\\n")
        return export_checkpoint(model, "openvino", (384, 640), tmp)

    print(cached(cache, "yolov8n-384x640_openvino_model", produce))
""")


def test_two_workers_exporting_the_same_shape_at_once_leave_one_valid_model(model_path, tmp_path):
    import os

    import openvino as ov

    cache, log = tmp_path / "cache", tmp_path / "exports.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        str(REPO_ROOT / p) for p in ("libs/common", "services/worker", "."))}
    procs = [subprocess.Popen([sys.executable, "-c", _EXPORT_CHILD, str(model_path), str(cache), str(log)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    assert len(log.read_text().split()) == 1  # exported once, the other waited and reused it
    folders = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert [p.name for p in folders] == ["yolov8n-384x640_openvino_model"]
    assert not [p for p in cache.iterdir() if p.is_dir() and p.name.startswith(".")]  # no temporary left
    compiled = ov.Core().compile_model(str(next(folders[0].glob("*.xml"))), "CPU")
    assert list(compiled.input(0).shape) == [1, 3, 384, 640]
    assert list(compiled.output(0).shape) == [1, 84, 5040]


def test_an_export_killed_midway_leaves_nothing_once_a_worker_loads_the_detector(model_path, tmp_path):
    """A worker killed while exporting leaves its temporary folder; the next worker to load the
    detector on that cache removes it, even if that shape is never asked for again."""
    import signal
    import time

    cache, log = tmp_path / "cache", tmp_path / "exports.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        str(REPO_ROOT / p) for p in ("libs/common", "services/worker", "."))}
    child = subprocess.Popen([sys.executable, "-c", _EXPORT_CHILD, str(model_path), str(cache), str(log)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        def copied() -> bool:  # the exporter works beside a copy of the checkpoint in its folder
            return any(p.stat().st_size == model_path.stat().st_size
                       for p in cache.glob(f".*/{model_path.name}") if p.is_file())

        deadline = time.monotonic() + 120
        while not copied() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert child.poll() is None, "the export ended before it could be killed"
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
    left = [p.name for p in cache.iterdir() if p.is_dir() and p.name.startswith(".")]
    assert left, "a killed export leaves its temporary folder"
    assert sum(f.stat().st_size for d in left for f in (cache / d).rglob("*") if f.is_file()) >= 12_000_000
    Detector(str(model_path), cache, "torch").load()
    assert sorted(p.name for p in cache.iterdir()) == [".yolov8n-384x640_openvino_model.lock"]


def test_f32_precision_is_f32_on_every_cpu_and_auto_is_the_runtimes_default(model_path, auto_cache, frame):
    import openvino as ov

    default = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
    auto = Detector(str(model_path), auto_cache, "openvino", threads=1).prepare(frame.shape[:2], 640)
    f32 = Detector(str(model_path), auto_cache, "openvino", threads=1, precision="f32")
    assert auto["precision"] in str(default).lower().replace("bfloat16", "bf16").replace("float32", "f32")
    assert f32.prepare(frame.shape[:2], 640)["precision"] == "f32"
    expected = Detector(str(model_path), auto_cache, "torch", threads=1).detect([frame], conf=0.25, imgsz=640)[0]
    got = f32.detect([frame], conf=0.25, imgsz=640)[0]
    assert len(got) == len(expected) and np.allclose(got, expected, atol=0.05)  # f32 both: the same boxes
    with pytest.raises(DetectorUnavailable, match="detector_precision"):
        Detector(str(model_path), auto_cache, "openvino", precision="f16")


def test_openvino_threads_are_not_pinned_so_worker_processes_spread_over_the_cores(model_path, auto_cache, frame):
    # Pinned, the 1-thread runtimes of two worker processes both ran on core 0 (each 2.3x slower).
    detector = Detector(str(model_path), auto_cache, "openvino", threads=1)
    detector.prepare(frame.shape[:2], 640)
    runtime = detector._session(detector.input_shape(frame.shape[:2], 640)).runtime
    assert runtime.compiled.get_property("ENABLE_CPU_PINNING") is False
    assert runtime.compiled.get_property("INFERENCE_NUM_THREADS") == 1


def test_openvino_with_several_threads_runs_a_frame_per_stream_and_gives_the_same_output(model_path, auto_cache,
                                                                                         sample_video):
    # Threads run as one-thread streams (capped at the cores), the frames of a batch side by side; each frame's output
    # is bit-identical to the 1-thread runtime's, in the batch's order.
    frames = read_frames(sample_video, [0, 150, 300, 450, 600])
    one = Detector(str(model_path), auto_cache, "openvino", threads=1)
    two = Detector(str(model_path), auto_cache, "openvino", threads=2)
    shape = one.input_shape(frames[0].shape[:2], 640)
    runtime = two._session(shape).runtime
    assert runtime.compiled.get_property("NUM_STREAMS") == runtime.streams == min(2, len(os.sched_getaffinity(0)))
    assert runtime.compiled.get_property("ENABLE_CPU_PINNING") is False
    assert two.prepare(frames[0].shape[:2], 640)["threads"] == runtime.threads
    batch = one.preprocess(frames, shape)
    alone = one._session(shape).runtime(batch)
    side_by_side = runtime(batch)
    anchors = sum(shape[0] * shape[1] // (stride * stride) for stride in (8, 16, 32))
    assert side_by_side.shape == alone.shape == (5, 84, anchors)
    assert np.array_equal(side_by_side, alone)
    assert not np.array_equal(side_by_side[0], side_by_side[1])  # distinct frames stay in their slots
    assert np.array_equal(runtime(batch[2:3]), alone[2:3])  # a lone frame takes the single request
    # detect() hands each frame over as soon as it is letterboxed: the same detections as one thread
    assert all(np.array_equal(a, b) for a, b in zip(two.detect(frames, 0.25, 640), one.detect(frames, 0.25, 640)))

    def failing():
        yield batch[0:1]
        yield batch[1:2]
        raise RuntimeError("a frame could not be prepared")

    with pytest.raises(RuntimeError):
        runtime.run_frames(failing())
    assert np.array_equal(runtime(batch), alone)  # nothing in flight from the failed call lands here

    # Two calls in flight at once (the pipeline hands over a batch before finishing the last) each get
    # their own outputs, whichever is collected first; a discarded call gives its requests back.
    first = runtime.submit(batch[i:i + 1] for i in range(3))
    second = runtime.submit(batch[i:i + 1] for i in range(3, 5))
    assert np.array_equal(second.result(), alone[3:5]) and np.array_equal(first.result(), alone[:3])
    pooled = len(runtime._idle)
    runtime.submit(batch[i:i + 1] for i in range(5)).discard()
    assert len(runtime._idle) == pooled and np.array_equal(runtime(batch), alone)

    # Frames are prepared straight into the requests' own input tensors; one that fails to be prepared
    # gives its request back and the frames before it are finished, as above.
    def prepare(i, out=None):
        if i == 2:
            raise RuntimeError("a frame could not be letterboxed")
        return runtimes.as_input(batch[i:i + 1], out)

    with pytest.raises(RuntimeError):
        runtime.submit(range(4), prepare)
    assert len(runtime._idle) == pooled and np.array_equal(runtime.submit(range(2), prepare).result(), alone[:2])
    # a prepare that returns an array of its own rather than filling the buffer is copied in
    assert np.array_equal(runtime.submit(range(5), lambda i, out=None: batch[i:i + 1]).result(), alone)
