"""The viewer page, frame images and contact sheets through the gateway, in front of a real gRPC api."""

import io
import re
import time

import grpc
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.integration.conftest import MAX_UPLOAD, SAMPLE
from tests.integration.test_gateway import assert_problem
from videojobs.common.frames import frame_image_key
from videojobs.common.config import Settings
from videojobs.gateway.app import create_app
from videojobs.gateway.viewer import CONTENT_SECURITY_POLICY
from videojobs.v1 import jobs_pb2, jobs_pb2_grpc


@pytest.fixture
def client(api):
    app = create_app(Settings(max_upload_bytes=MAX_UPLOAD, upload_chunk_bytes=64 * 1024), f"127.0.0.1:{api.port}")
    with TestClient(app) as c:
        yield c


def submit(client, **fields) -> str:
    r = client.post("/video/submit", files={"file": ("clip.mp4", SAMPLE.read_bytes(), "video/mp4")},
                    data={k: str(v) for k, v in fields.items()})
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def completed_job(client) -> tuple[str, dict]:
    job_id = submit(client)
    deadline = time.time() + 20
    while client.get(f"/video/status/{job_id}").json()["status"] != "COMPLETED":
        assert time.time() < deadline
        time.sleep(0.05)
    return job_id, client.get(f"/video/results/{job_id}").json()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def outline(box: dict) -> list[tuple[int, int]]:
    """Pixel positions (row, col) on the outline of a box in pixels."""
    x1, y1, x2, y2 = (round(box[k]) for k in ("x1", "y1", "x2", "y2"))
    points = [(y1, x) for x in range(x1, x2)] + [(y2, x) for x in range(x1, x2)]
    points += [(y, x1) for y in range(y1, y2)] + [(y, x2) for y in range(y1, y2)]
    return points


def test_frame_images_plain_and_annotated(client, api, imaging_worker):
    job_id, results = completed_job(client)
    frame = results["results"][2]
    index = frame["frame_index"]
    plain = client.get(f"/video/frames/{job_id}/{index}.jpg")
    assert plain.status_code == 200 and plain.headers["content-type"] == "image/jpeg"
    assert plain.content == api.storage.read_bytes(frame_image_key(job_id, index))  # what the worker kept
    assert "max-age" in plain.headers["cache-control"]
    annotated = client.get(f"/video/frames/{job_id}/{index}.jpg", params={"annotated": 1})
    assert annotated.status_code == 200 and annotated.headers["content-type"] == "image/jpeg"
    before, after = pixels(plain.content), pixels(annotated.content)
    assert before.shape == after.shape == (180, 320, 3)
    assert len(frame["result"]["detections"]) == 2
    for det in frame["result"]["detections"]:
        ring = outline(det["box"])
        # JPEG blurs a 2-pixel line over its neighbours: look one pixel either side.
        changed = sum(int(np.abs(after[r - 1:r + 2, c - 1:c + 2] - before[r - 1:r + 2, c - 1:c + 2]).max() > 60)
                      for r, c in ring)
        assert changed > 0.9 * len(ring), f"the {det['class_name']} box is not drawn ({changed}/{len(ring)})"
    # Far from every box (bottom-left corner under no box or label) nothing changed beyond JPEG noise.
    assert np.abs(after[165:, :30] - before[165:, :30]).mean() < 6


def test_frame_and_sheet_errors_are_problems(client, api, imaging_worker):
    job_id, results = completed_job(client)
    analysed = {f["frame_index"] for f in results["results"]}
    missing = next(i for i in range(1000) if i not in analysed)
    assert_problem(client.get(f"/video/frames/{job_id}/{missing}.jpg"), 404, "frame-not-found")
    assert_problem(client.get(f"/video/frames/{job_id}/-1.jpg"), 422, "invalid-request")
    assert_problem(client.get(f"/video/frames/{job_id}/x.jpg"), 422, "invalid-request")
    unknown = "00000000-0000-4000-8000-000000000000"
    assert_problem(client.get(f"/video/frames/{unknown}/0.jpg"), 404, "job-not-found")
    assert_problem(client.get("/video/frames/not-a-uuid/0.jpg"), 400, "invalid-job-id")
    assert_problem(client.get(f"/video/sheet/{unknown}.png"), 404, "job-not-found")
    body = assert_problem(client.get(f"/video/sheet/{job_id}.png", params={"columns": 99}), 422, "invalid-request")
    assert body["invalid_params"][0]["name"] == "columns"
    # An image kept by no one (e.g. frame images switched off) is a 404 too, with no storage key in it.
    api.storage.delete_file(frame_image_key(job_id, results["results"][0]["frame_index"]))
    body = assert_problem(client.get(f"/video/frames/{job_id}/{results['results'][0]['frame_index']}.jpg"), 404,
                          "frame-not-found")
    assert "frames/" not in body["detail"] and ".jpg" not in body["detail"]


def test_unfinished_job_has_no_frames_yet(client, api):
    job_id = submit(client)  # no worker: stays PENDING
    body = assert_problem(client.get(f"/video/frames/{job_id}/0.jpg"), 409, "results-not-ready")
    assert body["job_status"] == "PENDING"


def test_contact_sheet(client, api, imaging_worker):
    job_id, results = completed_job(client)
    r = client.get(f"/video/sheet/{job_id}.png", params={"columns": 2, "tile_width": 160})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    sheet = Image.open(io.BytesIO(r.content))
    assert sheet.format == "PNG" and sheet.width == 2 * 160 + 3 * 6  # two tiles and their gaps
    assert sheet.height > 3 * 90  # five frames: three rows of 160x90 tiles
    channel = grpc.insecure_channel(f"127.0.0.1:{api.port}")
    reply = jobs_pb2_grpc.JobServiceStub(channel).GetContactSheet(
        jobs_pb2.GetContactSheetRequest(job_id=job_id, max_frames=3))
    channel.close()
    assert list(reply.frame_indices) == [0, 60, 120]  # spread from the first to the last
    with pytest.raises(grpc.RpcError) as err:
        jobs_pb2_grpc.JobServiceStub(grpc.insecure_channel(f"127.0.0.1:{api.port}")).GetContactSheet(
            jobs_pb2.GetContactSheetRequest(job_id=job_id, tile_width=5000))
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "tile_width" in err.value.details()


def test_viewer_page_is_self_contained(client, api, imaging_worker):
    job_id, _ = completed_job(client)
    r = client.get(f"/video/view/{job_id}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    html = r.text
    assert f'data-job-id="{job_id}"' in html and "{{" not in html
    # Everything it loads is relative to the gateway: no scheme, no host, no protocol-relative URL.
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert refs and all(ref.startswith("../") or ref.startswith("data:") for ref in refs), refs
    for ref in refs:
        if ref.startswith("../assets/"):
            asset = client.get(f"/video/view/{job_id}/{ref}".replace(f"view/{job_id}/../", ""))
            assert asset.status_code == 200 and asset.text
            assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", asset.text), ref
    assert_problem(client.get("/video/assets/secrets.txt"), 404, "not-found")
    assert_problem(client.get("/video/view/00000000-0000-4000-8000-000000000000"), 404, "job-not-found")
    assert_problem(client.get("/video/view/nope"), 400, "invalid-job-id")
