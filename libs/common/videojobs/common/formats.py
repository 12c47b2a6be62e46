"""Video the service accepts: containers, recognised by their first bytes (never by file name),
and frame sizes.

The decoder (OpenCV's FFmpeg) reads more than these; the list is what the service
promises and tests end to end. Adding a container is one entry in ``FORMATS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# Bytes needed to judge a file (Matroska's DocType sits inside its first few dozen bytes).
SNIFF_BYTES = 64

# Frame sizes the worker analyses (a job of another size FAILS, naming it; GET /video/capabilities lists
# them). Below 16 pixels a side nothing is recognisable. Above DCI 8K (8192x4320, or 4320x8192) a decoded
# frame alone is over 100 MiB, and a job's working set (its batch, the decoder's frames, Tesseract's copies
# of a frame) would outgrow the worker's memory (`scripts/bench_frame_memory.py`).
FRAME_SIDE_MIN = 16
FRAME_SIDE_MAX = 8192
FRAME_PIXELS_MAX = 8192 * 4320

# The most an H.264 / HEVC / VP9 stream's reference pictures may take in the decoder at once (a job asking for
# more FAILS at open, naming the numbers): H.264 level 6.2's decoded picture buffer, 696,320 macroblocks,
# counted in bytes as 8-bit 4:2:0 frames (384 bytes a macroblock). 255 MiB: 5 frames of 7680x4320, 2 of them
# if 10-bit, 16 of 3840x2160. The worker's own reading of a stream: worker/pipeline/picture_buffer.py.
REFERENCE_BYTES_MAX = 696_320 * 384

# First box types of ISO-BMFF / QuickTime files: MP4 and M4V start with 'ftyp'; QuickTime
# .mov files from older cameras may start with 'wide', 'free', 'mdat' or 'moov'.
_ISO_BMFF_FIRST_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide"}


def _is_iso_bmff(head: bytes) -> bool:
    if len(head) < 8 or head[4:8] not in _ISO_BMFF_FIRST_BOXES:
        return False
    size = int.from_bytes(head[:4], "big")
    if head[4:8] == b"ftyp":
        return 8 <= size <= 4096
    return size in (0, 1) or size >= 8


def _is_matroska(head: bytes) -> bool:
    return head[:4] == b"\x1a\x45\xdf\xa3" and b"webm" not in head[:SNIFF_BYTES]


def _is_webm(head: bytes) -> bool:
    return head[:4] == b"\x1a\x45\xdf\xa3" and b"webm" in head[:SNIFF_BYTES]


def _is_avi(head: bytes) -> bool:
    return len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"AVI "


@dataclass(frozen=True)
class ContainerFormat:
    """A container the service accepts."""

    format_id: str
    name: str  # in plain words, for people
    extension: str  # of the stored input object
    extensions: tuple[str, ...]  # what such files are usually called
    matches: Callable[[bytes], bool]


FORMATS: tuple[ContainerFormat, ...] = (
    ContainerFormat("iso-bmff", "MP4, MOV or M4V (ISO-BMFF)", "mp4", (".mp4", ".mov", ".m4v"), _is_iso_bmff),
    ContainerFormat("matroska", "Matroska (MKV)", "mkv", (".mkv",), _is_matroska),
    ContainerFormat("webm", "WebM", "webm", (".webm",), _is_webm),
    ContainerFormat("avi", "AVI", "avi", (".avi",), _is_avi),
)


def sniff(head: bytes) -> ContainerFormat | None:
    """The accepted container these first bytes belong to, or None."""
    for fmt in FORMATS:
        if fmt.matches(head):
            return fmt
    return None


def accepted_formats_text() -> str:
    """'MP4, MOV or M4V (ISO-BMFF), Matroska (MKV), WebM or AVI'."""
    names = [f.name for f in FORMATS]
    return ", ".join(names[:-1]) + " or " + names[-1]
