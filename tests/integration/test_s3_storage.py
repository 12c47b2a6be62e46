"""S3Storage behaviour beyond the shared contract, against the moto S3 server."""

from __future__ import annotations

import io
import uuid

import pytest

from videojobs.common.config import Settings
from videojobs.storage.factory import make_storage
from videojobs.storage.s3 import MIN_PART_SIZE, S3Storage

MiB = 1024 * 1024


class FailingStream(io.RawIOBase):
    def __init__(self, fail_after: int) -> None:
        self._fail_after = fail_after
        self._sent = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if self._sent >= self._fail_after:
            raise OSError("upload rejected mid-way")
        n = min(len(buffer), 256 * 1024, self._fail_after - self._sent)
        buffer[:n] = b"\0" * n
        self._sent += n
        return n


@pytest.fixture
def bucket() -> str:
    return f"vj-s3-{uuid.uuid4().hex[:12]}"


def make(endpoint: str, bucket: str, **kw) -> S3Storage:
    return S3Storage(endpoint, bucket, access_key="testing", secret_key="testing", part_size=MIN_PART_SIZE, **kw)


def test_failed_multipart_upload_is_aborted(s3_endpoint, bucket, monkeypatch):
    storage = make(s3_endpoint, bucket)
    client = storage.client
    calls: list[str] = []
    for name in ("_create_multipart_upload", "_upload_part", "_abort_multipart_upload"):
        original = getattr(client, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(client, name, spy)

    with pytest.raises(OSError):
        storage.save_file(FailingStream(2 * MIN_PART_SIZE + MiB), "inputs/big.mp4")

    assert calls == [
        "_create_multipart_upload", "_upload_part", "_upload_part", "_abort_multipart_upload",
    ]
    assert list(client._list_multipart_uploads(bucket).uploads) == []
    assert list(client.list_objects(bucket, recursive=True)) == []


def test_unfinished_multipart_uploads_are_visible_to_the_check(s3_endpoint, bucket):
    # Control for the test above: the server does list an upload nobody aborted.
    storage = make(s3_endpoint, bucket)
    storage.ping()
    upload_id = storage.client._create_multipart_upload(bucket, "inputs/x.mp4", {})
    try:
        assert [u.object_name for u in storage.client._list_multipart_uploads(bucket).uploads] == [
            "inputs/x.mp4"
        ]
    finally:
        storage.client._abort_multipart_upload(bucket, "inputs/x.mp4", upload_id)


def test_bucket_is_created_on_first_write(s3_endpoint, bucket):
    storage = make(s3_endpoint, bucket)
    assert not storage.client.bucket_exists(bucket)  # construction connected to nothing
    assert not storage.exists("inputs/a.mp4")  # reads on a missing bucket: not found
    storage.save_bytes(b"x", "inputs/a.mp4")
    assert storage.client.bucket_exists(bucket)
    # A second adapter (another process) finds the bucket already there.
    other = make(s3_endpoint, bucket)
    other.save_bytes(b"y", "inputs/b.mp4")
    assert other.read_bytes("inputs/a.mp4") == b"x"


def test_ping_creates_a_missing_bucket(s3_endpoint, bucket):
    storage = make(s3_endpoint, bucket)
    storage.ping()
    assert storage.client.bucket_exists(bucket)


def test_downloads_are_temp_copies_removed_on_release(s3_endpoint, bucket, tmp_path):
    storage = make(s3_endpoint, bucket, tmp_dir=tmp_path / "dl")
    storage.save_bytes(b"frames", "inputs/v.mp4")
    first = storage.load_file("inputs/v.mp4")
    second = storage.load_file("inputs/v.mp4")
    assert first != second and first.read_bytes() == second.read_bytes() == b"frames"
    storage.release_local(first)
    assert not first.exists() and second.exists()
    with storage.local_copy("inputs/v.mp4") as third:
        assert third.read_bytes() == b"frames"
    assert not third.exists()
    storage.release_local(second)
    storage.release_local(second)  # twice: no error
    assert list((tmp_path / "dl").iterdir()) == []

    foreign = tmp_path / "not-ours.mp4"
    foreign.write_bytes(b"keep")
    storage.release_local(foreign)
    assert foreign.exists()


def test_the_factory_with_a_prefix(s3_endpoint, bucket):
    settings = Settings(
        storage_url=f"s3://{bucket}/tenant-a",
        s3_endpoint=f"http://{s3_endpoint}",
        s3_access_key="testing",
        s3_secret_key="testing",
    )
    storage = make_storage(settings)
    storage.save_bytes(b"{}", "results/r.json")
    assert [o.object_name for o in storage.client.list_objects(bucket, recursive=True)] == [
        "tenant-a/results/r.json"
    ]
    stat = storage.client.stat_object(bucket, "tenant-a/results/r.json")
    assert stat.content_type == "application/json"
    assert storage.read_bytes("results/r.json") == b"{}"
