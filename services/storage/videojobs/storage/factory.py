"""StorageService selection by URL scheme."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from videojobs.common.config import Settings
from videojobs.common.ports.storage import StorageService


def make_storage(settings: Settings, scratch_dir: Path | None = None) -> StorageService:
    """file:///folder or a plain path -> local folder; s3://bucket -> MinIO / S3.

    `scratch_dir` is where downloaded copies go (a worker passes its own scratch folder).
    """
    url = settings.effective_storage_url
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        from videojobs.storage.local import LocalFolderStorage

        return LocalFolderStorage(Path(parsed.path if parsed.scheme else url))
    if parsed.scheme == "s3":
        from videojobs.storage.s3 import S3Storage

        bucket_url = urlparse(settings.storage_url)
        if not bucket_url.netloc:
            raise ValueError(f"storage_url {settings.storage_url!r} is not s3://bucket[/prefix]")
        return S3Storage(
            settings.s3_endpoint,
            bucket_url.netloc,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            secure=settings.s3_secure,
            region=settings.s3_region,
            prefix=bucket_url.path,
            tmp_dir=scratch_dir,
            connect_timeout=settings.s3_connect_timeout_seconds,
            read_timeout=settings.s3_read_timeout_seconds,
            retries=settings.s3_retries,
        )
    raise ValueError(f"unsupported VIDEOJOBS_STORAGE_URL {url!r} (expected file:///path or s3://bucket)")
