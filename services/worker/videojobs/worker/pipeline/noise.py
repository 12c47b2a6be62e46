"""Third-party chatter kept off a normal run's output.

Leptonica (under Tesseract) prints "Error in boxClipToRectangle: box outside
rectangle" for harmless clipping on real footage, straight to stderr from C;
OpenCV warns about FFmpeg probing it then recovers from. Ultralytics logs "Loading ... for ... inference" at INFO to stdout, which carries
the results JSON of ``videojobs analyze`` (``YOLO_VERBOSE=False`` keeps it to errors). Both are turned down here, once per
process; real failures still surface as exceptions.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

_L_SEVERITY_NONE = 6  # leptonica/environ.h
_done = False


def quiet_third_party() -> None:
    global _done
    if _done:
        return
    _done = True
    import tesserocr  # noqa: F401 -- its import sets Leptonica's severity itself, so set ours after it

    name = ctypes.util.find_library("lept") or ctypes.util.find_library("leptonica")
    if name:
        try:
            ctypes.CDLL(name).setMsgSeverity(_L_SEVERITY_NONE)
        except (OSError, AttributeError):
            pass
    # Read when Ultralytics is first imported: its logger then passes errors only.
    os.environ.setdefault("YOLO_VERBOSE", "False")
    logging.getLogger("ultralytics").setLevel(logging.WARNING)  # in case it was imported already
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # FFmpeg probing chatter
