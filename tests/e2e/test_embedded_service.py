"""End to end on embedded defaults: the real `yolo_ocr` pipeline on real footage, in a separate process."""

import signal
import sqlite3

import pytest

from tests.e2e.conftest import SAMPLE
from videojobs.v1 import jobs_pb2

pytestmark = pytest.mark.e2e


def check_results(body: dict, frames_total: int) -> None:
    frames = body["results"]
    assert isinstance(frames, list) and len(frames) == frames_total == body["sampling"]["frames_analysed"]
    indices = [f["frame_index"] for f in frames]
    assert indices == sorted(set(indices))  # in order, no duplicates
    fps = body["video"]["fps"]
    for f in frames:
        assert f["timestamp_ms"] == pytest.approx(f["frame_index"] * 1000 / fps, abs=1.0)
        names = {d["class_name"] for d in f["result"]["detections"]}
        assert "bottle" in names, f"no bottle in frame {f['frame_index']}"
        assert set(f["result"]) == {"detections", "text", "ocr"}


def test_sample_video_over_rest_and_grpc(service_factory):
    svc = service_factory().start()
    rest_id = svc.submit_rest(SAMPLE, sample_fps=1)
    grpc_id = svc.submit_grpc(SAMPLE, sample_fps=1.0)

    status = svc.wait_for(rest_id)
    assert status["status"] == "COMPLETED", status
    assert status["progress"] == 1.0 and status["frames_done"] == status["frames_total"] >= 35
    body = svc.http.get(f"/video/results/{rest_id}").json()
    assert body["job_id"] == rest_id and body["video"]["width"] == 640
    check_results(body, status["frames_total"])

    status = svc.wait_for(grpc_id)
    assert status["status"] == "COMPLETED" and status["progress"] == 1.0
    grpc_status = svc.grpc_status(grpc_id)
    assert grpc_status.status == jobs_pb2.JOB_STATUS_COMPLETED and grpc_status.progress == 1.0
    frames, token = [], ""
    while True:
        page = svc.stub.GetResults(jobs_pb2.GetResultsRequest(job_id=grpc_id, page_size=16, page_token=token))
        frames.extend(page.results)
        token = page.next_page_token
        if not token:
            break
    assert [f.frame_index for f in frames] == [f["frame_index"] for f in body["results"]]
    assert all(any(d.class_name == "bottle" for d in f.result.detections) for f in frames)
    # same input, options and model: the same results document
    inputs = svc.data_dir / "storage" / "results"
    assert (inputs / f"{rest_id}.json").read_bytes() == (inputs / f"{grpc_id}.json").read_bytes()
    # one process, one /metrics: the api's, the gateway's and the worker's metrics together
    metrics = svc.http.get("/metrics").text
    assert 'videojobs_jobs_submitted_total{pipeline="yolo_ocr"} 2.0' in metrics
    assert 'videojobs_jobs_finished_total{pipeline="yolo_ocr",status="COMPLETED"} 2.0' in metrics
    assert f'videojobs_frames_analysed_total{{pipeline="yolo_ocr"}} {float(2 * len(frames))}' in metrics
    assert 'videojobs_http_requests_total{method="POST",route="/video/submit",status="202"} 1.0' in metrics
    assert svc.stop() == 0


def test_worker_sigterm_mid_job_hands_back_and_job_completes_after_restart(service_factory):
    # One job as one unit (no segments: tests/e2e/test_segments.py covers a split job's SIGTERM).
    svc = service_factory(VIDEOJOBS_SEGMENT_FRAMES="0").start()
    job_id = svc.submit_rest(SAMPLE, pipeline_id="yolo", sample_fps=0, max_frames=200)
    status = svc.wait_for(job_id, statuses=("RUNNING",), timeout=120)
    while status["frames_done"] == 0 and status["status"] == "RUNNING":
        status = svc.status(job_id)
    assert status["status"] == "RUNNING", "job finished before the signal; make it longer"
    assert svc.stop(signal.SIGTERM) == 0
    row = sqlite3.connect(svc.data_dir / "videojobs.db").execute(
        "select status, attempt from jobs where job_id = ?", (job_id,)).fetchone()
    assert row == ("PENDING", 1), row  # handed back, not left RUNNING

    svc.start()
    status = svc.wait_for(job_id)
    assert status["status"] == "COMPLETED" and status["attempt"] == 2 and status["frames_done"] == 200
    body = svc.http.get(f"/video/results/{job_id}").json()
    assert [f["frame_index"] for f in body["results"]] == list(range(200))
    assert svc.stop() == 0


def test_restart_with_pending_jobs_completes_them(service_factory):
    svc = service_factory().start()
    ids = [svc.submit_rest(SAMPLE, pipeline_id="yolo", max_frames=5) for _ in range(3)]
    svc.stop(signal.SIGKILL)  # no chance to hand anything back
    rows = dict(sqlite3.connect(svc.data_dir / "videojobs.db").execute("select job_id, status from jobs"))
    assert set(rows) == set(ids) and set(rows.values()) <= {"PENDING", "RUNNING", "COMPLETED"}
    assert any(s != "COMPLETED" for s in rows.values())

    svc.start()
    for job_id in ids:
        status = svc.wait_for(job_id, timeout=120)
        assert status["status"] == "COMPLETED" and status["progress"] == 1.0
    assert svc.stop() == 0


def test_corrupt_upload_fails_cleanly_and_the_service_keeps_working(service_factory, tmp_path):
    svc = service_factory().start()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(SAMPLE.read_bytes()[:20_000])  # ftyp box intact, the rest cut off
    bad = svc.submit_rest(truncated)
    status = svc.wait_for(bad, timeout=60)
    assert status["status"] == "FAILED" and status["error_message"]
    r = svc.http.get(f"/video/results/{bad}")
    assert r.status_code == 409 and r.json()["job_status"] == "FAILED"
    assert "truncated" in status["error_message"] and ".mp4" not in status["error_message"]
    good = svc.submit_rest(SAMPLE, pipeline_id="yolo", max_frames=3)
    assert svc.wait_for(good)["status"] == "COMPLETED"
    assert svc.stop() == 0
