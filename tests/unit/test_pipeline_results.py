"""OCR line grouping and linking, rounding and serialisation, track ids (no model)."""

from __future__ import annotations

import numpy as np

from videojobs.common.options import AnalysisOptions
from videojobs.common.results import Provenance, ResultsDocument, Sampling, VideoMetadata
from videojobs.worker.pipeline import document as doc
from videojobs.worker.pipeline.ocr import OcrLine, OcrWord, group_lines, link_line
from videojobs.worker.pipeline.tracking import JobTracker


def _word(text, box, conf=0.9):
    return OcrWord(text, conf, box)


def test_words_group_into_lines():
    words = [
        (_word("HELLO", (10, 10, 100, 40)), True),
        (_word("WORLD", (110, 12, 220, 42), 0.7), False),
        (_word("", (0, 0, 1, 1)), True),  # an empty region starting a line yields no line
        (_word("NEXT", (10, 60, 90, 90)), True),
    ]
    lines = group_lines(words)
    assert [line.text for line in lines] == ["HELLO WORLD", "NEXT"]
    assert lines[0].box == (10, 10, 220, 42)
    assert abs(lines[0].confidence - 0.8) < 1e-9


def test_line_links_to_the_smallest_containing_box():
    dets = [(0, 0, 500, 500), (90, 90, 260, 160), (100, 100, 250, 150.5)]
    assert link_line((110, 105, 240, 140), dets) == 2
    # Outside every box.
    assert link_line((600, 600, 700, 650), dets) is None
    # Mostly outside the small boxes: only the large one contains it.
    assert link_line((200, 100, 400, 150), dets) == 0
    # A few pixels of slack (>= 90% inside) still counts.
    assert link_line((95, 100, 250, 150), [(100, 100, 250, 150)]) == 0
    # Equal areas: the lower index wins.
    assert link_line((10, 10, 20, 20), [(0, 0, 50, 50), (5, 5, 55, 55)]) == 0
    assert link_line((10, 10, 20, 20), []) is None


def test_ocr_items_carry_detection_index():
    dets = doc.detection_items(
        np.array([[0, 0, 300, 300, 0.9, 39], [50, 50, 200, 120, 0.8, 0]]), [1, None], {0: "person", 39: "bottle"}, 640, 360
    )
    line = OcrLine("LABEL", 0.93, (60, 60, 180, 100), ())
    items = [i.model_dump() for i in doc.ocr_items([line], dets)]
    assert items == [
        {"text": "LABEL", "confidence": 0.93, "box": {"x1": 60.0, "y1": 60.0, "x2": 180.0, "y2": 100.0},
         "detection_index": 1}
    ]


def test_rounding_and_clipping_are_stable():
    assert str(doc.rnd(-0.0001, 2)) == "0.0"
    assert doc.timestamp_ms(30, 29.833333333333332) == 1005.587
    assert doc.timestamp_ms(0, 0.0) == 0.0
    items = [d.model_dump() for d in
             doc.detection_items(np.array([[-3.0, 10.123456, 700.0, 200.5, 0.912345678, 39]]), [7], {39: "bottle"}, 640, 360)]
    assert items == [
        {
            "class_id": 39,
            "class_name": "bottle",
            "confidence": 0.9123,
            "box": {"x1": 0.0, "y1": 10.12, "x2": 640.0, "y2": 200.5},
            "box_norm": {"x1": 0.0, "y1": 0.0281, "x2": 1.0, "y2": 0.5569},
            "track_id": 7,
        }
    ]
    assert list(items[0]) == ["class_id", "class_name", "confidence", "box", "box_norm", "track_id"]


def test_document_key_order_and_bytes():
    frame = doc.frame_item(0, 0.0, [], [OcrLine("A B", 0.5, (1, 2, 3, 4), ())])

    def document():
        return ResultsDocument(
            pipeline_id="ocr",
            video=VideoMetadata(width=1, height=1, fps=1.0, frame_count=1, duration_ms=1000.0, codec="x"),
            sampling=Sampling(sample_fps=1.0, frame_step=1.0, max_frames=0, frames_analysed=1,
                              requested_sample_fps=1.0, every_frame=True, first_frame_index=0, last_frame_index=0),
            provenance=Provenance(options=AnalysisOptions()), results=[frame], tracks=[])

    d = document().model_dump(mode="json")
    assert list(d) == ["schema_version", "pipeline_id", "video", "sampling", "provenance", "results", "tracks"]
    assert list(d["results"][0]) == ["frame_index", "timestamp_ms", "result"]
    assert list(d["results"][0]["result"]) == ["detections", "text", "ocr"]
    assert d["results"][0]["result"]["text"] == "A B"
    assert document().to_bytes() == document().to_bytes()
    assert ResultsDocument.from_bytes(document().to_bytes()) == document()


def test_tracker_keeps_ids_for_a_moving_box_and_numbers_from_one():
    tracker = JobTracker(analysed_fps=30.0)
    ids_per_frame = []
    for k in range(6):
        dets = np.array(
            [[100 + 5 * k, 100, 200 + 5 * k, 300, 0.9, 39],  # moves right
             [400, 50, 480, 150, 0.85, 0],  # still
             [10, 10, 30, 30, 0.15, 2]]  # too weak to be reported
        )
        reported = dets[:, 4] >= 0.25
        ids_per_frame.append(tracker.update(dets, reported, k * 10, k * 333.333))
    assert ids_per_frame[0] == [1, 2]
    assert all(ids == [1, 2] for ids in ids_per_frame)
    summary = tracker.summaries({0: "person", 39: "bottle"})
    assert [(s.track_id, s.class_name, s.frames, s.first_frame_index, s.last_frame_index)
            for s in summary] == [(1, "bottle", 6, 0, 50), (2, "person", 6, 0, 50)]


def test_fresh_tracker_per_job_restarts_ids():
    for _ in range(2):
        tracker = JobTracker(analysed_fps=1.0)
        dets = np.array([[0, 0, 50, 50, 0.9, 1]])
        assert tracker.update(dets, dets[:, 4] >= 0.25, 0, 0.0) == [1]
