"""Checking an upload while it streams: an accepted container by content, not empty, under the limit."""

from __future__ import annotations

import hashlib
import io
from typing import Iterable, Iterator

from videojobs.common.errors import InvalidUpload, UnsupportedMediaType, UploadTooLarge
from videojobs.common.formats import FORMATS, SNIFF_BYTES, ContainerFormat, accepted_formats_text, sniff


def not_a_video(head: bytes) -> UnsupportedMediaType:
    return UnsupportedMediaType(
        f"the upload is not a video container the service reads; accepted: {accepted_formats_text()} "
        "(checked by content, not by file name)",
        accepted=[f.name for f in FORMATS],
    )


class UploadChecker:
    """Push-style checker: feed chunks, get back the bytes that may be kept.

    The first bytes are held until the container can be judged; a violation
    raises at once (UnsupportedMediaType, InvalidUpload or UploadTooLarge),
    before anything else is read.
    """

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._head = b""
        self.format: ContainerFormat | None = None
        self.total = 0

    @property
    def judged(self) -> bool:
        return self.format is not None

    def feed(self, chunk: bytes) -> bytes:
        self.total += len(chunk)
        if self.total > self._max:
            raise UploadTooLarge(self._max)
        if self.format is not None:
            return chunk
        self._head += chunk
        if len(self._head) < SNIFF_BYTES:
            return b""
        return self._release()

    def end(self) -> bytes:
        if self.total == 0:
            raise InvalidUpload("the upload is empty")
        return b"" if self.format is not None else self._release()

    def _release(self) -> bytes:
        fmt = sniff(self._head)
        if fmt is None:
            raise not_a_video(self._head)
        self.format = fmt
        head, self._head = self._head, b""
        return head


class CheckedUpload(io.RawIOBase):
    """Pull-style: a read-only file object over chunks, raising as soon as the bytes are unacceptable.

    Storage adapters copy from it in chunks; a raise mid-copy makes them discard
    what they wrote, so a rejected upload leaves nothing behind.
    """

    def __init__(self, chunks: Iterable[bytes], max_bytes: int) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._checker = UploadChecker(max_bytes)
        self._hash = hashlib.sha256()
        self._buf = b""
        self._eof = False

    @property
    def bytes_read(self) -> int:
        return self._checker.total

    def sha256(self) -> str:
        """Hex sha256 of the bytes read so far (of the whole upload once it is read to the end)."""
        return self._hash.hexdigest()

    def drain(self) -> None:
        """Read (and check) the rest of the upload without keeping it."""
        while self._pull():
            self._buf = b""
        self._buf = b""

    def container(self) -> ContainerFormat:
        """Read ahead until the container is known (or the upload is refused) and return it."""
        while not self._checker.judged:
            if not self._pull():
                break
        assert self._checker.format is not None  # _pull raised otherwise
        return self._checker.format

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # noqa: ANN001
        while not self._buf and self._pull():
            pass
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def _pull(self) -> bool:
        """Move one chunk through the checker into the buffer; False once the source is done."""
        if self._eof:
            return False
        chunk = next(self._chunks, None)
        if chunk is None:
            self._eof = True
            self._buf += self._checker.end()
            return False
        self._hash.update(chunk)
        self._buf += self._checker.feed(chunk)
        return True
