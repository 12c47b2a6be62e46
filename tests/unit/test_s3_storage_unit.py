"""S3Storage without a server: configuration parsing, key checks, unreachable endpoint."""

from __future__ import annotations

import io
import time

import pytest

from tests.conftest import load_script
from videojobs.common.config import Settings
from videojobs.common.errors import TemporaryFault
from videojobs.storage.factory import make_storage
from videojobs.storage.s3 import MIN_PART_SIZE, S3Storage


closed_port = load_script("servers").free_port  # a loopback port nothing listens on


def test_the_factory_parses_bucket_prefix_and_endpoint():
    storage = make_storage(
        Settings(storage_url="s3://media/jobs/", s3_endpoint="https://minio.internal:9000")
    )
    assert storage.bucket == "media"
    assert storage._key("inputs/a.mp4") == "jobs/inputs/a.mp4"
    assert storage.client._base_url.is_https

    plain = make_storage(Settings(storage_url="s3://media", s3_endpoint="127.0.0.1:9000"))
    assert plain._key("inputs/a.mp4") == "inputs/a.mp4"
    assert not plain.client._base_url.is_https


@pytest.mark.parametrize("url", ["s3://", "ftp://media"])
def test_the_factory_refuses_unusable_urls(url):
    with pytest.raises(ValueError):
        make_storage(Settings(storage_url=url))


@pytest.mark.parametrize("bucket", ["", "b", "Upper_Case"])
def test_invalid_bucket_names_are_refused_at_construction(bucket):
    with pytest.raises(ValueError):
        S3Storage("127.0.0.1:9000", bucket)


def test_part_size_below_the_s3_minimum_is_refused():
    with pytest.raises(ValueError):
        S3Storage("127.0.0.1:9000", "bkt", part_size=MIN_PART_SIZE - 1)


@pytest.mark.parametrize("key", ["", "/a", "../a", "a/../../b", "a/./b", "a\\b", "a//b", "a/"])
def test_bad_keys(key):
    with pytest.raises(ValueError):
        S3Storage("127.0.0.1:9000", "bkt")._key(key)


def test_unreachable_endpoint_raises_temporary_fault_quickly():
    storage = S3Storage(f"127.0.0.1:{closed_port()}", "bkt", access_key="k", secret_key="s")
    started = time.monotonic()
    for call in (
        storage.ping,
        lambda: storage.save_file(io.BytesIO(b"x"), "inputs/a.mp4"),
        lambda: storage.load_file("inputs/a.mp4"),
        lambda: storage.exists("inputs/a.mp4"),
        lambda: storage.delete_file("inputs/a.mp4"),
    ):
        with pytest.raises(TemporaryFault, match="object storage failed"):
            call()
    assert time.monotonic() - started < 5
