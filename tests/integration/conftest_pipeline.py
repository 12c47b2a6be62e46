"""Fixtures and media builders for the analysis pipeline tests.

Import what a module needs: ``from tests.integration.conftest_pipeline import ...``.
The real model and footage live in the shared folder beside the repository
(``$VIDEOJOBS_SHARED_DIR``, default ``../shared``); they are never copied.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

from tests.media import (  # noqa: F401  (re-exported: the pipeline tests import them from here)
    audio_only_mp4,
    box,
    faststart,
    full_box,
    top_level_boxes,
    write_clip,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DIR = Path(os.environ.get("VIDEOJOBS_SHARED_DIR", REPO_ROOT.parent / "shared"))
MODEL_PATH = SHARED_DIR / "models" / "yolov8n.pt"
SAMPLE_VIDEO = SHARED_DIR / "media" / "bottle-detection.mp4"

from videojobs.worker.pipeline.offline import keep_offline  # noqa: E402 - before ultralytics or openvino

keep_offline()
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
