"""S3Storage behaviour beyond the shared contract, against the S3 test server (SeaweedFS)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from minio import Minio
from minio.error import S3Error

from tests.conftest import load_script
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


# -- a host whose clock is off --------------------------------------------------------------------------
# SeaweedFS's answers to a signature off its clock: AccessDenied where minio reads no body (HEAD).
SKEW_REFUSALS = {"AccessDenied", "RequestTimeTooSkewed"}


@pytest.mark.parametrize("host_off_by", [timedelta(minutes=20), timedelta(minutes=-40)])
def test_a_host_clock_far_off_the_servers_is_corrected_from_its_refusal(s3_endpoint, bucket, monkeypatch,
                                                                        host_off_by, caplog):
    """S3 servers refuse signatures more than 15 minutes off their clock; the first refusal's Date sets the
    correction, that request is made again, and the ones after are signed right the first time."""
    from videojobs.storage import s3

    monkeypatch.setattr(s3, "host_now", lambda: datetime.now(timezone.utc) + host_off_by)
    storage = make(s3_endpoint, bucket)
    refusals: list[str] = []
    original = Minio._url_open

    def counting(self, *args, **kwargs):
        try:
            return original(self, *args, **kwargs)
        except S3Error as exc:
            if exc.response.status == 403:  # not the 404s of a bucket not made yet
                refusals.append(exc.code)
            raise

    monkeypatch.setattr(Minio, "_url_open", counting)
    with caplog.at_level("WARNING", logger="videojobs.storage.s3"):
        storage.save_bytes(b"x" * 100, "inputs/a.mp4")
    assert len(refusals) == 1 and set(refusals) <= SKEW_REFUSALS
    assert abs(storage.clock.correction + host_off_by) < timedelta(seconds=3)
    assert "requests are signed by the server's clock" in caplog.text
    assert storage.read_bytes("inputs/a.mp4") == b"x" * 100
    with storage.local_copy("inputs/a.mp4") as copy:
        assert copy.read_bytes() == b"x" * 100
    storage.delete_file("inputs/a.mp4")
    assert not storage.exists("inputs/a.mp4")
    assert len(refusals) == 1  # none after the first

    # The host's clock is fixed: the next request is refused once more and the correction follows it back.
    monkeypatch.setattr(s3, "host_now", lambda: datetime.now(timezone.utc))
    storage.ping()
    assert len(refusals) == 2
    assert abs(storage.clock.correction) < timedelta(seconds=3)


def test_a_refusal_with_the_clocks_in_agreement_is_not_made_again(s3_endpoint, bucket, monkeypatch):
    from videojobs.storage.s3 import S3Storage

    storage = S3Storage(s3_endpoint, bucket, access_key="testing", secret_key="not-the-secret")
    calls = []
    original = Minio._url_open
    monkeypatch.setattr(Minio, "_url_open", lambda self, *a, **kw: calls.append(a[0]) or original(self, *a, **kw))
    with pytest.raises(S3Error) as refused:
        storage.save_bytes(b"x", "inputs/a.mp4")
    assert refused.value.code in {"AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId"}
    assert calls == ["HEAD"]  # the bucket check, once: not made again
    assert storage.clock.correction == timedelta(0)


_SKEWED_PROCESS = """
import json, sys
from datetime import datetime, timezone
from minio import Minio
from minio.error import S3Error
from videojobs.storage.s3 import S3Storage

endpoint, bucket = sys.argv[1], sys.argv[2]
seen = {"host_clock": datetime.now(timezone.utc).timestamp()}
try:
    Minio(endpoint, access_key="testing", secret_key="testing", secure=False).bucket_exists(bucket)
    seen["plain_minio"] = "accepted"
except S3Error as exc:
    seen["plain_minio"] = exc.code
storage = S3Storage(endpoint, bucket, access_key="testing", secret_key="testing")
storage.save_bytes(b"written by a host whose clock is off", "results/a.json")
seen["read_back"] = storage.read_bytes("results/a.json").decode()
seen["correction"] = storage.clock.correction.total_seconds()
print(json.dumps(seen))
"""


@pytest.mark.parametrize("host_off_by", [1200, -3600])
def test_a_process_whose_host_clock_is_off_reads_and_writes_the_bucket(s3_endpoint, bucket, host_off_by):
    """The whole process under libfaketime, every clock call in it off (monotonic clocks aside): what a pod
    on a node whose time synchronisation broke sees. minio's own client is refused there (the control)."""
    env = {**os.environ, **load_script("servers").host_clock_off(host_off_by)}
    done = subprocess.run([sys.executable, "-c", _SKEWED_PROCESS, s3_endpoint, bucket], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.splitlines()[-1])
    assert abs(seen["host_clock"] - datetime.now(timezone.utc).timestamp() - host_off_by) < 60  # the fake took
    assert seen["plain_minio"] in SKEW_REFUSALS
    assert seen["read_back"] == "written by a host whose clock is off"
    assert abs(seen["correction"] + host_off_by) < 60
