"""Streaming multipart parsing for /video/submit: the file part is checked and spooled to disk as it arrives.

Everything a client sends is bounded: part headers, the number of form fields,
each field's size and their total, and the file itself (by the upload limit).
A malformed body is a 400, never a parser error escaping as a 500.
"""

from __future__ import annotations

import contextlib
import tempfile
from typing import BinaryIO, Iterator

from python_multipart.multipart import MultipartParser, parse_options_header

from videojobs.common.errors import (
    BadRequest,
    InvalidUpload,
    TooManyUploads,
    UnsupportedMediaType,
    VideoJobsError,
    out_of_space_is_temporary,
)
from videojobs.common.upload import UploadChecker

FILE_FIELD = "file"
MAX_BOUNDARY_BYTES = 200  # RFC 2046 allows 70
MAX_HEADER_BYTES = 8 * 1024  # one part header line (a file name included)
MAX_FIELD_BYTES = 64 * 1024
MAX_FORM_FIELDS = 64
MAX_FORM_BYTES = 256 * 1024  # all non-file fields together


def boundary_of(content_type: str) -> bytes:
    kind, params = parse_options_header(content_type or "")
    boundary = params.get(b"boundary") or b""
    if kind != b"multipart/form-data" or not boundary:
        raise UnsupportedMediaType("expected a multipart/form-data body with a 'file' field")
    if len(boundary) > MAX_BOUNDARY_BYTES:
        raise BadRequest(f"the multipart boundary is longer than {MAX_BOUNDARY_BYTES} bytes")
    return boundary


class SpoolBudget:
    """Bytes all uploads in progress may hold in the spool at once (0: no bound but the disk's).

    Each upload claims what it may write before writing it: its declared length at once, else its
    body as it comes. One event loop uses a budget, so claims need no lock."""

    def __init__(self, limit: int) -> None:
        self.limit = max(0, int(limit))
        self.held = 0

    @contextlib.contextmanager
    def claim(self) -> Iterator["SpoolClaim"]:
        """One upload's claim, given back when the block ends."""
        claim = SpoolClaim(self)
        try:
            yield claim
        finally:
            self.held -= claim.bytes


class SpoolClaim:
    def __init__(self, budget: SpoolBudget) -> None:
        self._budget = budget
        self.bytes = 0

    def up_to(self, total: int) -> None:
        """Hold `total` bytes in all; TooManyUploads (429) if the budget has no room for them."""
        more = total - self.bytes
        if more <= 0:
            return
        budget = self._budget
        if budget.limit and budget.held + more > budget.limit:
            raise TooManyUploads.spool_full(budget.limit)
        budget.held += more
        self.bytes = total


class MultipartSpool:
    """Feeds body chunks through a multipart parser.

    Form fields are collected as lists of values (a field may repeat, e.g.
    ``classes``); the `file` part goes through an UploadChecker (an accepted
    container by content, the size limit) into an anonymous temp file, so a bad
    upload is rejected while it streams and nothing stays on disk.
    """

    def __init__(self, boundary: bytes, max_bytes: int) -> None:
        self.fields: dict[str, list[str]] = {}
        self.filename: str | None = None
        self.file: BinaryIO | None = None
        self._max = max_bytes
        self._checker: UploadChecker | None = None
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._part_name: str | None = None
        self._part_value = bytearray()
        self._parts = 0
        self._form_bytes = 0
        self._file_done = False
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
        self._guarded(self._parser.write, chunk)

    def finish(self) -> BinaryIO:
        self._guarded(self._parser.finalize)
        if self.file is None:
            raise InvalidUpload("the form has no 'file' field")
        if not self._file_done:
            raise BadRequest("the multipart body ends inside the 'file' part (no closing boundary)")
        with _spool_space():
            self.file.seek(0)  # writes what is still buffered
        return self.file

    def close(self) -> None:
        if self.file is not None:
            with contextlib.suppress(OSError):  # a buffer a full disk refused: the upload is dropped anyway
                self.file.close()

    @staticmethod
    def _guarded(step, *args) -> None:  # noqa: ANN001
        try:
            with _spool_space():  # writing the file part to the spool
                step(*args)
        except VideoJobsError:
            raise
        except Exception as exc:  # the parser's own errors: the body is malformed
            raise BadRequest(f"malformed multipart body ({type(exc).__name__})") from exc

    # -- parser callbacks ------------------------------------------------------------------
    def _on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_FORM_FIELDS + 1:
            raise BadRequest(f"the form has more than {MAX_FORM_FIELDS} fields")
        self._headers = {}
        self._part_name = None
        self._part_value = bytearray()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]
        self._check_header()

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        self._check_header()

    def _check_header(self) -> None:
        if len(self._header_field) + len(self._header_value) > MAX_HEADER_BYTES:
            raise BadRequest(f"a multipart part header is longer than {MAX_HEADER_BYTES} bytes")

    def _on_header_end(self) -> None:
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field = bytearray()
        self._header_value = bytearray()

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
            return
        self._part_value += data[start:end]
        self._form_bytes += end - start
        if len(self._part_value) > MAX_FIELD_BYTES:
            raise BadRequest(f"form field {self._part_name[:64]!r} is longer than {MAX_FIELD_BYTES} bytes")
        if self._form_bytes > MAX_FORM_BYTES:
            raise BadRequest(f"the form fields exceed {MAX_FORM_BYTES} bytes in total")

    def _on_part_end(self) -> None:
        if self._part_name == FILE_FIELD and self._checker:
            self.file.write(self._checker.end())  # type: ignore[union-attr]
            self._file_done = True
        elif self._part_name:
            value = self._part_value.decode("utf-8", "replace").strip()
            self.fields.setdefault(self._part_name, []).append(value)


def _spool_space() -> contextlib.AbstractContextManager[None]:
    """A full disk under the spool is a temporary fault (503), not a malformed body."""
    return out_of_space_is_temporary("the upload spool")
