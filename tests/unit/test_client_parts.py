"""The client's parts without a server: progress lines, CSV rows, retry backoffs, settings, sheet limits."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone

import pytest

from tests.fakes import fake_detections

from videojobs.client import ClientSettings, RetryPolicy
from videojobs.client.export import CSV_COLUMNS, write_detections_csv
from videojobs.client.progress import ProgressView, RateMeter, describe, format_duration
from videojobs.common.errors import InvalidRequest
from videojobs.common.frames import SheetLayout
from videojobs.common.job import JobStatus
from videojobs.common.options import AnalysisOptions
from videojobs.common.resources import JobResource
from videojobs.common.results import FrameAnalysis, FrameResult

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def job(status: JobStatus, done: int, total: int, error: str | None = None) -> JobResource:
    progress = 1.0 if status is JobStatus.COMPLETED else (done / total if total else 0.0)
    return JobResource(job_id="j1", status=status, progress=progress, frames_done=done, frames_total=total,
                       pipeline_id="yolo", options=AnalysisOptions(), error_message=error, attempt=1,
                       created_at=T0, updated_at=T0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rate_and_time_left_from_readings():
    clock = Clock()
    meter = RateMeter(clock)
    assert meter.update(0, 100) == (None, None)
    clock.now = 10.0
    assert meter.update(20, 100) == (2.0, 40.0)
    clock.now = 20.0
    assert meter.update(40, 100) == (2.0, 30.0)
    clock.now = 21.0
    assert meter.update(5, 100) == (None, None)  # a new attempt started over: measure afresh


def test_describe_is_one_clean_line():
    assert describe(job(JobStatus.PENDING, 0, 0), None, None) == "job j1: queued"
    assert describe(job(JobStatus.RUNNING, 12, 40), 3.0, 9.4) == \
        "job j1: analysing, 12/40 frames (30%), 3.0 frames/s, ETA 0:09"
    assert describe(job(JobStatus.FAILED, 3, 40, "the file is truncated"), None, None) == \
        "job j1: failed, 3/40 frames (8%), the file is truncated"
    assert format_duration(3725) == "1:02:05"


def test_plain_progress_prints_a_line_per_stage_and_tenth_only():
    clock = Clock()
    out = io.StringIO()
    readings = [job(JobStatus.PENDING, 0, 0), job(JobStatus.PENDING, 0, 0), job(JobStatus.RUNNING, 0, 100)]
    readings += [job(JobStatus.RUNNING, done, 100) for done in range(1, 100, 3)]
    readings += [job(JobStatus.COMPLETED, 100, 100)]
    with ProgressView(out, live=False, clock=clock) as view:
        for reading in readings:
            clock.now += 1.0
            view.update(reading)
    lines = out.getvalue().splitlines()
    assert not view.live and lines[0] == "job j1: queued" and lines[-1] == "job j1: done, 100/100 frames (100%)"
    assert 10 <= len(lines) <= 14  # one per tenth, not one per reading
    assert all("\x1b" not in line and "\r" not in line for line in lines)
    assert any("frames/s" in line and "ETA" in line for line in lines)


def test_plain_progress_repeats_a_stalled_line_after_the_heartbeat():
    clock = Clock()
    out = io.StringIO()
    with ProgressView(out, live=False, clock=clock, heartbeat=30) as view:
        for _ in range(100):
            clock.now += 1.0
            view.update(job(JobStatus.RUNNING, 5, 100))
    assert len(out.getvalue().splitlines()) == 4  # at 1 s, 31 s, 61 s and 91 s


def test_not_a_terminal_means_plain_lines():
    assert ProgressView(io.StringIO()).live is False


def test_csv_has_one_row_per_detection():
    frames = [FrameResult(frame_index=30 * k, timestamp_ms=1000.0 * k,
                          result=FrameAnalysis(detections=fake_detections(k))) for k in range(4)]
    frames.append(FrameResult(frame_index=120, timestamp_ms=4000.0, result=FrameAnalysis()))
    out = io.StringIO()
    assert write_detections_csv(frames, out) == 6
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert len(rows) == 6 and tuple(rows[0]) == CSV_COLUMNS
    assert rows[0] == {"frame_index": "0", "timestamp_ms": "0.0", "class_id": "39", "class_name": "bottle",
                       "confidence": "0.9", "track_id": "1", "x1": "40.0", "y1": "30.0", "x2": "120.0",
                       "y2": "150.0", "x1_norm": "0.125", "y1_norm": "0.1667", "x2_norm": "0.375", "y2_norm": "0.8333"}
    assert [r["class_name"] for r in rows] == ["bottle", "person", "bottle", "bottle", "person", "bottle"]


def test_retry_backoffs_grow_to_a_cap():
    assert list(RetryPolicy(attempts=6, initial_backoff=0.5, max_backoff=3.0).backoffs()) == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert list(RetryPolicy(attempts=1).backoffs()) == []


def test_client_settings_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("VIDEOJOBS_SERVER", raising=False)
    monkeypatch.delenv("VIDEOJOBS_API_KEY", raising=False)
    assert ClientSettings().server == "localhost:50051" and ClientSettings().api_key.get_secret_value() == ""
    monkeypatch.setenv("VIDEOJOBS_SERVER", "jobs.internal:443")
    monkeypatch.setenv("VIDEOJOBS_API_KEY", "s3cret")
    settings = ClientSettings()
    assert settings.server == "jobs.internal:443" and settings.api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_sheet_layout_defaults_and_limits():
    assert SheetLayout().resolved() == SheetLayout(columns=4, tile_width=320, max_frames=24)
    assert SheetLayout(columns=2).resolved().columns == 2
    with pytest.raises(InvalidRequest) as err:
        SheetLayout(columns=11, tile_width=10).resolved()
    assert [v.field for v in err.value.violations] == ["columns", "tile_width"]
