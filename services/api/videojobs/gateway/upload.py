"""Streaming multipart parsing for /video/submit: the file part is checked and spooled to disk as it arrives."""

from __future__ import annotations

import tempfile
from typing import BinaryIO

from python_multipart.multipart import MultipartParser, parse_options_header

from videojobs.common.errors import InvalidUpload
from videojobs.common.upload import UploadChecker

FILE_FIELD = "file"
REPEATABLE_FIELDS = {"classes"}
MAX_FIELD_BYTES = 64 * 1024


def boundary_of(content_type: str) -> bytes:
    kind, params = parse_options_header(content_type or "")
    if kind != b"multipart/form-data" or not params.get(b"boundary"):
        raise InvalidUpload("expected a multipart/form-data body with a 'file' field")
    return params[b"boundary"]


class MultipartSpool:
    """Feeds body chunks through a multipart parser.

    Form fields are collected (small, bounded); the `file` part goes through a
    CheckedUpload (MP4 by content, size limit) into an anonymous temp file, so
    a bad upload is rejected while it streams and nothing stays on disk.
    """

    def __init__(self, boundary: bytes, max_bytes: int) -> None:
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.file: BinaryIO | None = None
        self._max = max_bytes
        self._checker: UploadChecker | None = None
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._part_name: str | None = None
        self._part_value = bytearray()
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
            },
        )

    def write(self, chunk: bytes) -> None:
        self._parser.write(chunk)

    def finish(self) -> BinaryIO:
        self._parser.finalize()
        if self.file is None:
            raise InvalidUpload("the form has no 'file' field")
        self.file.seek(0)
        return self.file

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

    # -- parser callbacks ------------------------------------------------------------------
    def _on_part_begin(self) -> None:
        self._headers = {}
        self._part_name = None
        self._part_value = bytearray()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = self._header_value = b""

    def _on_headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._part_name = (params.get(b"name") or b"").decode("utf-8", "replace")
        if self._part_name == FILE_FIELD:
            if self.file is not None:
                raise InvalidUpload("only one 'file' may be uploaded per job")
            self.filename = (params.get(b"filename") or b"").decode("utf-8", "replace")
            self.file = tempfile.TemporaryFile(prefix="videojobs-upload-")
            self._checker = UploadChecker(self._max)

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part_name == FILE_FIELD and self._checker:
            self.file.write(self._checker.feed(data[start:end]))  # type: ignore[union-attr]
        else:
            self._part_value += data[start:end]
            if len(self._part_value) > MAX_FIELD_BYTES:
                raise InvalidUpload(f"form field {self._part_name!r} is too long")

    def _on_part_end(self) -> None:
        if self._part_name == FILE_FIELD and self._checker:
            self.file.write(self._checker.end())  # type: ignore[union-attr]
        elif self._part_name:
            value = self._part_value.decode("utf-8", "replace").strip()
            if self._part_name in REPEATABLE_FIELDS and self.fields.get(self._part_name):
                value = f"{self.fields[self._part_name]},{value}"  # -F classes=a -F classes=b
            self.fields[self._part_name] = value
