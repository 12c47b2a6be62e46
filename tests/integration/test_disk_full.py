"""A full disk is a temporary fault: refused or retried, never a lost job or a partial file.

The disks are real: a small tmpfs mounted for each test (mounting needs root, as CI runs), filled
with a file until only a few KiB are left, then emptied again.
"""

import dataclasses
import errno
import os
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.fakes import FakeAnalyzer, FakeJobRepository
from tests.integration.conftest import MAX_UPLOAD, SAMPLE
from videojobs.api.bootstrap import build_api
from videojobs.common.adapters.memory_queue import InMemoryQueue
from videojobs.common.config import Settings
from videojobs.common.errors import OutOfSpace, TemporaryFault
from videojobs.common.job import Job, JobStatus
from videojobs.common.options import AnalysisOptions
from videojobs.common.results import FrameAnalysis, FrameResult
from videojobs.common.retry import Backoff
from videojobs.gateway.app import create_app
from videojobs.storage.local import LocalFolderStorage
from videojobs.worker.pipeline import runtimes
from videojobs.worker.pipeline.service import _FrameSpool
from videojobs.worker.worker import JobWorker, WorkerPolicy


class SmallDisk:
    """A tmpfs of `size` bytes at `path`; ``fill(leave)`` leaves about `leave` bytes free, ``empty()`` frees them."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        path.mkdir(parents=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
        self.filler = path / "filler"

    def free(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self, leave: int = 0) -> None:
        with open(self.filler, "ab") as f:
            f.write(b"\0" * max(0, self.free() - leave))
        assert self.free() <= leave + 4096

    def empty(self) -> None:
        self.filler.unlink(missing_ok=True)

    def files(self) -> list[str]:
        """Every file on the disk but the filler, relative to it."""
        return sorted(str(p.relative_to(self.path)) for p in self.path.rglob("*")
                      if p.is_file() and p != self.filler)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture
def disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    small = SmallDisk(tmp_path / "disk", 2 * 1024 * 1024)
    yield small
    small.unmount()


def test_local_storage_refuses_a_write_to_a_full_disk_as_out_of_space_and_keeps_nothing(disk):
    storage = LocalFolderStorage(disk.path / "storage")
    storage.save_bytes(b"x", "inputs/before.mp4")
    disk.fill(leave=16 * 1024)
    with pytest.raises(OutOfSpace) as raised:
        storage.save_bytes(os.urandom(256 * 1024), "inputs/job.mp4")
    assert isinstance(raised.value, TemporaryFault)
    assert raised.value.public_detail == "storage is out of space; retry later"
    assert disk.files() == ["storage/inputs/before.mp4"]  # no partial .part file
    disk.empty()
    storage.save_bytes(b"y" * 256 * 1024, "inputs/job.mp4")  # room again: the same write works
    assert storage.read_bytes("inputs/job.mp4") == b"y" * 256 * 1024


def test_a_results_spool_on_a_full_scratch_folder_is_out_of_space(disk):
    frames = [FrameResult(frame_index=i, timestamp_ms=float(i), result=FrameAnalysis()) for i in range(2000)]
    disk.fill(leave=16 * 1024)
    with _FrameSpool(disk.path / "scratch") as spool:
        with pytest.raises(OutOfSpace, match="the scratch folder is out of space"):
            for k in range(0, len(frames), 100):
                spool.add(frames[k:k + 100])
    assert disk.files() == []  # the spool is an unnamed file: gone with its handle
    disk.empty()
    with _FrameSpool(disk.path / "scratch") as spool:  # room again
        spool.add(frames)
        assert spool.frames == 2000


def test_an_export_into_a_full_model_cache_is_out_of_space_and_leaves_no_entry(disk):
    cache = disk.path / "models"

    def export(tmp: Path) -> Path:
        out = tmp / "model.bin"
        out.write_bytes(os.urandom(512 * 1024))
        return out

    disk.fill(leave=64 * 1024)
    with pytest.raises(OutOfSpace, match="the model cache is out of space"):
        runtimes.cached(cache, "model.bin", export)
    assert [p.name for p in cache.iterdir()] == [".model.bin.lock"]  # no half-written entry or temp folder
    disk.empty()
    assert runtimes.cached(cache, "model.bin", export).stat().st_size == 512 * 1024


def _aged_export(cache: Path, name: str, size: int, age: float) -> Path:
    folder = cache / name
    folder.mkdir(parents=True)
    (folder / "model.bin").write_bytes(os.urandom(size))
    os.utime(folder, (time.time() - age, time.time() - age))
    return folder


def _onnx_export(size: int):
    def produce(tmp: Path) -> Path:
        out = tmp / "new.onnx"
        out.write_bytes(os.urandom(size))
        return out
    return produce


def test_a_model_cache_full_of_its_own_old_exports_makes_room_for_a_new_one(disk):
    cache = disk.path / "models"
    _aged_export(cache, "old_openvino_model", 768 * 1024, age=3600)
    _aged_export(cache, "recent_openvino_model", 128 * 1024, age=10)  # may be loading: stays
    (cache / "m-auto.json").write_text("{}")  # auto's record: stays
    disk.fill(leave=64 * 1024)
    made = runtimes.cached(cache, "new.onnx", _onnx_export(512 * 1024))  # no budget: the disk's own bound
    assert made.stat().st_size == 512 * 1024
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) == [
        "m-auto.json", "new.onnx", "recent_openvino_model"]
    assert sorted(p.name for p in cache.iterdir() if p.name.startswith(".")) == [  # no temp folder or evicted copy
        ".new.onnx.lock", ".old_openvino_model.lock"]


def test_a_model_cache_full_of_exports_in_use_is_out_of_space_and_keeps_them(disk):
    cache = disk.path / "models"
    _aged_export(cache, "recent_openvino_model", 256 * 1024, age=10)
    disk.fill(leave=64 * 1024)
    with pytest.raises(OutOfSpace, match="the model cache is out of space"):
        runtimes.cached(cache, "new.onnx", _onnx_export(512 * 1024))
    assert disk.files() == ["models/.new.onnx.lock", "models/recent_openvino_model/model.bin"]  # no temp folder


def test_other_os_errors_are_not_taken_for_a_full_disk(tmp_path):
    def export(tmp: Path) -> Path:
        raise OSError(errno.EACCES, "permission denied")

    with pytest.raises(OSError) as raised:
        runtimes.cached(tmp_path, "model.bin", export)
    assert not isinstance(raised.value, TemporaryFault) and raised.value.errno == errno.EACCES


def test_a_worker_whose_disk_is_full_hands_the_job_back_and_completes_it_once_there_is_room(disk):
    repo, queue = FakeJobRepository(), InMemoryQueue(ack_wait_seconds=30)
    storage = LocalFolderStorage(disk.path / "storage")
    policy = WorkerPolicy(lease=timedelta(seconds=30), heartbeat_seconds=0.05, max_attempts=3,
                          progress_interval_seconds=0.0, backoff=Backoff(0.01, 0.02),
                          commit_backoff=Backoff(0.01, 0.02), fault_window=timedelta(seconds=30))
    worker = JobWorker(queue, storage, repo, FakeAnalyzer(frames=400), policy, worker_id="w1")
    job = Job.submit("yolo_ocr", AnalysisOptions())
    storage.save_bytes(SAMPLE.read_bytes()[:4096], job.input_key)
    repo.add(job)
    queue.enqueue(job.job_id)
    disk.fill(leave=4 * 1024)  # the results (about 40 KiB) do not fit

    # The results write waits in place (heartbeating) for the fault window; shorten it to see the hand-back.
    worker._policy = dataclasses.replace(policy, fault_window=timedelta(seconds=0.3))
    assert worker.run_once(timeout=2)
    handed_back = repo.get(job.job_id)
    assert handed_back.status is JobStatus.PENDING and handed_back.faults == 1 and handed_back.crashes == 0
    assert disk.files() == [f"storage/{job.input_key}"]  # no results, no partial file

    worker._policy = policy
    disk.empty()
    deadline = time.monotonic() + 10
    while repo.get(job.job_id).status is not JobStatus.COMPLETED:
        assert worker.run_once(timeout=2) and time.monotonic() < deadline
    done = repo.get(job.job_id)
    assert done.frames_done == 400 and storage.exists(done.output_key)


def test_a_submit_to_a_full_storage_is_503_out_of_space_and_creates_no_job(disk, tmp_path):
    settings = Settings(data_dir=tmp_path / "data", storage_url=f"file://{disk.path / 'storage'}", grpc_port=0,
                        max_upload_bytes=MAX_UPLOAD)
    api = build_api(settings)
    api.start()
    try:
        gateway = create_app(Settings(max_upload_bytes=MAX_UPLOAD, upload_chunk_bytes=64 * 1024),
                             f"127.0.0.1:{api.port}")
        with TestClient(gateway) as client:
            video = SAMPLE.read_bytes()
            disk.fill(leave=64 * 1024)
            r = client.post("/video/submit", files={"file": ("clip.mp4", video, "video/mp4")})
            assert r.status_code == 503, r.text
            body = r.json()
            assert body["type"] == "/problems/service-unavailable"
            assert body["detail"] == "storage is out of space; retry later"
            assert client.get("/video/jobs").json()["jobs"] == []
            assert disk.files() == []  # nothing stored, no partial file
            disk.empty()
            r = client.post("/video/submit", files={"file": ("clip.mp4", video, "video/mp4")})
            assert r.status_code == 202, r.text
    finally:
        api.stop(grace=0)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_or_quota_is_recognised_through_the_errors_raised_from_it(code):
    from videojobs.common.errors import is_out_of_space, out_of_space_is_temporary

    def wrapped() -> None:  # e.g. a library that reports the write's failure as an error of its own
        try:
            raise OSError(code, os.strerror(code))
        except OSError as exc:
            raise RuntimeError("export failure") from exc

    assert is_out_of_space(OSError(code, "x")) and not is_out_of_space(OSError(errno.EIO, "x"))
    with pytest.raises(OutOfSpace) as raised:
        with out_of_space_is_temporary("storage"):
            wrapped()
    assert isinstance(raised.value.__cause__, RuntimeError)


def test_an_upload_the_gateways_spool_has_no_room_for_is_503_not_a_malformed_body(disk, api, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(disk.path))  # where the gateway spools uploads
    gateway = create_app(Settings(max_upload_bytes=MAX_UPLOAD, upload_chunk_bytes=64 * 1024), f"127.0.0.1:{api.port}")
    with TestClient(gateway) as client:
        disk.fill(leave=64 * 1024)
        r = client.post("/video/submit", files={"file": ("clip.mp4", SAMPLE.read_bytes(), "video/mp4")})
        assert r.status_code == 503, r.text
        assert r.json()["detail"] == "the upload spool is out of space; retry later"
        assert disk.files() == []  # the spool is an unnamed file
        disk.empty()
        r = client.post("/video/submit", files={"file": ("clip.mp4", SAMPLE.read_bytes(), "video/mp4")})
        assert r.status_code == 202, r.text


def test_an_s3_download_into_a_full_scratch_folder_is_out_of_space_and_leaves_nothing(disk, s3_endpoint):
    import uuid

    from videojobs.storage.s3 import MIN_PART_SIZE, S3Storage

    storage = S3Storage(s3_endpoint, f"vj-full-{uuid.uuid4().hex[:12]}", access_key="testing", secret_key="testing",
                        part_size=MIN_PART_SIZE, tmp_dir=disk.path / "scratch")
    storage.save_bytes(os.urandom(512 * 1024), "inputs/job.mp4")
    disk.fill(leave=64 * 1024)
    with pytest.raises(OutOfSpace, match="the scratch folder is out of space"):
        with storage.local_copy("inputs/job.mp4"):
            pass
    assert disk.files() == [] and list((disk.path / "scratch").iterdir()) == []  # no partial copy, no folder
    disk.empty()
    with storage.local_copy("inputs/job.mp4") as local:
        assert local.stat().st_size == 512 * 1024
