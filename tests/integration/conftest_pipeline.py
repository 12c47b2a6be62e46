"""Fixtures and media builders for the analysis pipeline tests.

Import what a module needs: ``from tests.integration.conftest_pipeline import ...``.
The real model and footage live in the shared folder beside the repository
(``$VIDEOJOBS_SHARED_DIR``, default ``../shared``); they are never copied.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DIR = Path(os.environ.get("VIDEOJOBS_SHARED_DIR", REPO_ROOT.parent / "shared"))
MODEL_PATH = SHARED_DIR / "models" / "yolov8n.pt"
SAMPLE_VIDEO = SHARED_DIR / "media" / "bottle-detection.mp4"

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")
os.environ.setdefault("OMP_THREAD_LIMIT", "1")


def require_shared() -> None:
    if not MODEL_PATH.is_file() or not SAMPLE_VIDEO.is_file():
        pytest.skip(f"shared model/footage not found under {SHARED_DIR} (set VIDEOJOBS_SHARED_DIR)")


@pytest.fixture(scope="session")
def model_path() -> Path:
    require_shared()
    return MODEL_PATH


@pytest.fixture(scope="session")
def sample_video() -> Path:
    require_shared()
    return SAMPLE_VIDEO


@pytest.fixture(scope="session")
def pipeline_service(tmp_path_factory, model_path):
    """One service (model converted and loaded once) for the whole session."""
    from videojobs.worker.pipeline import VideoFilePipelineService

    service = VideoFilePipelineService(
        str(model_path), tmp_path_factory.mktemp("model-cache"), decode_timeout_seconds=10.0
    )
    yield service
    service.close()


# -- ISO-BMFF building blocks ----------------------------------------------------------
def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def full_box(kind: bytes, version: int, flags: int, payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags) + payload)


_MATRIX = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)


def audio_only_mp4(path: Path, seconds: float = 1.0, rate: int = 8000) -> Path:
    """A valid MP4 holding one 16-bit mono PCM ('sowt') audio track and no video."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()
    ftyp = box(b"ftyp", b"isom" + struct.pack(">I", 512) + b"isomiso2mp41")

    def moov(chunk_offset: int) -> bytes:
        mvhd = full_box(b"mvhd", 0, 0, struct.pack(">IIII", 0, 0, 1000, int(seconds * 1000))
                        + struct.pack(">IH", 0x00010000, 0x0100) + b"\0" * 10 + _MATRIX + b"\0" * 24
                        + struct.pack(">I", 2))
        tkhd = full_box(b"tkhd", 0, 7, struct.pack(">IIIII", 0, 0, 1, 0, int(seconds * 1000)) + b"\0" * 8
                        + struct.pack(">hhhH", 0, 0, 0x0100, 0) + _MATRIX + struct.pack(">II", 0, 0))
        mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, rate, n, 0x55C4, 0))
        hdlr = full_box(b"hdlr", 0, 0, struct.pack(">I", 0) + b"soun" + b"\0" * 12 + b"SoundHandler\0")
        smhd = full_box(b"smhd", 0, 0, struct.pack(">hH", 0, 0))
        dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1) + full_box(b"url ", 0, 1, b"")))
        sowt = box(b"sowt", b"\0" * 6 + struct.pack(">H", 1) + struct.pack(">HHI", 0, 0, 0)
                   + struct.pack(">HHHHI", 1, 16, 0, 0, rate << 16))
        stbl = box(b"stbl", b"".join([
            full_box(b"stsd", 0, 0, struct.pack(">I", 1) + sowt),
            full_box(b"stts", 0, 0, struct.pack(">III", 1, n, 1)),
            full_box(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, n, 1)),
            full_box(b"stsz", 0, 0, struct.pack(">II", 2, n)),
            full_box(b"stco", 0, 0, struct.pack(">II", 1, chunk_offset)),
        ]))
        minf = box(b"minf", smhd + dinf + stbl)
        trak = box(b"trak", tkhd + box(b"mdia", mdhd + hdlr + minf))
        return box(b"moov", mvhd + trak)

    size_moov = len(moov(0))
    data = ftyp + moov(len(ftyp) + size_moov + 8) + box(b"mdat", pcm)
    path.write_bytes(data)
    return path


def top_level_boxes(data: bytes) -> list[tuple[bytes, int, int]]:
    """(kind, offset, size) of each top-level box."""
    out, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
        elif size == 0:
            size = len(data) - pos
        out.append((kind, pos, size))
        pos += size
    return out


def faststart(data: bytes) -> bytes:
    """The same MP4 with its index (moov) moved before the media data, chunk offsets patched."""
    boxes = top_level_boxes(data)
    moov = next(b for b in boxes if b[0] == b"moov")
    if moov[1] < min((o for k, o, _ in boxes if k == b"mdat"), default=len(data)):
        return data  # already index-first
    moov_bytes = bytearray(data[moov[1]:moov[1] + moov[2]])
    shift = len(moov_bytes)
    containers = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}

    def patch(pos: int, end: int) -> None:
        while pos + 8 <= end:
            size, kind = struct.unpack(">I4s", moov_bytes[pos:pos + 8])
            if kind in containers:
                patch(pos + 8, pos + size)
            elif kind in (b"stco", b"co64"):
                count = struct.unpack(">I", moov_bytes[pos + 12:pos + 16])[0]
                fmt, width = (">I", 4) if kind == b"stco" else (">Q", 8)
                for i in range(count):
                    at = pos + 16 + i * width
                    (value,) = struct.unpack(fmt, moov_bytes[at:at + width])
                    moov_bytes[at:at + width] = struct.pack(fmt, value + shift)
            pos += size

    patch(8, len(moov_bytes))
    first_media = min(b[1] for b in boxes if b[0] != b"ftyp")
    rest = b"".join(data[o:o + s] for k, o, s in boxes if k not in (b"ftyp", b"moov"))
    return data[:first_media] + bytes(moov_bytes) + rest


def write_clip(path: Path, frames: Iterable[np.ndarray], fps: float, fourcc: str = "mp4v") -> Path:
    """Write BGR frames with OpenCV (its pip wheels write mp4v or MJPEG, not H.264)."""
    import cv2

    writer = None
    try:
        for frame in frames:
            if writer is None:
                h, w = frame.shape[:2]
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
                assert writer.isOpened(), f"cannot write {path}"
            writer.write(frame)
    finally:
        if writer is not None:
            writer.release()
    return path


def text_frame(lines: Sequence[str], size: tuple[int, int] = (1280, 720), scale: float = 2.5,
               thickness: int = 5) -> np.ndarray:
    """Dark text on a plain light background, one string per line, large and clear."""
    import cv2

    w, h = size
    img = np.full((h, w, 3), 240, np.uint8)
    y = 150
    for line in lines:
        cv2.putText(img, line, (80, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (20, 20, 20), thickness, cv2.LINE_AA)
        y += int(70 * scale)
    return img


def read_frames(path: Path, indices: Sequence[int]) -> list[np.ndarray]:
    """Decode the given frame indices (ascending) of a video."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    out, index, wanted = [], 0, list(indices)
    try:
        while wanted:
            ok = cap.grab()
            if not ok:
                break
            if index == wanted[0]:
                ok, frame = cap.retrieve()
                out.append(frame)
                wanted.pop(0)
            index += 1
    finally:
        cap.release()
    return out
