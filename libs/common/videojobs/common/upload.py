"""Checking an upload while it streams: MP4 by content (not extension), not empty, under the limit."""

from __future__ import annotations

import io
from typing import Iterable, Iterator

from videojobs.common.errors import InvalidUpload, UploadTooLarge

# An ISO-BMFF file starts with a box: a 4-byte big-endian size, then its type; MP4 starts with 'ftyp'.
_HEADER_LEN = 12


def looks_like_mp4(head: bytes) -> bool:
    return len(head) >= _HEADER_LEN and head[4:8] == b"ftyp" and 8 <= int.from_bytes(head[:4], "big") <= 4096


class UploadChecker:
    """Push-style checker: feed chunks, get back the bytes that may be kept.

    The first bytes are held until the header can be judged; a violation raises
    at once (InvalidUpload or UploadTooLarge), before anything else is read.
    """

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._head = b""
        self._checked = False
        self.total = 0

    def feed(self, chunk: bytes) -> bytes:
        self.total += len(chunk)
        if self.total > self._max:
            raise UploadTooLarge(self._max)
        if self._checked:
            return chunk
        self._head += chunk
        if len(self._head) < _HEADER_LEN:
            return b""
        return self._release()

    def end(self) -> bytes:
        if self.total == 0:
            raise InvalidUpload("the upload is empty")
        return b"" if self._checked else self._release()

    def _release(self) -> bytes:
        if not looks_like_mp4(self._head):
            raise InvalidUpload("the upload is not an MP4 video (no ISO-BMFF 'ftyp' box at its start)")
        self._checked = True
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
        self._buf = b""
        self._eof = False

    @property
    def bytes_read(self) -> int:
        return self._checker.total

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # noqa: ANN001
        while not self._buf and not self._eof:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._eof = True
                self._buf = self._checker.end()
            else:
                self._buf = self._checker.feed(chunk)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n
