"""videojobs.client and the client commands of the CLI against a real gRPC api (embedded adapters, fake analyzer)."""

from __future__ import annotations

import csv
import io
import json
import threading
from concurrent import futures
from datetime import timedelta

import grpc
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.integration.conftest import MAX_UPLOAD, SAMPLE
from videojobs import cli
from videojobs.client import RetryPolicy, ServiceError, ServiceUnreachable, VideoJobsClient, WaitTimeout
from videojobs.common import wire
from videojobs.common.job import DEFAULT_TENANT, Job, JobStatus
from videojobs.common.options import AnalysisOptions
from videojobs.common.resources import Capabilities, JobResource
from videojobs.common.results import ResultsDocument
from videojobs.common.config import Settings
from videojobs.gateway.app import create_app
from videojobs.v1 import jobs_pb2, jobs_pb2_grpc

NO_RETRY = RetryPolicy(attempts=1)


@pytest.fixture
def client(api):
    with VideoJobsClient(f"127.0.0.1:{api.port}", retry=NO_RETRY) as c:
        yield c


def test_submit_wait_results_typed(client, api, imaging_worker):
    job = client.submit_file(SAMPLE, "yolo", AnalysisOptions(sample_fps=2, classes=("bottle", "person")))
    assert isinstance(job, JobResource) and job.status is not JobStatus.FAILED and job.pipeline_id == "yolo"
    assert job.options.sample_fps == 2.0 and api.repo.get(job.job_id).options.classes == ("bottle", "person")
    seen: list[JobResource] = []
    done = client.wait(job.job_id, timeout=30, poll_interval=0.05, on_progress=seen.append)
    assert done.status is JobStatus.COMPLETED and done.progress == 1.0 and seen[-1] == done
    assert all(isinstance(j, JobResource) for j in seen)

    document = client.results(job.job_id)
    stored = ResultsDocument.from_bytes(api.storage.read_bytes(api.repo.get(job.job_id).output_key))
    assert isinstance(document, ResultsDocument) and document == stored
    # Paging is the client's business: tiny pages give the same frames.
    assert list(client.frames(job.job_id, page_size=2)) == stored.results
    assert len(list(client.result_pages(job.job_id, page_size=2))) == 3
    assert isinstance(client.capabilities(), Capabilities)

    image = client.frame_image(job.job_id, stored.results[1].frame_index, annotated=True)
    assert image.content_type == "image/jpeg" and (image.width, image.height) == (320, 180)
    sheet = client.contact_sheet(job.job_id, columns=5)
    assert sheet.content_type == "image/png" and sheet.frame_indices == (0, 30, 60, 90, 120)
    assert Image.open(io.BytesIO(sheet.data)).size == (sheet.width, sheet.height)


def test_problems_come_back_typed(client, api):
    with pytest.raises(ServiceError) as err:
        client.status("00000000-0000-4000-8000-000000000000")
    assert err.value.slug == "job-not-found" and err.value.problem.http_status == 404
    with pytest.raises(ServiceError) as err:
        client.status("nope")
    assert err.value.slug == "invalid-job-id"
    job = client.submit_file(SAMPLE)  # no worker: stays PENDING
    with pytest.raises(ServiceError) as err:
        client.results(job.job_id)
    assert err.value.slug == "results-not-ready" and err.value.job_status == "PENDING"
    with pytest.raises(WaitTimeout) as waited:
        client.wait(job.job_id, timeout=0.3, poll_interval=0.05)
    assert waited.value.job.status is JobStatus.PENDING
    with pytest.raises(ServiceError) as err:
        client.submit_from_storage("../etc/passwd")
    assert err.value.slug == "invalid-options" and err.value.extensions["invalid_params"][0]["name"] == "input_key"
    with pytest.raises(FileNotFoundError):
        client.submit_file(SAMPLE.with_name("no-such-file.mp4"))


def test_list_cancel_delete_and_idempotent_submit(client, api):
    first = client.submit_file(SAMPLE, "yolo", request_id="order-42")
    again = client.submit_file(SAMPLE, "yolo", request_id="order-42")  # a retry after a lost answer
    assert again.job_id == first.job_id and len(api.repo.list_owned(DEFAULT_TENANT, None, 10)) == 1
    with pytest.raises(ServiceError) as err:  # the same key for another request
        client.submit_file(SAMPLE, "yolo_ocr", request_id="order-42")
    assert err.value.problem.http_status == 409
    second = client.submit_file(SAMPLE, "yolo")  # a fresh key each call: a second job
    assert [j.job_id for j in client.jobs()] == [second.job_id, first.job_id]
    page = client.list_page(page_size=1)
    assert [j.job_id for j in page.jobs] == [second.job_id] and page.next_page_token
    assert [j.job_id for j in client.jobs(page_size=1)] == [second.job_id, first.job_id]

    cancelled = client.cancel(first.job_id)
    assert cancelled.status is JobStatus.CANCELLED and api.repo.get(first.job_id).status is JobStatus.CANCELLED
    assert [j.job_id for j in client.jobs(JobStatus.CANCELLED)] == [first.job_id]
    with pytest.raises(ServiceError) as err:  # already final
        client.cancel(first.job_id)
    assert err.value.problem.http_status == 409 and err.value.job_status == "CANCELLED"

    input_key = api.repo.get(second.job_id).input_key
    client.delete(second.job_id)
    assert not api.storage.exists(input_key)
    with pytest.raises(ServiceError) as err:
        client.status(second.job_id)
    assert err.value.slug == "job-not-found"
    assert [j.job_id for j in client.jobs()] == [first.job_id]


def test_cli_list_cancel_delete(api, capsys):
    server = f"127.0.0.1:{api.port}"
    code, out, _ = run_cli(capsys, "submit", str(SAMPLE), "--server", server, "--request-id", "k1")
    job_id = out.strip()
    code, out, _ = run_cli(capsys, "submit", str(SAMPLE), "--server", server, "--request-id", "k1")
    assert code == 0 and out.strip() == job_id  # the same key: the same job
    code, out, _ = run_cli(capsys, "list", "--server", server)
    assert code == 0 and len(out.splitlines()) == 1 and out.startswith(f"{job_id}  PENDING")
    code, _, err = run_cli(capsys, "cancel", job_id, "--server", server)
    assert code == 0 and "CANCELLED" in err
    code, _, err = run_cli(capsys, "cancel", job_id, "--server", server)
    assert code == 2 and "CANCELLED" in err
    code, out, _ = run_cli(capsys, "list", "--server", server, "--status", "CANCELLED", "--json")
    assert code == 0 and JobResource.model_validate_json(out.splitlines()[0]).job_id == job_id
    code, out, _ = run_cli(capsys, "list", "--server", server, "--status", "PENDING")
    assert code == 0 and out == ""
    code, _, err = run_cli(capsys, "delete", job_id, "--server", server)
    assert code == 0 and "deleted" in err
    code, _, err = run_cli(capsys, "delete", job_id, "--server", server)
    assert code == 2 and "job-not-found" in err


def test_submit_from_storage(client, api):
    api.storage.save_bytes(SAMPLE.read_bytes(), "uploads/default/clip.mp4")
    job = client.submit_from_storage("uploads/default/clip.mp4", "yolo", AnalysisOptions(max_frames=2))
    assert job.status is JobStatus.PENDING and api.repo.get(job.job_id).input_key == "uploads/default/clip.mp4"


class FlakySubmit(jobs_pb2_grpc.JobServiceServicer):
    """Answers the first `failures` Submit streams with UNAVAILABLE halfway through; records what arrives."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.streams: list[tuple[str, bytes]] = []  # (pipeline_id of the first message, bytes received)
        self.metadata: list[dict[str, str]] = []
        self.request_ids: list[str] = []

    def Submit(self, request_iterator, context):
        self.metadata.append(dict(context.invocation_metadata()))
        first = next(request_iterator)
        self.request_ids.append(first.spec.request_id)
        received = bytearray()
        for k, message in enumerate(request_iterator):
            received += message.chunk
            if len(self.streams) < self.failures and k == 0:
                self.streams.append((first.spec.pipeline_id, bytes(received)))
                context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset (simulated)")
        self.streams.append((first.spec.pipeline_id, bytes(received)))
        return jobs_pb2.SubmitResponse(job_id="00000000-0000-4000-8000-000000000001")

    def GetStatus(self, request, context):
        job = Job.submit("yolo", job_id=request.job_id)
        return jobs_pb2.GetStatusResponse(job=wire.job_to_pb(JobResource.from_job(job)))


@pytest.fixture
def flaky_server():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = FlakySubmit(failures=2)
    jobs_pb2_grpc.add_JobServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(0)


def test_a_retried_upload_is_sent_again_from_its_first_byte(flaky_server, tmp_path, monkeypatch):
    servicer, port = flaky_server
    video = tmp_path / "clip.mp4"
    video.write_bytes((SAMPLE.read_bytes() * 7)[:3 * 1024 * 1024 + 5])  # four chunks
    monkeypatch.setenv("VIDEOJOBS_API_KEY", "k-123")
    sleeps: list[float] = []
    with VideoJobsClient(f"127.0.0.1:{port}", retry=RetryPolicy(attempts=4, initial_backoff=0.2),
                         sleep=sleeps.append) as c:
        job = c.submit_file(video, "yolo")
    assert job.job_id.endswith("1") and len(servicer.streams) == 3
    assert [len(data) for _, data in servicer.streams[:2]] == [1024 * 1024] * 2  # cut after the first chunk
    assert servicer.streams[2] == ("yolo", video.read_bytes())  # the whole file, spec first
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 0.2 and 0 <= sleeps[1] <= 0.4
    assert all(m.get("authorization") == "Bearer k-123" for m in servicer.metadata)
    # Every retry carries the same idempotency key, so the service never makes a second job of it.
    assert len(set(servicer.request_ids)) == 1 and len(servicer.request_ids[0]) == 36


def test_unreachable_after_bounded_retries():
    sleeps: list[float] = []
    with VideoJobsClient("127.0.0.1:1", retry=RetryPolicy(attempts=3), sleep=sleeps.append) as c:
        with pytest.raises(ServiceUnreachable) as err:
            c.status("00000000-0000-4000-8000-000000000000")
    assert "127.0.0.1:1" in str(err.value) and len(sleeps) == 2


# -- the CLI -----------------------------------------------------------------------------------------
def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_submit_wait_results_render(api, imaging_worker, capsys, tmp_path):
    server = f"127.0.0.1:{api.port}"
    code, out, err = run_cli(capsys, "submit", str(SAMPLE), "--server", server, "--pipeline", "yolo",
                             "--sample-fps", "2", "--wait", "--interval", "0.05")
    assert code == 0, err
    job_id = out.strip()
    assert api.repo.get(job_id).status is JobStatus.COMPLETED and api.repo.get(job_id).options.sample_fps == 2.0
    lines = err.strip().splitlines()
    assert lines[-1] == f"job {job_id}: done, 5/5 frames (100%)"  # plain lines when stderr is not a terminal
    assert all("\x1b" not in line and "\r" not in line for line in lines)

    code, out, err = run_cli(capsys, "results", job_id, "--server", server, "-o", str(tmp_path / "r.json"))
    assert code == 0 and "5 frames" in err
    app = create_app(Settings(max_upload_bytes=MAX_UPLOAD), server)
    with TestClient(app) as rest:
        assert json.loads((tmp_path / "r.json").read_text()) == rest.get(f"/video/results/{job_id}").json()

    code, out, err = run_cli(capsys, "results", job_id, "--server", server, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    document = ResultsDocument.from_bytes(api.storage.read_bytes(api.repo.get(job_id).output_key))
    assert code == 0 and len(rows) == sum(len(f.result.detections) for f in document.results) == 8
    assert rows[0]["class_name"] == "bottle" and rows[0]["track_id"] == "1" and float(rows[0]["x1"]) == 40.0
    assert {r["frame_index"] for r in rows} == {str(f.frame_index) for f in document.results}

    code, _, err = run_cli(capsys, "render", job_id, "--server", server, "-o", str(tmp_path / "s.png"))
    assert code == 0 and Image.open(tmp_path / "s.png").format == "PNG" and "5 frames" in err
    code, _, err = run_cli(capsys, "render", job_id, "--server", server, "--frame", "30", "-o", str(tmp_path / "f.jpg"))
    assert code == 0 and Image.open(tmp_path / "f.jpg").format == "JPEG"

    code, out, _ = run_cli(capsys, "status", job_id, "--server", server, "--json")
    assert code == 0 and JobResource.model_validate_json(out).status is JobStatus.COMPLETED
    code, out, _ = run_cli(capsys, "status", job_id, "--server", server)
    assert code == 0 and "COMPLETED" in out and "5/5 frames" in out


def test_cli_results_of_a_long_job_are_written_a_page_at_a_time(api, imaging_worker, capsys, tmp_path, monkeypatch):
    """2,500 frames (three api pages): the file is the REST answer, written as the pages come; if the service
    fails part-way, no file (and no partial one) is left, and a file already there is untouched."""
    imaging_worker._analyzer.frames = 2500
    server = f"127.0.0.1:{api.port}"
    code, out, err = run_cli(capsys, "submit", str(SAMPLE), "--server", server, "--pipeline", "yolo", "--wait",
                             "--interval", "0.05", "-q")
    assert code == 0, err
    job_id = out.strip()
    outputs = tmp_path / "out"  # tmp_path also holds the api's data
    outputs.mkdir()
    out_file = outputs / "r.json"
    code, _, err = run_cli(capsys, "results", job_id, "--server", server, "-o", str(out_file))
    assert code == 0 and "2500 frames" in err
    with TestClient(create_app(Settings(max_upload_bytes=MAX_UPLOAD), server)) as rest:
        answer = rest.get(f"/video/results/{job_id}").json()
    assert json.loads(out_file.read_text()) == answer and answer["total_size"] == 2500
    code, _, err = run_cli(capsys, "results", job_id, "--server", server, "--format", "csv", "-o",
                           str(outputs / "d.csv"))
    assert code == 0 and "3750 detections in 2500 frames" in err
    assert len((outputs / "d.csv").read_text().splitlines()) == 1 + 2500 + 1250
    (outputs / "d.csv").unlink()

    pages = VideoJobsClient.result_pages

    def failing_after_the_first_page(self, job_id, page_size=1000):
        source = pages(self, job_id, page_size)
        yield next(source)
        raise ServiceUnreachable("the service went away")

    monkeypatch.setattr(VideoJobsClient, "result_pages", failing_after_the_first_page)
    out_file.write_text("kept")
    code, _, err = run_cli(capsys, "results", job_id, "--server", server, "-o", str(out_file))
    assert code == 3 and "went away" in err
    assert out_file.read_text() == "kept" and sorted(p.name for p in outputs.iterdir()) == ["r.json"]
    code, _, _ = run_cli(capsys, "results", job_id, "--server", server, "-o", str(outputs / "new.json"))
    assert code == 3 and sorted(p.name for p in outputs.iterdir()) == ["r.json"]


def test_cli_exit_codes(api, capsys, tmp_path, monkeypatch):
    server = f"127.0.0.1:{api.port}"
    monkeypatch.setenv("VIDEOJOBS_SERVER", server)  # no --server: the environment names it
    unknown = "00000000-0000-4000-8000-000000000000"
    code, _, err = run_cli(capsys, "status", unknown)
    assert code == 2 and "not found (job-not-found)" in err
    code, _, err = run_cli(capsys, "submit", str(SAMPLE), "--sample-fps", "fast")
    assert code == 2 and "sample_fps" in err
    code, _, err = run_cli(capsys, "submit", str(tmp_path / "missing.mp4"))
    assert code == 2 and "missing.mp4" in err
    with pytest.raises(SystemExit) as usage:
        cli.main(["submit"])  # neither FILE nor --from-storage
    assert usage.value.code == 2
    code, out, _ = run_cli(capsys, "submit", str(SAMPLE), "-q")
    job_id = out.strip()
    code, _, err = run_cli(capsys, "watch", job_id, "--timeout", "0.3", "--interval", "0.05", "-q")
    assert code == 4 and "still PENDING" in err  # no worker here
    code, _, err = run_cli(capsys, "results", job_id)
    assert code == 2 and "results-not-ready" in err

    job = api.repo.get(job_id)
    job.start("test-worker", timedelta(seconds=30))
    assert api.repo.save(job, JobStatus.PENDING, 0)
    job.fail("the video track cannot be decoded")
    assert api.repo.save(job, JobStatus.RUNNING, 1)
    code, _, err = run_cli(capsys, "watch", job_id)
    assert code == 1 and "failed" in err and "cannot be decoded" in err
    code, _, _ = run_cli(capsys, "status", job_id)
    assert code == 1
    code, _, err = run_cli(capsys, "results", job_id)
    assert code == 1 and "FAILED" in err

    monkeypatch.setenv("VIDEOJOBS_SERVER", "127.0.0.1:1")
    code, _, err = run_cli(capsys, "status", job_id)
    assert code == 3 and "unreachable" in err


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("videojobs ")


def test_concurrent_waits_share_nothing(client, api, imaging_worker):
    ids = [client.submit_file(SAMPLE, "yolo").job_id for _ in range(3)]
    outcomes: dict[str, JobStatus] = {}

    def wait(job_id: str) -> None:
        outcomes[job_id] = client.wait(job_id, timeout=30, poll_interval=0.05).status

    threads = [threading.Thread(target=wait, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)
    assert outcomes == {i: JobStatus.COMPLETED for i in ids}
