"""Frame images: kept by the worker while it analyses, drawn on and laid out by the api."""

from __future__ import annotations

import io
from datetime import timedelta

import numpy as np
import pytest
from PIL import Image

from tests.fakes import FakeAnalyzer, FakeJobRepository, fake_detections
from videojobs.api.frames import FrameImages, draw_detections, spread
from videojobs.common.adapters.memory_queue import InMemoryQueue
from videojobs.common.errors import FrameNotFound, JobNotFound, PoisonInput, ResultsNotReady
from videojobs.common.frames import FrameImageStore, SheetLayout, frame_image_key
from videojobs.common.job import Job, JobStatus
from videojobs.common.tenants import Caller
from videojobs.common.results import FrameAnalysis, FrameResult, OcrLine, Box
from videojobs.storage.local import LocalFolderStorage
from videojobs.worker.frames import FrameImageWriter
from videojobs.worker.worker import JobWorker, WorkerPolicy

MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 100


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_frames_are_scaled_to_the_longest_side_and_encoded_as_jpeg(tmp_path):
    writer = FrameImageWriter(FrameImageStore(LocalFolderStorage(tmp_path)), max_side=1280)
    big = decoded(writer.encode(np.zeros((1080, 1920, 3), np.uint8)))
    assert big.format == "JPEG" and big.size == (1280, 720)
    portrait = decoded(writer.encode(np.zeros((1920, 1080, 3), np.uint8)))
    assert portrait.size == (720, 1280)
    small = decoded(writer.encode(np.zeros((360, 640, 3), np.uint8)))
    assert small.size == (640, 360)  # never scaled up
    assert not FrameImageWriter(FrameImageStore(LocalFolderStorage(tmp_path)), max_side=0).enabled


@pytest.fixture
def env(tmp_path):
    repo, queue = FakeJobRepository(), InMemoryQueue(ack_wait_seconds=30)
    storage = LocalFolderStorage(tmp_path / "store")
    analyzer = FakeAnalyzer(frames=4, size=(320, 180))
    analyzer.detections_for = fake_detections
    worker = JobWorker(queue, storage, repo, analyzer, WorkerPolicy(lease=timedelta(seconds=30)), worker_id="w1",
                       frame_images=FrameImageWriter(FrameImageStore(storage), max_side=160))

    def submit() -> str:
        job = Job.submit("yolo")
        storage.save_bytes(MP4, job.input_key)
        repo.add(job)
        queue.enqueue(job.job_id)
        return job.job_id

    return type("Env", (), dict(repo=repo, storage=storage, analyzer=analyzer, worker=worker,
                                submit=staticmethod(submit)))


def test_the_worker_keeps_an_image_of_every_analysed_frame(env):
    job_id = env.submit()
    env.worker.run_once()
    assert env.repo.get(job_id).status is JobStatus.COMPLETED
    for k, index in enumerate((0, 30, 60, 90)):
        image = decoded(env.storage.read_bytes(frame_image_key(job_id, index)))
        assert image.size == (160, 90)  # scaled to max_side
        # the very frame the analyzer saw (its blue channel says which one), within JPEG noise
        expected = env.analyzer.frame_image(k)[::2, ::2, 0].astype(int)
        assert np.abs(np.asarray(image.convert("RGB"))[..., 2].astype(int) - expected).mean() < 8


def test_a_failed_job_leaves_no_frame_images(env):
    job_id = env.submit()
    env.analyzer.raise_error = PoisonInput("the video is cut off")  # after two frames
    env.worker.run_once()
    assert env.repo.get(job_id).status is JobStatus.FAILED
    assert not any(env.storage.exists(frame_image_key(job_id, i)) for i in (0, 30, 60, 90))
    assert not list((env.storage.root / "frames").rglob("*.jpg"))


class Jobs:
    """The one JobsService method FrameImages uses, over fixed (indexed) documents of tenant `a`."""

    def __init__(self, documents) -> None:
        self.documents = documents
        self.lookups = 0

    def stored_results(self, caller, job_id):
        self.lookups += 1
        if caller != A:
            raise JobNotFound(job_id)
        if job_id not in self.documents:
            raise ResultsNotReady(job_id, "RUNNING")
        return Job.submit("yolo", job_id=job_id), self.documents[job_id]


A, B = Caller("a"), Caller("b")


def test_frame_images_use_cases(env):
    job_id = env.submit()
    env.worker.run_once()
    job = env.repo.get(job_id)
    from videojobs.common.results import IndexedResults

    jobs = Jobs({job_id: IndexedResults.from_bytes(env.storage.read_bytes(job.output_key))})
    frames = FrameImages(jobs, FrameImageStore(env.storage))
    plain = frames.frame_image(A, job_id, 30)
    assert plain.data == env.storage.read_bytes(frame_image_key(job_id, 30)) and (plain.width, plain.height) == (160, 90)
    annotated = frames.frame_image(A, job_id, 30, annotated=True)
    assert annotated.data != plain.data and annotated.content_type == "image/jpeg"
    assert frames.frame_image(A, job_id, 30, annotated=True) is annotated  # cached...
    assert jobs.lookups == 3  # ...but the job is looked up every time (a deleted job must not be served)
    with pytest.raises(JobNotFound):  # another tenant: not even the cached image
        frames.frame_image(B, job_id, 30, annotated=True)
    with pytest.raises(JobNotFound):
        frames.contact_sheet(B, job_id)
    with pytest.raises(FrameNotFound):
        frames.frame_image(A, job_id, 31)
    with pytest.raises(ResultsNotReady):
        frames.frame_image(A, "00000000-0000-4000-8000-000000000000", 0)
    sheet = frames.contact_sheet(A, job_id, SheetLayout(columns=2, tile_width=100))
    assert sheet.frame_indices == (0, 30, 60, 90) and decoded(sheet.data).format == "PNG"
    assert sheet.width == 2 * 100 + 3 * 6
    env.storage.delete_file(frame_image_key(job_id, 60))  # a missing image: a blank tile, boxes still drawn
    assert frames.contact_sheet(A, job_id, SheetLayout(columns=1, tile_width=64)).frame_indices == (0, 30, 60, 90)


def test_boxes_and_ocr_lines_are_drawn_where_reported():
    image = Image.new("RGB", (640, 360), (128, 128, 128))
    frame = FrameResult(frame_index=0, timestamp_ms=0.0, result=FrameAnalysis(
        detections=fake_detections(0, 640, 360),
        ocr=[OcrLine(text="HELLO", confidence=0.9, box=Box(x1=400, y1=300, x2=500, y2=330))]))
    draw_detections(image, frame, 640, 360)
    px = np.asarray(image).astype(int)
    assert tuple(px[150, 40]) != (128, 128, 128) and tuple(px[150, 120]) != (128, 128, 128)  # bottle box edges
    assert tuple(px[300, 450]) == (255, 255, 255)  # the OCR line's box
    assert tuple(px[100, 80]) == (128, 128, 128)  # inside the box: untouched
    # Boxes follow box_norm, so a kept image smaller than the video still gets them in place.
    small = Image.new("RGB", (320, 180), (128, 128, 128))
    draw_detections(small, frame, 640, 360)
    assert tuple(np.asarray(small)[75, 20]) != (128, 128, 128)


def test_spread_keeps_first_and_last():
    frames = [FrameResult(frame_index=i, timestamp_ms=0.0, result=FrameAnalysis()) for i in range(10)]
    assert [f.frame_index for f in spread(frames, 4)] == [0, 3, 6, 9]
    assert [f.frame_index for f in spread(frames, 1)] == [0]
    assert len(spread(frames, 50)) == 10
