"""The gRPC JobService on embedded adapters (SQLite, local folder, in-process queue)."""

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.integration.conftest import MAX_UPLOAD, SAMPLE
from videojobs.common.job import JobStatus
from videojobs.v1 import jobs_pb2

MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"


def upload(stub, data: bytes, pipeline_id="yolo_ocr", chunk=64 * 1024, **options):
    def messages():
        yield jobs_pb2.SubmitRequest(spec=jobs_pb2.JobSpec(pipeline_id=pipeline_id,
                                                           options=jobs_pb2.AnalysisOptions(**options)))
        for i in range(0, len(data), chunk):
            yield jobs_pb2.SubmitRequest(chunk=data[i:i + chunk])
    return stub.Submit(messages())


def stored_inputs(api):
    folder = api.storage.root / "inputs"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_submit_stores_input_and_creates_pending_job(api, stub):
    data = SAMPLE.read_bytes()
    reply = upload(stub, data, max_frames=3, classes=["bottle"])
    job = api.repo.get(reply.job_id)
    assert reply.status == jobs_pb2.JOB_STATUS_PENDING and job.status is JobStatus.PENDING
    assert job.options["max_frames"] == 3 and job.options["classes"] == ["bottle"]
    assert api.storage.read_bytes(job.input_key) == data
    status = stub.GetStatus(jobs_pb2.GetStatusRequest(job_id=reply.job_id))
    assert status.status == jobs_pb2.JOB_STATUS_PENDING and status.progress == 0.0


@pytest.mark.parametrize("data, code, text", [
    (b"", grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    (b"This is a text file, not a video." * 10, grpc.StatusCode.INVALID_ARGUMENT, "not an MP4"),
    (MP4_HEAD + b"\x00" * (MAX_UPLOAD + 1), grpc.StatusCode.RESOURCE_EXHAUSTED, "exceeds the limit"),
])
def test_bad_uploads_are_rejected_and_leave_nothing(api, stub, data, code, text):
    with pytest.raises(grpc.RpcError) as err:
        upload(stub, data)
    assert err.value.code() == code and text in err.value.details()
    assert stored_inputs(api) == [] and api.repo.unfinished_job_ids() == []
    leftovers = [p for p in api.storage.root.rglob("*") if p.is_file()]
    assert leftovers == []


@pytest.mark.parametrize("pipeline_id, options, text", [
    ("sam2", {}, "unknown pipeline_id"),
    ("yolo", {"sample_fps": -1.0}, "sample_fps"),
    ("yolo", {"min_confidence": 2.0}, "min_confidence"),
    ("yolo", {"imgsz": 100}, "imgsz"),
])
def test_invalid_spec_is_rejected(api, stub, pipeline_id, options, text):
    with pytest.raises(grpc.RpcError) as err:
        upload(stub, SAMPLE.read_bytes(), pipeline_id=pipeline_id, **options)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and text in err.value.details()
    assert stored_inputs(api) == []


def test_stream_must_start_with_spec(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.Submit(iter([jobs_pb2.SubmitRequest(chunk=MP4_HEAD)]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "first Submit message" in err.value.details()


def test_unknown_and_malformed_ids(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.GetStatus(jobs_pb2.GetStatusRequest(job_id="0b9f8a52-3f1e-4d5c-9a7b-1c2d3e4f5a6b"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "not found" in err.value.details()
    for rpc in (stub.GetStatus, stub.GetResults):
        req = jobs_pb2.GetStatusRequest if rpc is stub.GetStatus else jobs_pb2.GetResultsRequest
        with pytest.raises(grpc.RpcError) as err:
            rpc(req(job_id="not-a-uuid"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "malformed job id" in err.value.details()


def test_results_of_unfinished_and_failed_jobs(api, stub):
    job_id = upload(stub, SAMPLE.read_bytes()).job_id
    with pytest.raises(grpc.RpcError) as err:
        stub.GetResults(jobs_pb2.GetResultsRequest(job_id=job_id))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "PENDING" in err.value.details()
    job = api.repo.get(job_id)
    job.give_up("corrupt video: no frames")
    api.repo.save(job, JobStatus.PENDING, 0)
    with pytest.raises(grpc.RpcError) as err:
        stub.GetResults(jobs_pb2.GetResultsRequest(job_id=job_id))
    assert "FAILED" in err.value.details() and "no frames" in err.value.details()


def test_completed_job_results_are_paged(api, stub, fake_worker):
    job_id = upload(stub, SAMPLE.read_bytes()).job_id
    deadline = time.time() + 20
    while stub.GetStatus(jobs_pb2.GetStatusRequest(job_id=job_id)).status != jobs_pb2.JOB_STATUS_COMPLETED:
        assert time.time() < deadline
        time.sleep(0.05)
    frames, token, pages = [], "", 0
    while True:
        page = stub.GetResults(jobs_pb2.GetResultsRequest(job_id=job_id, page_size=2, page_token=token))
        frames += [f.frame_index for f in page.frames]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert frames == [0, 30, 60, 90, 120] and pages == 3 and page.total_frames == 5
    assert page.video.width == 64 and page.status == jobs_pb2.JOB_STATUS_COMPLETED
    status = stub.GetStatus(jobs_pb2.GetStatusRequest(job_id=job_id))
    assert status.progress == 1.0 and status.frames_done == status.frames_total == 5


def test_submit_from_storage(api, stub):
    api.storage.save_bytes(SAMPLE.read_bytes(), "uploads/cam1.mp4")
    spec = jobs_pb2.JobSpec(pipeline_id="yolo")
    reply = stub.SubmitFromStorage(jobs_pb2.SubmitFromStorageRequest(spec=spec, input_key="uploads/cam1.mp4"))
    assert api.repo.get(reply.job_id).input_key == "uploads/cam1.mp4"
    with pytest.raises(grpc.RpcError) as err:
        stub.SubmitFromStorage(jobs_pb2.SubmitFromStorageRequest(spec=spec, input_key="uploads/missing.mp4"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        stub.SubmitFromStorage(jobs_pb2.SubmitFromStorageRequest(spec=spec, input_key="../../etc/passwd"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


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
