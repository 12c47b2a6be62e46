"""How scripts/bench_pipeline.py counts agreement between two detectors' outputs (issue 11's
">= 99% of (a)'s detections matched (class, IoU >= 0.5)"), and how it accounts for the ones missed."""

from __future__ import annotations

from tests.conftest import load_script

bench = load_script("bench_pipeline")

PERSON, CAR = 0, 2


def frames(**by_frame):
    return {"frames": {int(k[1:]): {"detections": v, "words": []} for k, v in by_frame.items()}}


def test_a_box_matches_only_the_same_class_at_iou_one_half_or_more():
    box = [0.0, 0.0, 100.0, 100.0]
    half = [0.0, 0.0, 100.0, 50.0]  # IoU 0.5 exactly
    less = [0.0, 0.0, 100.0, 49.0]
    assert bench.matches([(PERSON, box)], [(PERSON, half)]) == [True]
    assert bench.matches([(PERSON, box)], [(PERSON, less)]) == [False]
    assert bench.matches([(PERSON, box)], [(CAR, box)]) == [False]


def test_each_box_of_the_other_side_is_matched_once():
    box = [10.0, 10.0, 110.0, 110.0]
    near = [12.0, 10.0, 112.0, 110.0]
    # Two boxes of (a) on one box of (b): only the first is matched; a second box of (b) frees the other.
    assert bench.matches([(PERSON, box), (PERSON, near)], [(PERSON, box)]) == [True, False]
    assert bench.matches([(PERSON, box), (PERSON, near)], [(PERSON, near), (PERSON, box)]) == [True, True]


def test_missed_lists_the_detections_of_a_the_other_side_lacks_frame_by_frame():
    box = [0.0, 0.0, 50.0, 50.0]
    other = [200.0, 200.0, 260.0, 240.0]
    a = frames(f30=[(PERSON, box), (CAR, other)], f0=[(PERSON, box)], f60=[(CAR, box)])
    b = frames(f0=[(PERSON, box)], f30=[(PERSON, box)])  # frame 60 missing altogether
    assert bench.missed(a, b) == [(30, CAR, other), (60, CAR, box)]
    agreement = bench.agreement(a, b)
    assert (agreement["detections_a"], agreement["detections_b"], agreement["detections_matched"]) == (4, 2, 2)
    assert agreement["frames_missing_in_b"] == 1
    assert bench.missed(a, a) == []


def test_detector_parity_says_which_misses_ultralytics_also_lacks_without_the_jpeg(monkeypatch):
    box, jpeg_only, real = [0.0, 0.0, 50.0, 50.0], [100.0, 100.0, 140.0, 130.0], [300.0, 0.0, 360.0, 40.0]
    a = frames(f0=[(PERSON, box), (CAR, jpeg_only)], f30=[(PERSON, real)])  # (a): after its JPEG round trip
    b = frames(f0=[(PERSON, box)], f30=[])  # the pipeline
    on_raw_pixels = {"0": [[PERSON, box]], "30": [[PERSON, real]]}  # Ultralytics' predict, no JPEG
    monkeypatch.setattr(bench, "_child", lambda args, env=None: on_raw_pixels)
    parity = bench.detector_parity(bench.Path("clip.mp4"), "yolov8n.pt", a, b, 1.0, 0)
    assert parity["a_detections"] == 3 and parity["a_matched_by_ultralytics_on_raw_pixels"] == 2
    assert [(m["frame"], m["class"], m["ultralytics_finds_it_on_raw_pixels"]) for m in parity["a_missed_by_pipeline"]] \
        == [(0, CAR, False), (30, PERSON, True)]
