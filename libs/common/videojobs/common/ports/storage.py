"""StorageService: where inputs and results live (local folder, MinIO / S3)."""

from __future__ import annotations

import contextlib
import io
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

READ_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredObject:
    """A stored object being read from its start: its length in bytes, and ``read(n)``, which gives
    its next bytes (at most n; b"" at its end)."""

    size: int
    read: Callable[[int], bytes]

    def chunks(self, size: int = READ_CHUNK) -> Iterator[bytes]:
        """The rest of the object, `size` bytes at a time."""
        return iter(lambda: self.read(size), b"")

    def read_all(self) -> bytes:
        """The rest of the object (one read, unless the reader returns less than it is asked for)."""
        head = self.read(self.size)
        rest = b"".join(self.chunks())
        return head + rest if rest else head


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
        with self.open_stored(path) as stored:
            return stored.read_all()

    @contextlib.contextmanager
    def open_stored(self, path: str) -> Iterator[StoredObject]:
        """The object at `path`, to read from its start; StorageObjectNotFound if there is none. Adapters
        that download override this to read it as it arrives, with no copy on disk."""
        with self.local_copy(path) as local, local.open("rb") as stored:
            yield StoredObject(os.fstat(stored.fileno()).st_size, stored.read)

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
