"""StorageService: where inputs and results live (local folder, MinIO / S3)."""

from __future__ import annotations

import contextlib
import io
from abc import ABC, abstractmethod
from pathlib import Path
from typing import BinaryIO, Iterator


class StorageService(ABC):
    """Abstract storage interface for job files (the seed's port, kept as is).

    Keys are relative, slash-separated paths such as ``inputs/{job_id}.mp4``.
    Writes are all-or-nothing: a failed or rejected ``save_file`` leaves nothing behind.
    """

    @abstractmethod
    def save_file(self, src: BinaryIO, dest_path: str) -> str:
        """Save a file-like object to storage, reading it in chunks. Returns the stored path."""
        raise NotImplementedError

    @abstractmethod
    def load_file(self, path: str) -> Path:
        """Return a local filesystem path to the stored file.

        Raises StorageObjectNotFound if there is none. Adapters that download
        (S3) return a temporary copy; use ``local_copy`` to have it cleaned up.
        """
        raise NotImplementedError

    @abstractmethod
    def delete_file(self, path: str) -> None:
        """Delete a stored file, if it exists."""
        raise NotImplementedError

    # -- additions the real adapters need ------------------------------------------
    @abstractmethod
    def exists(self, path: str) -> bool:
        """True if an object is stored at `path`."""
        raise NotImplementedError

    @abstractmethod
    def ping(self) -> None:
        """Raise if the storage cannot be reached (used by readiness checks)."""
        raise NotImplementedError

    def save_bytes(self, data: bytes, dest_path: str) -> str:
        return self.save_file(io.BytesIO(data), dest_path)

    def read_bytes(self, path: str) -> bytes:
        with self.local_copy(path) as local:
            return local.read_bytes()

    def read_range(self, path: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the object at `path` (fewer past its end); StorageObjectNotFound if there
        is none. Adapters that download override this to fetch the range alone."""
        with self.local_copy(path) as local, local.open("rb") as stored:
            stored.seek(start)
            return stored.read(max(0, end - start))

    def release_local(self, local: Path) -> None:
        """Forget a path returned by ``load_file`` (adapters with temp copies delete it)."""

    @contextlib.contextmanager
    def local_copy(self, path: str) -> Iterator[Path]:
        local = self.load_file(path)
        try:
            yield local
        finally:
            self.release_local(local)
