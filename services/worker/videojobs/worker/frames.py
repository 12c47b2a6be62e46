"""The worker keeps a JPEG of every analysed frame, so the viewer can show what the model saw.

Encoding a frame the pipeline has already decoded costs well under a millisecond
at 640x360 (scripts/bench_viewer.py measures it), against the tens of
milliseconds a seek-and-decode of the stored input would cost per request in the
api; the api then needs no video decoder at all.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from videojobs.common.frames import FrameImageStore

log = logging.getLogger(__name__)


class FrameImageWriter:
    """Encodes frames (scaled to at most `max_side` pixels) and stores them; `max_side` 0 keeps none."""

    def __init__(self, store: FrameImageStore, max_side: int, quality: int = 85) -> None:
        self._store = store
        self.max_side = max(0, int(max_side))
        self.quality = int(quality)

    @property
    def enabled(self) -> bool:
        return self.max_side > 0

    def encode(self, frame: np.ndarray) -> bytes:
        height, width = frame.shape[:2]
        scale = self.max_side / max(height, width)
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        ok, buffer = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise ValueError("the frame could not be encoded as JPEG")
        return buffer.tobytes()

    def for_job(self, job_id: str) -> "JobFrameImages":
        return JobFrameImages(self, self._store, job_id)


class JobFrameImages:
    """The ``on_frame`` callback of one job attempt; remembers what it wrote so a failed job leaves nothing."""

    def __init__(self, writer: FrameImageWriter, store: FrameImageStore, job_id: str) -> None:
        self._writer = writer
        self._store = store
        self.job_id = job_id
        self.written: list[int] = []

    def __call__(self, frame_index: int, frame: np.ndarray) -> None:
        self._store.save(self.job_id, frame_index, self._writer.encode(frame))
        self.written.append(frame_index)

    def discard(self) -> None:
        """Best effort: remove this attempt's images (the job failed, nobody will look at them)."""
        try:
            self._store.delete(self.job_id, self.written)
        except Exception:  # noqa: BLE001 -- a leftover image is harmless; the failure must still be recorded
            log.warning("job %s: could not remove %d frame image(s)", self.job_id, len(self.written), exc_info=True)
        self.written.clear()
