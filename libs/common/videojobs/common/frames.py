"""Images of analysed frames: what the worker keeps, where, and the limits of what is rendered from them.

The worker stores one JPEG per analysed frame while it analyses
(``frames/{job_id}/{frame_index}.jpg``, the very pixels the model saw, scaled down
to at most ``frame_image_max_side`` pixels). The api serves them (``GetFrameImage``,
optionally with the detections drawn) and renders contact sheets from them; the
gateway and the client only ever see them through those RPCs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from videojobs.common.errors import FrameNotFound, InvalidRequest, StorageObjectNotFound, FieldViolation
from videojobs.common.ports.storage import StorageService

JPEG = "image/jpeg"
PNG = "image/png"

# Contact sheet parameters: (default, min, max). The api enforces them; the gateway's
# query parameters and the CLI's flags are derived from them. The maxima keep the
# largest sheet near 14 megapixels.
SHEET_COLUMNS = (4, 1, 10)
SHEET_TILE_WIDTH = (320, 64, 480)
SHEET_MAX_FRAMES = (24, 1, 100)
# gRPC clients of the api (gateway, client library) accept answers this large: a sheet
# is one message.
MAX_IMAGE_MESSAGE_BYTES = 64 * 1024 * 1024


def frame_image_key(job_id: str, frame_index: int) -> str:
    return f"frames/{job_id}/{int(frame_index)}.jpg"


@dataclass(frozen=True)
class RenderedImage:
    """An encoded image and what it shows."""

    content_type: str
    data: bytes
    width: int
    height: int
    frame_indices: tuple[int, ...] = ()


@dataclass(frozen=True)
class SheetLayout:
    """A contact sheet's shape, checked against the limits above (0 = the default)."""

    columns: int = 0
    tile_width: int = 0
    max_frames: int = 0

    def resolved(self) -> "SheetLayout":
        """The layout with defaults filled in; InvalidRequest names every value out of range."""
        violations = []
        values = {}
        for name, (default, low, high) in (("columns", SHEET_COLUMNS), ("tile_width", SHEET_TILE_WIDTH),
                                           ("max_frames", SHEET_MAX_FRAMES)):
            value = getattr(self, name) or default
            if not low <= value <= high:
                violations.append(FieldViolation(name, f"must be between {low} and {high}"))
            values[name] = value
        if violations:
            raise InvalidRequest("; ".join(f"{v.field} {v.description}" for v in violations), violations)
        return SheetLayout(**values)


class FrameImageStore:
    """Frame images of jobs on the StorageService (one object per analysed frame)."""

    def __init__(self, storage: StorageService) -> None:
        self._storage = storage

    def save(self, job_id: str, frame_index: int, jpeg: bytes) -> None:
        self._storage.save_bytes(jpeg, frame_image_key(job_id, frame_index))

    def load(self, job_id: str, frame_index: int) -> bytes:
        """The JPEG of one frame; FrameNotFound if none was kept (never the storage key)."""
        try:
            return self._storage.read_bytes(frame_image_key(job_id, frame_index))
        except StorageObjectNotFound:
            raise FrameNotFound(job_id, frame_index, "has no stored image (frame images were not kept)") from None

    def delete(self, job_id: str, frame_indices: Iterable[int]) -> None:
        """Remove a job's frame images (the analysed frame indices name every key)."""
        for index in frame_indices:
            self._storage.delete_file(frame_image_key(job_id, index))
