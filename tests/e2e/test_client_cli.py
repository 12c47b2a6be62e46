"""The `videojobs` client commands, as separate processes, against `videojobs serve` on the real pipeline."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from tests.e2e.conftest import SAMPLE
from tests.terminal import run_on_terminal

pytestmark = pytest.mark.e2e


def videojobs(*args: str, server: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "VIDEOJOBS_API_KEY"}
    env["VIDEOJOBS_SERVER"] = server
    return subprocess.run([sys.executable, "-m", "videojobs.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_submit_wait_then_results_csv_and_sheet(service_factory, tmp_path):
    svc = service_factory().start()
    server = f"127.0.0.1:{svc.grpc_port}"

    # 4 frames/s, 80 of them, polls every 0.1 s: several progress writes (one per 0.5 s) on a fast CPU.
    run = videojobs("submit", str(SAMPLE), "--wait", "--interval", "0.1", "--sample-fps", "4", "--max-frames", "80",
                    server=server)
    assert run.returncode == 0, run.stderr
    job_id = run.stdout.strip()
    lines = run.stderr.strip().splitlines()
    status = svc.status(job_id)
    total = status["frames_total"]
    assert status["status"] == "COMPLETED" and total >= 35
    # Progress as it went (plain lines, stderr is a pipe here), then the outcome.
    assert lines[0].startswith(f"job {job_id}: ")
    assert any(": analysing, " in line and f"/{total} frames" in line for line in lines), lines
    assert lines[-1] == f"job {job_id}: done, {total}/{total} frames (100%)"
    assert all("\x1b" not in line and "\r" not in line for line in lines)

    # `videojobs results` writes the same document as the REST results.
    out = tmp_path / "results.json"
    run = videojobs("results", job_id, "-o", str(out), server=server)
    assert run.returncode == 0, run.stderr
    rest = svc.http.get(f"/video/results/{job_id}").json()
    assert json.loads(out.read_text()) == rest
    assert len(rest["results"]) == total

    # --format csv: one row per detection.
    run = videojobs("results", job_id, "--format", "csv", server=server)
    assert run.returncode == 0, run.stderr
    rows = list(csv.DictReader(io.StringIO(run.stdout)))
    detections = [(f["frame_index"], d) for f in rest["results"] for d in f["result"]["detections"]]
    assert len(rows) == len(detections) > total  # several bottles per frame
    for row, (frame_index, det) in zip(rows, detections):
        assert (int(row["frame_index"]), row["class_name"], float(row["confidence"])) == \
               (frame_index, det["class_name"], det["confidence"])
        assert row["track_id"] == ("" if det["track_id"] is None else str(det["track_id"]))

    run = videojobs("render", job_id, "-o", str(tmp_path / "sheet.png"), server=server)
    assert run.returncode == 0, run.stderr
    sheet = Image.open(tmp_path / "sheet.png")
    assert sheet.format == "PNG" and sheet.width == 4 * 320 + 5 * 6
    rest_sheet = svc.http.get(f"/video/sheet/{job_id}.png")
    assert rest_sheet.status_code == 200 and rest_sheet.content == (tmp_path / "sheet.png").read_bytes()

    run = videojobs("status", "00000000-0000-4000-8000-000000000000", server=server)
    assert run.returncode == 2 and "job-not-found" in run.stderr
    assert svc.stop() == 0
    run = videojobs("status", job_id, server=server, timeout=120)
    assert run.returncode == 3 and "unreachable" in run.stderr


def test_watch_draws_a_live_bar_on_a_terminal(service_factory):
    svc = service_factory().start()
    job_id = svc.submit_rest(SAMPLE, pipeline_id="yolo", sample_fps=0, max_frames=150)
    env = dict(os.environ, COLUMNS="120", TERM="xterm", VIDEOJOBS_SERVER=f"127.0.0.1:{svc.grpc_port}")
    returncode, terminal, _ = run_on_terminal(
        [sys.executable, "-m", "videojobs.cli", "watch", job_id, "--interval", "0.2"], env, timeout=300)
    assert returncode == 0, terminal[-2000:]
    assert "\x1b[" in terminal  # drawn in place with control sequences
    assert "analysing" in terminal and "/150" in terminal and "frames/s" in terminal and "ETA" in terminal
    assert "150/150" in terminal and f"job {job_id}: done" in terminal
    assert svc.stop() == 0
