"""Object tracks across the analysed frames of one job, with Ultralytics' ByteTrack.

The tracker only assigns ids: every detection the model reported at or above the
job's confidence keeps its own box and score (ByteTrack's smoothed boxes and its
hiding of unconfirmed tracks would make results differ from the detector's).
Detections the tracker does not (yet) follow get ``track_id: null``.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from videojobs.common.results import Track

# ByteTrack's second association stage uses detections down to this score, so the
# detector is run at min(min_confidence, TRACK_LOW_CONFIDENCE).
TRACK_LOW_CONFIDENCE = 0.1
# ByteTrack keeps a lost track for `track_buffer` frames, tuned for 30 fps; the
# buffer is scaled to the analysed frame rate so it spans the same video time.
_REFERENCE_FPS = 30.0


class _Detections:
    """The slice of Ultralytics' ``Boxes`` interface BYTETracker reads (numpy, boolean indexing)."""

    def __init__(self, dets: np.ndarray) -> None:
        self.data = dets
        self.conf = dets[:, 4].astype(np.float32)
        self.cls = dets[:, 5].astype(np.float32)
        xyxy = dets[:, :4].astype(np.float32)
        self.xyxy = xyxy
        self.xywh = np.stack(
            [(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2, xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]],
            axis=1,
        ) if len(dets) else np.zeros((0, 4), np.float32)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, mask: np.ndarray) -> "_Detections":
        return _Detections(self.data[mask])


@dataclass
class TrackSummary:
    """One object followed over time."""

    track_id: int
    first_frame_index: int
    last_frame_index: int
    start_ms: float
    end_ms: float
    frames: int = 0
    classes: Counter = field(default_factory=Counter)


@functools.lru_cache(maxsize=1)
def _bytetrack_settings() -> tuple[tuple[str, object], ...]:
    """Ultralytics' ``bytetrack.yaml``, read once per process (finding it searches the package's folders)."""
    from ultralytics.utils import YAML
    from ultralytics.utils.checks import check_yaml

    return tuple(YAML.load(check_yaml("bytetrack.yaml")).items())


class JobTracker:
    """Fresh ByteTrack state for one job; ids are renumbered 1, 2, ... in order of first appearance."""

    def __init__(self, analysed_fps: float) -> None:
        from ultralytics.trackers.byte_tracker import BYTETracker
        from ultralytics.utils import IterableSimpleNamespace

        cfg = IterableSimpleNamespace(**dict(_bytetrack_settings()))
        scale = (analysed_fps or _REFERENCE_FPS) / _REFERENCE_FPS
        cfg.track_buffer = max(1, int(round(cfg.track_buffer * scale)))
        self._tracker = BYTETracker(args=cfg)
        self._ids: dict[int, int] = {}
        self.tracks: dict[int, TrackSummary] = {}

    def update(
        self, dets: np.ndarray, reported: np.ndarray, frame_index: int, timestamp_ms: float
    ) -> list[Optional[int]]:
        """Feed one frame's detections (all scores); the track id of each reported one (None if untracked).

        `reported` is the boolean mask of detections that go into the results; only
        they get job-local ids and count towards the track summaries.
        """
        tracked = self._tracker.update(_Detections(dets if len(dets) else np.zeros((0, 6))))
        raw_ids: dict[int, int] = {int(row[-1]): int(row[4]) for row in tracked}
        out: list[Optional[int]] = []
        for det_index in np.flatnonzero(reported):
            raw_id = raw_ids.get(int(det_index))
            if raw_id is None:
                out.append(None)
                continue
            if raw_id not in self._ids:
                self._ids[raw_id] = len(self._ids) + 1
            track_id = self._ids[raw_id]
            out.append(track_id)
            summary = self.tracks.get(track_id)
            if summary is None:
                summary = self.tracks[track_id] = TrackSummary(track_id, frame_index, frame_index, timestamp_ms, timestamp_ms)
            summary.last_frame_index = frame_index
            summary.end_ms = timestamp_ms
            summary.frames += 1
            summary.classes[int(dets[det_index, 5])] += 1
        return out

    def summaries(self, names: dict[int, str]) -> list[Track]:
        """The ``tracks`` list of the results document, by track id."""
        out = []
        for track_id in sorted(self.tracks):
            t = self.tracks[track_id]
            # The class seen most often; ties go to the lowest id so the answer is stable.
            class_id = min(t.classes, key=lambda c: (-t.classes[c], c))
            out.append(
                Track(
                    track_id=t.track_id,
                    class_id=class_id,
                    class_name=names.get(class_id, str(class_id)),
                    first_frame_index=t.first_frame_index,
                    last_frame_index=t.last_frame_index,
                    start_ms=t.start_ms,
                    end_ms=t.end_ms,
                    frames=t.frames,
                )
            )
        return out
