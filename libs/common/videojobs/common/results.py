"""The results document: its serialisation and paging.

Shape (key order is part of the contract; the pipeline builds dicts in this order):

    {
      "schema_version": 1,
      "pipeline_id": "yolo_ocr",
      "video": {"width", "height", "fps", "frame_count", "duration_ms", "codec"},
      "sampling": {"sample_fps", "frame_step", "max_frames", "frames_analysed", ...},
      "provenance": {"model": {"file", "sha256", "backend"}, "libraries": {...},
                     "ocr_lang", "options": {...}},
      "frames": [
        {"frame_index", "timestamp_ms",
         "result": {"detections": [{"class_id", "class_name", "confidence",
                                    "box": {"x1","y1","x2","y2"},
                                    "box_norm": {"x1","y1","x2","y2"}, "track_id"}],
                    "text": "...",
                    "ocr": [{"text", "confidence", "box": {...}, "detection_index"}]}}
      ],
      "tracks": [{"track_id", "class_id", "class_name", "first_frame_index",
                  "last_frame_index", "start_ms", "end_ms", "frames"}]
    }

Floats are rounded by the producer (pixels 2 decimals, normalised and confidences
4 decimals), so the same input, options and model give byte-identical JSON.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from videojobs.common.errors import InvalidOptions

SCHEMA_VERSION = 1
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def results_to_bytes(document: dict[str, Any]) -> bytes:
    """Deterministic JSON bytes of a results document (no key sorting: order is fixed by the producer)."""
    return json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def results_from_bytes(data: bytes) -> dict[str, Any]:
    return json.loads(data.decode("utf-8"))


def encode_page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def decode_page_token(token: str) -> int:
    if not token:
        return 0
    try:
        padded = token + "=" * (-len(token) % 4)
        kind, _, value = base64.urlsafe_b64decode(padded.encode()).decode().partition(":")
        offset = int(value)
        if kind != "o" or offset < 0:
            raise ValueError
        return offset
    except (ValueError, UnicodeDecodeError):
        raise InvalidOptions(f"page_token {token!r} is not valid") from None


def page_of(frames: list[Any], page_size: int, page_token: str) -> tuple[list[Any], str]:
    """One page of frames and the token of the next page ('' when this is the last)."""
    if page_size < 0:
        raise InvalidOptions("page_size must be >= 0")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    start = decode_page_token(page_token)
    if start > len(frames):
        raise InvalidOptions("page_token points past the end of the results")
    end = start + size
    return frames[start:end], (encode_page_token(end) if end < len(frames) else "")
