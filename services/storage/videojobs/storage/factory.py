"""StorageService selection by URL scheme."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from videojobs.common.config import Settings
from videojobs.common.ports.storage import StorageService


def make_storage(settings: Settings) -> StorageService:
    """file:///folder or a plain path -> local folder; s3://bucket -> MinIO / S3."""
    url = settings.effective_storage_url
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        from videojobs.storage.local import LocalFolderStorage

        return LocalFolderStorage(Path(parsed.path if parsed.scheme else url))
    if parsed.scheme == "s3":
        from videojobs.storage.s3 import S3Storage

        return S3Storage.from_settings(settings)
    raise ValueError(f"unsupported VIDEOJOBS_STORAGE_URL {url!r} (expected file:///path or s3://bucket)")
