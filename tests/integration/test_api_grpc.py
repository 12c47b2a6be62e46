"""The gRPC JobService on embedded adapters (SQLite, local folder, in-process queue)."""

import hashlib
import json
import time

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from tests.integration.conftest import MAX_UPLOAD, SAMPLE, start_fake_worker
from videojobs.api.bootstrap import build_api
from videojobs.common.config import Settings
from videojobs.common import wire
from videojobs.common.job import JobStatus
from videojobs.common.resources import JobResource, Standing
from videojobs.v1 import jobs_pb2, jobs_pb2_grpc

MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"


def upload(stub, data: bytes, pipeline_id="yolo_ocr", chunk=64 * 1024, **options):
    def messages():
        yield jobs_pb2.SubmitRequest(spec=jobs_pb2.JobSpec(pipeline_id=pipeline_id,
                                                           options=jobs_pb2.AnalysisOptions(**options)))
        for i in range(0, len(data), chunk):
            yield jobs_pb2.SubmitRequest(chunk=data[i:i + chunk])
    return stub.Submit(messages())


def rich_error(err: grpc.RpcError):
    """(ErrorInfo, [field violations]) of a failed call."""
    status = rpc_status.from_call(err)
    assert status is not None, f"no google.rpc.Status on {err.code()} {err.details()}"
    info, violations = None, []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations = [(v.field, v.description) for v in bad.field_violations]
    assert info is not None and info.domain == "videojobs"
    return info, violations


def stored_inputs(api):
    folder = api.storage.root / "inputs"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_submit_stores_input_and_creates_pending_job(api, stub):
    data = SAMPLE.read_bytes()
    reply = upload(stub, data, max_frames=3, classes=["bottle"])
    job = api.repo.get(reply.job_id)
    assert reply.status == jobs_pb2.JOB_STATUS_PENDING and job.status is JobStatus.PENDING
    assert job.options.max_frames == 3 and job.options.classes == ("bottle",)
    assert job.options.sample_fps == 1.0  # unset fields take the defaults
    assert api.storage.read_bytes(job.input_key) == data and job.input_key.endswith(".mp4")
    reply_job = stub.GetStatus(jobs_pb2.GetStatusRequest(job_id=reply.job_id)).job
    assert reply_job.status == jobs_pb2.JOB_STATUS_PENDING and reply_job.progress == 0.0
    assert wire.job_from_pb(reply_job) == JobResource.from_job(job, Standing(queue_position=0))
    assert reply_job.input_sha256 == hashlib.sha256(data).hexdigest() and not reply_job.HasField("expires_at")


@pytest.mark.parametrize("data, code, reason", [
    (b"", grpc.StatusCode.INVALID_ARGUMENT, "INVALID_UPLOAD"),
    (b"This is a text file, not a video." * 10, grpc.StatusCode.INVALID_ARGUMENT, "UNSUPPORTED_MEDIA_TYPE"),
    (MP4_HEAD + b"\x00" * (MAX_UPLOAD + 1), grpc.StatusCode.RESOURCE_EXHAUSTED, "UPLOAD_TOO_LARGE"),
])
def test_bad_uploads_are_rejected_and_leave_nothing(api, stub, data, code, reason):
    with pytest.raises(grpc.RpcError) as err:
        upload(stub, data)
    assert err.value.code() == code
    assert rich_error(err.value)[0].reason == reason
    assert stored_inputs(api) == [] and api.repo.unfinished_job_ids() == []
    leftovers = [p for p in api.storage.root.rglob("*") if p.is_file()]
    assert leftovers == []


@pytest.mark.parametrize("pipeline_id, options, field", [
    ("sam2", {}, "pipeline_id"),
    ("yolo", {"sample_fps": -1.0}, "sample_fps"),
    ("yolo", {"sample_fps": 1e-320}, "sample_fps"),
    ("yolo", {"min_confidence": 2.0}, "min_confidence"),
    ("yolo", {"imgsz": 100}, "imgsz"),
    ("yolo", {"ocr_lang": "x;y"}, "ocr_lang"),
])
def test_invalid_spec_is_invalid_argument_with_field_violations(api, stub, pipeline_id, options, field):
    with pytest.raises(grpc.RpcError) as err:
        upload(stub, SAMPLE.read_bytes(), pipeline_id=pipeline_id, **options)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, violations = rich_error(err.value)
    assert info.reason == "INVALID_OPTIONS" and [f for f, _ in violations] == [field]
    assert stored_inputs(api) == []


def test_unknown_class_and_language_are_refused_once_a_worker_published(api, stub, fake_worker):
    deadline = time.time() + 10
    while api.jobs.capabilities().detector is None:  # the fake worker publishes at start
        assert time.time() < deadline
        time.sleep(0.05)
    for options, reason, field, unknown, valid in (
        ({"classes": ["bottle", "unicorn"]}, "UNKNOWN_CLASS", "classes", "unicorn", "bottle"),
        ({"ocr_lang": "klingon"}, "UNKNOWN_LANGUAGE", "ocr_lang", "klingon", "eng"),
    ):
        with pytest.raises(grpc.RpcError) as err:
            upload(stub, SAMPLE.read_bytes(), **options)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and unknown in err.value.details()
        info, violations = rich_error(err.value)
        assert info.reason == reason and violations[0][0] == field
        assert valid in json.loads(info.metadata["valid_choices"])
    assert stored_inputs(api) == []
    # A class the worker knows is accepted.
    assert upload(stub, SAMPLE.read_bytes(), classes=["bottle"]).job_id


def test_an_unknown_class_is_accepted_while_no_worker_has_published(api, stub):
    assert api.jobs.capabilities().detector is None
    assert upload(stub, SAMPLE.read_bytes(), classes=["unicorn"]).job_id


def test_stream_must_start_with_spec(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.Submit(iter([jobs_pb2.SubmitRequest(chunk=MP4_HEAD)]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "first Submit message" in err.value.details()
    assert rich_error(err.value)[0].reason == "BAD_REQUEST"


def test_unknown_and_malformed_ids(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.GetStatus(jobs_pb2.GetStatusRequest(job_id="0b9f8a52-3f1e-4d5c-9a7b-1c2d3e4f5a6b"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and rich_error(err.value)[0].reason == "JOB_NOT_FOUND"
    for rpc, req in ((stub.GetStatus, jobs_pb2.GetStatusRequest), (stub.GetResults, jobs_pb2.GetResultsRequest)):
        for bad in ("not-a-uuid", "x" * 10_000):
            with pytest.raises(grpc.RpcError) as err:
                rpc(req(job_id=bad))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert rich_error(err.value)[0].reason == "INVALID_JOB_ID" and len(err.value.details()) < 200


def test_results_of_unfinished_and_failed_jobs(api, stub):
    job_id = upload(stub, SAMPLE.read_bytes()).job_id
    with pytest.raises(grpc.RpcError) as err:
        stub.GetResults(jobs_pb2.GetResultsRequest(job_id=job_id))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "PENDING" in err.value.details()
    info, _ = rich_error(err.value)
    assert info.reason == "RESULTS_NOT_READY" and info.metadata["job_status"] == '"PENDING"'
    job = api.repo.get(job_id)
    job.give_up("corrupt video: no frames")
    api.repo.save(job, JobStatus.PENDING, 0)
    with pytest.raises(grpc.RpcError) as err:
        stub.GetResults(jobs_pb2.GetResultsRequest(job_id=job_id))
    assert "FAILED" in err.value.details() and "no frames" in err.value.details()


def test_completed_job_results_are_paged(api, stub, fake_worker):
    job_id = upload(stub, SAMPLE.read_bytes()).job_id
    deadline = time.time() + 20
    while stub.GetStatus(jobs_pb2.GetStatusRequest(job_id=job_id)).job.status != jobs_pb2.JOB_STATUS_COMPLETED:
        assert time.time() < deadline
        time.sleep(0.05)
    frames, token, pages = [], "", 0
    while True:
        page = stub.GetResults(jobs_pb2.GetResultsRequest(job_id=job_id, page_size=2, page_token=token))
        frames += [f.frame_index for f in page.results]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert frames == [0, 30, 60, 90, 120] and pages == 3 and page.total_size == 5
    assert page.video.width == 64 and page.status == jobs_pb2.JOB_STATUS_COMPLETED and page.schema_version == 2
    job = stub.GetStatus(jobs_pb2.GetStatusRequest(job_id=job_id)).job
    assert job.progress == 1.0 and job.frames_done == job.frames_total == 5
    with pytest.raises(grpc.RpcError) as err:
        stub.GetResults(jobs_pb2.GetResultsRequest(job_id=job_id, page_token="garbage"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and rich_error(err.value)[1][0][0] == "page_token"


def test_a_document_longer_than_a_quarter_of_the_cache_is_read_from_storage_a_page_at_a_time(tmp_path):
    from videojobs.common.results import IndexedResults

    settings = Settings(data_dir=tmp_path, grpc_port=0, max_upload_bytes=MAX_UPLOAD, results_cache_bytes=2048)
    app = build_api(settings)  # documents over 512 bytes: their index is kept, their frames read when asked for
    app.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{app.port}")
    stub, worker = jobs_pb2_grpc.JobServiceStub(channel), None
    try:
        worker, thread = start_fake_worker(app)
        job_id = upload(stub, SAMPLE.read_bytes()).job_id
        deadline = time.time() + 20
        while stub.GetStatus(jobs_pb2.GetStatusRequest(job_id=job_id)).job.status != jobs_pb2.JOB_STATUS_COMPLETED:
            assert time.time() < deadline
            time.sleep(0.05)
        stored = app.storage.read_bytes(app.repo.get(job_id).output_key)
        assert len(stored) > 512
        ranges, opened = [], []
        read_range, open_stored = app.storage.read_range, app.storage.open_stored
        app.storage.read_range = lambda key, start, end: ranges.append((start, end)) or read_range(key, start, end)
        app.storage.open_stored = lambda key: opened.append(key) or open_stored(key)  # read as it comes, not copied
        pages, token = [], ""
        while True:
            page = stub.GetResults(jobs_pb2.GetResultsRequest(job_id=job_id, page_size=2, page_token=token))
            pages.append(page)
            token = page.next_page_token
            if not token:
                break
        whole = IndexedResults.from_bytes(stored)
        assert [wire.results_page_from_pb(p) for p in pages] == [whole.page(0, 2), whole.page(2, 4), whole.page(4, 5)]
        assert len(ranges) == 3 and all(stored[a:a + 1] == b"{" and stored[b - 1:b] == b"}" for a, b in ranges)
        assert opened == [app.repo.get(job_id).output_key]  # indexed once, from one read of the object
        # the object gone while its index is kept: the service's fault, said without its storage key
        app.storage.delete_file(app.repo.get(job_id).output_key)
        with pytest.raises(grpc.RpcError) as err:
            stub.GetResults(jobs_pb2.GetResultsRequest(job_id=job_id, page_size=2))
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert "missing from storage" in err.value.details() and "results/" not in err.value.details()
    finally:
        if worker is not None:
            worker.request_stop()
            thread.join(10)
        channel.close()
        app.stop(grace=0)


def test_capabilities(api, stub):
    caps = wire.capabilities_from_pb(stub.GetCapabilities(jobs_pb2.GetCapabilitiesRequest()))
    assert [p.pipeline_id for p in caps.pipelines] == ["yolo_ocr", "yolo", "ocr"]
    assert caps.limits.max_upload_bytes == MAX_UPLOAD and caps.limits.imgsz_multiple == 32
    assert (caps.limits.frame_side_min, caps.limits.frame_side_max, caps.limits.frame_pixels_max) == (16, 8192, 8192 * 4320)
    assert caps.limits.reference_bytes_max == 255 * 2**20
    assert {f.format_id for f in caps.formats} == {"iso-bmff", "matroska", "webm", "avi"}
    assert caps.detector is None and caps.ocr_languages == []  # no worker has published


def test_submit_from_storage(api, stub):
    api.storage.save_bytes(SAMPLE.read_bytes(), "uploads/default/cam1.mp4")
    spec = jobs_pb2.JobSpec(pipeline_id="yolo")
    reply = stub.SubmitFromStorage(jobs_pb2.SubmitFromStorageRequest(spec=spec, input_key="uploads/default/cam1.mp4"))
    assert api.repo.get(reply.job_id).input_key == "uploads/default/cam1.mp4"
    with pytest.raises(grpc.RpcError) as err:
        stub.SubmitFromStorage(jobs_pb2.SubmitFromStorageRequest(spec=spec, input_key="uploads/default/missing.mp4"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and rich_error(err.value)[0].reason == "INPUT_NOT_FOUND"
    # the service's own objects (another tenant's upload, say) cannot be named
    for key in ("../../etc/passwd", ".", "a\x00b", "k" * 10_000, "/abs/path", "a//b", "inputs/x.mp4", "results/y.json"):
        with pytest.raises(grpc.RpcError) as err:
            stub.SubmitFromStorage(jobs_pb2.SubmitFromStorageRequest(spec=spec, input_key=key))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, key
        assert rich_error(err.value)[1][0][0] == "input_key"


def test_health_reflects_readiness_and_reflection_lists_the_service(api):
    channel = grpc.insecure_channel(f"127.0.0.1:{api.port}")
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "videojobs.v1.JobService"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == health_pb2.HealthCheckResponse.SERVING
    api.repo._engine.dispose()
    db = api.settings.data_dir / "videojobs.db"
    db.rename(db.with_suffix(".moved"))
    (api.settings.data_dir / "videojobs.db").mkdir()  # the database file is gone and cannot be recreated
    api.readiness.check_now()
    assert health.Check(health_pb2.HealthCheckRequest(service="")).status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert "database" in api.readiness.failures
    # not ready, but alive: Kubernetes must not restart the pod for a database outage
    assert health.Check(health_pb2.HealthCheckRequest(service="liveness")).status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    reply = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in reply.list_services_response.service}
    assert "videojobs.v1.JobService" in names and "grpc.health.v1.Health" in names
    channel.close()
