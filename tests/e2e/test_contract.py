"""One contract for every entrance, end to end against `videojobs serve` in its own process.

The same job over REST, over gRPC and from `videojobs analyze` is one document; every
REST error is problem+json with its documented type, and gRPC says the same with
field violations; every accepted container completes, other files are 415; a
second server on taken ports stops at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import grpc
import httpx
import jsonschema
import pytest
from google.protobuf.json_format import MessageToDict
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.e2e.conftest import MODEL, SAMPLE, Service
from tests.media import container_variants, gif_file, wav_file, zip_file
from videojobs.v1 import jobs_pb2

pytestmark = pytest.mark.e2e

MAX_UPLOAD = 8 * 1024 * 1024
PAGING = ("job_id", "status", "next_page_token", "total_size")


@pytest.fixture(scope="module")
def svc(tmp_path_factory, model_cache):
    service = Service(tmp_path_factory.mktemp("contract"), model_cache, VIDEOJOBS_MAX_UPLOAD_BYTES=str(MAX_UPLOAD))
    service.start()
    deadline = time.time() + 120  # the worker publishes its classes once its model is loaded
    while service.http.get("/video/capabilities").json()["detector"] is None:
        assert time.time() < deadline, service.diagnostics()
        time.sleep(0.3)
    yield service
    service.stop()


def without_nulls(value):
    """JSON without null members: how MessageToDict shows unset optional fields."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def grpc_document(svc: Service, job_id: str) -> dict:
    """Every page of GetResults, converted with MessageToDict and joined."""
    pages, token = [], ""
    while True:
        page = svc.stub.GetResults(jobs_pb2.GetResultsRequest(job_id=job_id, page_size=7, page_token=token))
        pages.append(MessageToDict(page, preserving_proto_field_name=True, always_print_fields_with_no_presence=True))
        token = page.next_page_token
        if not token:
            break
    document = dict(pages[0])
    document["results"] = [frame for page in pages for frame in page["results"]]
    return document


def test_one_document_over_rest_grpc_and_analyze(svc, model_cache):
    options = {"sample_fps": 2, "max_frames": 20}
    job_id = svc.submit_rest(SAMPLE, pipeline_id="yolo_ocr", **options)
    assert svc.wait_for(job_id)["status"] == "COMPLETED"
    rest = svc.http.get(f"/video/results/{job_id}").json()
    jsonschema.validate(rest, svc.http.get("/video/schemas/results.json").json())
    assert len(rest["results"]) == rest["total_size"] == 20 and rest["tracks"]
    assert any(d["class_name"] == "bottle" for f in rest["results"] for d in f["result"]["detections"])

    grpc_doc = grpc_document(svc, job_id)
    assert grpc_doc["status"] == "JOB_STATUS_COMPLETED" and grpc_doc["job_id"] == job_id
    for key in ("results", "tracks", "video", "sampling", "provenance", "pipeline_id", "schema_version"):
        assert grpc_doc[key] == without_nulls(rest[key]), key

    env = {**os.environ, "VIDEOJOBS_MODEL": str(MODEL), "VIDEOJOBS_MODEL_CACHE_DIR": str(model_cache)}
    run = subprocess.run([sys.executable, "-m", "videojobs.cli", "analyze", str(SAMPLE), "--sample-fps", "2",
                          "--max-frames", "20"], capture_output=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    analyzed = json.loads(run.stdout)
    assert analyzed == {k: v for k, v in rest.items() if k not in PAGING}
    # The stored object is that document too, byte for byte what analyze printed.
    stored = (svc.data_dir / "storage" / "results" / f"{job_id}.json").read_bytes()
    assert stored + b"\n" == run.stdout


def assert_problem(r: httpx.Response, status: int, slug: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["type"] == f"/problems/{slug}" and body["status"] == status and body["title"] and body["detail"]
    documented = httpx.get(f"{r.request.url.scheme}://{r.request.url.netloc.decode()}{body['type']}").json()
    assert documented["status"] == status
    return body


def multipart(svc: Service, data: bytes, **fields) -> httpx.Response:
    return svc.http.post("/video/submit", files={"file": ("clip.mp4", data, "video/mp4")},
                         data={k: str(v) for k, v in fields.items()})


def test_every_rest_error_class_is_problem_json(svc):
    sample = SAMPLE.read_bytes()
    assert_problem(svc.http.get("/video/status/not-a-job-id"), 400, "invalid-job-id")
    assert_problem(svc.http.get("/video/status/0b9f8a52-3f1e-4d5c-9a7b-1c2d3e4f5a6b"), 404, "job-not-found")
    assert_problem(svc.http.get("/video/no-such-route"), 404, "not-found")
    assert_problem(svc.http.put("/video/status/0b9f8a52-3f1e-4d5c-9a7b-1c2d3e4f5a6b"), 405, "method-not-allowed")
    pending = svc.submit_rest(SAMPLE, pipeline_id="yolo", sample_fps=0, max_frames=90)  # unfinished for a while
    body = assert_problem(svc.http.get(f"/video/results/{pending}"), 409, "results-not-ready")
    assert body["job_status"] in ("PENDING", "RUNNING")
    assert_problem(multipart(svc, b"\x00\x00\x00\x18ftypisom" + b"\x00" * (MAX_UPLOAD + 1024)), 413,
                   "upload-too-large")
    assert_problem(multipart(svc, b"GIF89a" + b"\x00" * 100), 415, "unsupported-media-type")
    body = assert_problem(multipart(svc, sample, sample_fps="-1"), 422, "invalid-options")
    assert body["invalid_params"][0]["name"] == "sample_fps"
    body = assert_problem(multipart(svc, sample, classes="bottle,notaclass"), 422, "unknown-class")
    assert "notaclass" in body["detail"] and "bottle" in body["valid_choices"] and len(body["valid_choices"]) == 80
    body = assert_problem(multipart(svc, sample, ocr_lang="xyz"), 422, "unknown-language")
    assert "eng" in body["valid_choices"]
    assert_problem(svc.http.get(f"/video/results/{pending}", params={"page_size": "many"}), 422, "invalid-request")


@pytest.mark.parametrize("options, field", [
    ({"sample_fps": -1.0}, "sample_fps"),
    ({"min_confidence": 7.0}, "min_confidence"),
    ({"imgsz": 33}, "imgsz"),
    ({"classes": ["notaclass"]}, "classes"),
    ({"ocr_lang": "xyz"}, "ocr_lang"),
])
def test_grpc_rejects_the_same_bad_options_with_field_violations(svc, options, field):
    def messages():
        yield jobs_pb2.SubmitRequest(spec=jobs_pb2.JobSpec(pipeline_id="yolo_ocr",
                                                           options=jobs_pb2.AnalysisOptions(**options)))
        yield jobs_pb2.SubmitRequest(chunk=SAMPLE.read_bytes())

    with pytest.raises(grpc.RpcError) as err:
        svc.stub.Submit(messages())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(err.value)
    violations = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = [v.field for v in bad.field_violations]
    assert violations == [field]


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    return container_variants(SAMPLE, tmp_path_factory.mktemp("containers"))


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv", ".webm", ".avi"])
def test_each_accepted_container_completes(svc, variants, suffix):
    job_id = svc.submit_rest(variants[suffix], pipeline_id="yolo", sample_fps=1, max_frames=3)
    status = svc.wait_for(job_id, timeout=120)
    assert status["status"] == "COMPLETED", status
    body = svc.http.get(f"/video/results/{job_id}").json()
    assert len(body["results"]) == 3 and body["video"]["width"] == 640
    assert any(d["class_name"] == "bottle" for d in body["results"][0]["result"]["detections"])
    expected = {".mp4": "iso-bmff", ".mov": "iso-bmff", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}[suffix]
    assert body["video"]["container"] == expected


@pytest.mark.parametrize("make", [gif_file, wav_file, lambda p: zip_file(p, SAMPLE)], ids=["gif", "wav", "zip"])
def test_other_files_are_415(svc, tmp_path, make):
    path = make(tmp_path / "upload.bin")
    r = svc.http.post("/video/submit", files={"file": ("video.mp4", path.read_bytes(), "video/mp4")})
    body = assert_problem(r, 415, "unsupported-media-type")
    assert "MP4, MOV or M4V (ISO-BMFF), Matroska (MKV), WebM or AVI" in body["detail"]


@pytest.mark.parametrize("command, taken", [("serve", "both"), ("api", "grpc"), ("gateway", "http")])
def test_a_second_server_on_taken_ports_exits_at_once(svc, command, taken):
    env = {**svc.env, "VIDEOJOBS_DATA_DIR": str(svc.data_dir / f"second-{command}")}
    if taken == "grpc":
        env["VIDEOJOBS_HTTP_PORT"] = "0"
    if taken == "http":
        env["VIDEOJOBS_GRPC_PORT"] = "0"
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "videojobs.cli", command], env=env, capture_output=True,
                         timeout=30, cwd=svc.data_dir)
    elapsed = time.monotonic() - started
    assert run.returncode != 0 and elapsed < 5, (run.returncode, elapsed)
    stderr = run.stderr.decode()
    assert "cannot listen" in stderr and "already in use" in stderr.lower(), stderr[-2000:]
    assert "serving" not in stderr.lower() and "gateway on" not in stderr
    # the first service is untouched
    assert svc.http.get("/readyz").status_code == 200


def test_a_normal_run_is_quiet(svc):
    """After the jobs above (OCR, detection, every container): no third-party chatter in the service's output."""
    output = svc.log.read_text(errors="replace")
    assert "COMPLETED" in output or "submitted" in output  # the log is the service's
    for noise in ("boxClipToRectangle", "pixScanForForeground", "Other threads are currently calling into gRPC",
                  "for OpenVINO inference", "Ultralytics", "[ WARN:"):
        assert noise not in output, noise
