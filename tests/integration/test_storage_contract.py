"""One contract for every StorageService adapter: local folder and S3 (moto server)."""

from __future__ import annotations

import gc
import hashlib
import io
import random
import tracemalloc
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from videojobs.common.errors import StorageObjectNotFound
from videojobs.common.ports.storage import StorageService
from videojobs.storage.local import LocalFolderStorage
from videojobs.storage.s3 import MIN_PART_SIZE, S3Storage

MiB = 1024 * 1024
PART = MIN_PART_SIZE  # smallest legal part: multipart kicks in early, memory stays low


class GeneratedStream(io.RawIOBase):
    """A read-only file object producing `size` pseudo-random bytes in small chunks,
    never holding more than one chunk; optionally raises after `fail_after` bytes."""

    def __init__(self, size: int, seed: int = 0, chunk: int = 64 * 1024, fail_after: int | None = None):
        self._size = size
        self._chunk = chunk
        self._fail_after = fail_after
        self._rng = random.Random(seed)
        self._sent = 0
        self._pending = b""
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if self._fail_after is not None and self._sent >= self._fail_after:
            raise OSError("upload rejected mid-way (simulated over-size upload)")
        if not self._pending:
            n = min(self._chunk, self._size - self._sent)
            if n <= 0:
                return 0
            self._pending = self._rng.randbytes(n)
            self.sha256.update(self._pending)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        self._sent += n
        return n


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(MiB), b""):
            digest.update(block)
    return digest.hexdigest()


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path) -> Iterator[StorageService]:
    if request.param == "local":
        yield LocalFolderStorage(tmp_path / "store")
        return
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"vj-test-{uuid.uuid4().hex[:12]}"
    yield S3Storage(
        endpoint, bucket, access_key="testing", secret_key="testing",
        part_size=PART, tmp_dir=tmp_path / "downloads",
    )


@pytest.fixture
def job_id() -> str:
    return str(uuid.uuid4())


def leftovers(storage: StorageService) -> list[str]:
    """Partial writes an adapter could leave: temp files, unfinished multipart uploads."""
    if isinstance(storage, LocalFolderStorage):
        return [str(p) for p in storage.root.rglob("*") if p.is_file()]
    assert isinstance(storage, S3Storage)
    uploads = storage.client._list_multipart_uploads(storage.bucket).uploads
    objects = storage.client.list_objects(storage.bucket, recursive=True)
    return [u.object_name for u in uploads] + [o.object_name for o in objects]


def test_round_trip_of_a_multi_mb_stream_with_bounded_memory(storage, job_id, tmp_path):
    size = 6 * PART + 123_457  # seven parts on S3, the last one short
    src = GeneratedStream(size, seed=7)
    key = f"inputs/{job_id}.mp4"

    gc.collect()
    tracemalloc.start()
    try:
        assert storage.save_file(src, key) == key
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # minio holds the part being read, a copy while slicing it and the previous one:
    # about three parts whatever the file size (here 6 parts and a bit).
    assert peak < 3.5 * PART, f"upload peaked at {peak / MiB:.1f} MiB"

    assert storage.exists(key)
    with storage.local_copy(key) as local:
        assert local.suffix == ".mp4"
        assert local.stat().st_size == size
        assert sha256_of(local) == src.sha256.hexdigest()


def test_a_range_of_an_object_is_its_bytes_there(storage, job_id):
    data = bytes(range(256)) * 40
    key = f"results/{job_id}.json"
    storage.save_bytes(data, key)
    if isinstance(storage, S3Storage):  # a range is fetched alone, not from a downloaded copy
        storage.load_file = lambda path: pytest.fail("read_range downloaded the whole object")
    for start, end in [(0, 1), (0, len(data)), (100, 3000), (len(data) - 5, len(data)), (len(data) - 5, len(data) + 50),
                       (len(data), len(data) + 10), (len(data) + 100, len(data) + 200), (7, 7)]:
        assert storage.read_range(key, start, end) == data[start:end], (start, end)
    with pytest.raises(StorageObjectNotFound):
        storage.read_range(f"results/{job_id}-missing.json", 0, 10)


def test_a_stored_object_is_read_as_it_comes_without_a_copy_on_disk(storage, job_id):
    data = bytes(range(256)) * 5000  # 1.2 MiB: more than one read
    key = f"results/{job_id}.json"
    storage.save_bytes(data, key)
    storage.load_file = lambda path: pytest.fail("open_stored copied the object to disk")
    with storage.open_stored(key) as stored:
        assert stored.size == len(data)
        assert stored.read(10) == data[:10]
        assert b"".join(stored.chunks(7777)) == data[10:]
        assert stored.read(10) == b""
    with storage.open_stored(key) as stored:
        assert stored.read_all() == data
    assert storage.read_bytes(key) == data
    with pytest.raises(StorageObjectNotFound):
        with storage.open_stored(f"results/{job_id}-missing.json"):
            pass


def test_load_of_a_missing_key_raises_not_found(storage, job_id):
    with pytest.raises(StorageObjectNotFound):
        storage.load_file(f"inputs/{job_id}.mp4")
    with pytest.raises(StorageObjectNotFound):
        storage.read_bytes(f"results/{job_id}.json")


def test_exists_and_idempotent_delete(storage, job_id):
    key = f"results/{job_id}.json"
    assert not storage.exists(key)
    storage.delete_file(key)  # nothing there: no error
    storage.save_bytes(b'{"frames": []}', key)
    assert storage.exists(key)
    assert storage.read_bytes(key) == b'{"frames": []}'
    storage.delete_file(key)
    assert not storage.exists(key)
    storage.delete_file(key)
    with pytest.raises(StorageObjectNotFound):
        storage.load_file(key)


def test_keys_are_independent_and_overwritable(storage, job_id):
    storage.save_bytes(b"video", f"inputs/{job_id}.mp4")
    storage.save_bytes(b"results v1", f"results/{job_id}.json")
    storage.save_bytes(b"results v2", f"results/{job_id}.json")
    assert storage.read_bytes(f"inputs/{job_id}.mp4") == b"video"
    assert storage.read_bytes(f"results/{job_id}.json") == b"results v2"


@pytest.mark.parametrize("fail_after", [MiB, 2 * PART + MiB], ids=["first-part", "third-part"])
def test_a_failing_source_leaves_nothing_behind(storage, job_id, fail_after):
    key = f"inputs/{job_id}.mp4"
    with pytest.raises(OSError, match="rejected mid-way"):
        storage.save_file(GeneratedStream(4 * PART, fail_after=fail_after), key)
    assert not storage.exists(key)
    assert leftovers(storage) == []


def test_a_failed_overwrite_keeps_the_previous_object(storage, job_id):
    key = f"inputs/{job_id}.mp4"
    storage.save_bytes(b"first upload", key)
    with pytest.raises(OSError):
        storage.save_file(GeneratedStream(2 * PART, fail_after=PART + MiB), key)
    assert storage.read_bytes(key) == b"first upload"


@pytest.mark.parametrize("bad_key", ["../escape.mp4", "/abs/key.mp4", "inputs/../../x"])
def test_keys_escaping_the_store_are_refused(storage, bad_key):
    with pytest.raises(ValueError):
        storage.save_bytes(b"x", bad_key)


def test_ping(storage):
    storage.ping()
