"""The pipeline's in-process Tesseract (tesserocr) is the engine pytesseract runs (the tesseract CLI).

tesserocr must be built from source against the system libtesseract
(``pip install --no-binary tesserocr``, as the Makefile does); PyPI's wheel
bundles a different Tesseract, which reads real footage differently.
"""

from __future__ import annotations

import os

import cv2
import pytest

from tests.integration.conftest_pipeline import read_frames, require_shared, text_frame, SHARED_DIR

pytestmark = pytest.mark.slow


def _pytesseract_words(frame_bgr) -> list[str]:
    """The baseline's call: full-frame image_to_data with default settings."""
    import pytesseract
    from PIL import Image

    data = pytesseract.image_to_data(Image.fromarray(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)),
                                     output_type=pytesseract.Output.DICT)
    return [w.strip() for w, c in zip(data["text"], data["conf"]) if w.strip() and float(c) >= 0]


def test_ocr_engine_version_equals_the_cli():
    import pytesseract

    from videojobs.worker.pipeline.ocr import tesseract_version

    assert tesseract_version() == pytesseract.get_tesseract_version().base_version


@pytest.fixture(scope="module")
def engine():
    from videojobs.worker.pipeline.ocr import OcrEngine

    e = OcrEngine("eng")
    yield e
    e.close()


def test_same_words_as_pytesseract_on_the_same_pixels(engine):
    require_shared()
    # Frames of the sample footage where Tesseract finds (noisy) words; plus rendered text.
    frames = read_frames(SHARED_DIR / "media" / "bottle-detection.mp4", [358, 806, 1014, 1134])
    frames.append(text_frame(["PARITY CHECK 42", "same engine, same words"]))
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    found = 0
    for frame in frames:
        ours = [w for line in engine._recognize(frame) for w in line.text.split()]
        assert ours == _pytesseract_words(frame)
        found += bool(ours)
    assert found >= 3
