"""StorageService on a local folder (the embedded default)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from videojobs.common.errors import StorageObjectNotFound, out_of_space_is_temporary
from videojobs.common.ports.storage import StorageService, StoredObject

CHUNK = 1024 * 1024


class LocalFolderStorage(StorageService):
    """Objects are files under `root`; writes go to a temp file, then an atomic rename."""

    def __init__(self, root: Path) -> None:
        self._root = Path(root).resolve()
        self._root.mkdir(parents=True, exist_ok=True)

    @property
    def root(self) -> Path:
        return self._root

    def _path(self, key: str) -> Path:
        path = (self._root / key).resolve()
        if key.startswith("/") or self._root not in path.parents:
            raise ValueError(f"storage key {key!r} escapes the storage folder")
        return path

    def save_file(self, src: BinaryIO, dest_path: str) -> str:
        """A full disk is ``OutOfSpace`` (a temporary fault), with the partial file removed."""
        dest = self._path(dest_path)
        with out_of_space_is_temporary("storage"):
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, dest)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return dest_path

    def load_file(self, path: str) -> Path:
        local = self._path(path)
        if not local.is_file():
            raise StorageObjectNotFound(path)
        return local

    @contextlib.contextmanager
    def open_stored(self, path: str) -> Iterator[StoredObject]:
        try:
            stored = self._path(path).open("rb")
        except (FileNotFoundError, IsADirectoryError):
            raise StorageObjectNotFound(path) from None
        with stored:
            yield StoredObject(os.fstat(stored.fileno()).st_size, stored.read)

    def delete_file(self, path: str) -> None:
        self._path(path).unlink(missing_ok=True)

    def exists(self, path: str) -> bool:
        return self._path(path).is_file()

    def ping(self) -> None:
        if not self._root.is_dir() or not os.access(self._root, os.W_OK):
            raise OSError(f"storage folder {self._root} is not writable")
