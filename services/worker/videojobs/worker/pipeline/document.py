"""Building the parts of the results document (``videojobs.common.results``): rounded floats.

Rounding: pixels to 2 decimals, normalised coordinates and confidences to 4,
milliseconds to 3. With the document's fixed field order this makes
``ResultsDocument.to_bytes`` byte-identical for the same input, options and model.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from videojobs.common.results import Box, Detection, FrameAnalysis, FrameResult, OcrLine
from videojobs.worker.pipeline.ocr import OcrLine as ReadLine
from videojobs.worker.pipeline.ocr import link_line


def rnd(value: float, digits: int) -> float:
    """round() that never yields -0.0 (it would print as "-0.0")."""
    return round(float(value), digits) + 0.0


def timestamp_ms(frame_index: int, fps: float) -> float:
    """Presentation time of a frame of a constant-rate video, in milliseconds."""
    return rnd(frame_index * 1000.0 / fps, 3) if fps > 0 else 0.0


def box_px(x1: float, y1: float, x2: float, y2: float, width: int, height: int) -> Box:
    """A pixel box clipped to the frame."""
    return Box(
        x1=rnd(min(max(x1, 0.0), width), 2),
        y1=rnd(min(max(y1, 0.0), height), 2),
        x2=rnd(min(max(x2, 0.0), width), 2),
        y2=rnd(min(max(y2, 0.0), height), 2),
    )


def box_norm(box: Box, width: int, height: int) -> Box:
    return Box(x1=rnd(box.x1 / width, 4), y1=rnd(box.y1 / height, 4),
               x2=rnd(box.x2 / width, 4), y2=rnd(box.y2 / height, 4))


def detection_items(
    dets: np.ndarray, track_ids: Sequence[Optional[int]], names: dict[int, str], width: int, height: int
) -> list[Detection]:
    """Detections of one frame, in the detector's (reproducible) order."""
    items = []
    for row, track_id in zip(dets, track_ids):
        class_id = int(row[5])
        box = box_px(row[0], row[1], row[2], row[3], width, height)
        items.append(Detection(
            class_id=class_id,
            class_name=names.get(class_id, str(class_id)),
            confidence=rnd(row[4], 4),
            box=box,
            box_norm=box_norm(box, width, height),
            track_id=track_id,
        ))
    return items


def ocr_items(lines: Sequence[ReadLine], detections: Sequence[Detection]) -> list[OcrLine]:
    """OCR lines of one frame, each linked to the smallest detection box containing it."""
    det_boxes = [(d.box.x1, d.box.y1, d.box.x2, d.box.y2) for d in detections]
    items = []
    for line in lines:
        x1, y1, x2, y2 = line.box
        items.append(OcrLine(
            text=line.text,
            confidence=rnd(line.confidence, 4),
            box=Box(x1=rnd(x1, 2), y1=rnd(y1, 2), x2=rnd(x2, 2), y2=rnd(y2, 2)),
            detection_index=link_line(line.box, det_boxes),
        ))
    return items


def frame_item(frame_index: int, ts_ms: float, detections: list[Detection], lines: Sequence[ReadLine]) -> FrameResult:
    """One entry of the document's ``results``."""
    return FrameResult(
        frame_index=frame_index,
        timestamp_ms=ts_ms,
        result=FrameAnalysis(
            detections=detections,
            text="\n".join(line.text for line in lines),
            ocr=ocr_items(lines, detections),
        ),
    )
