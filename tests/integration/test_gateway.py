"""The REST gateway in front of a real gRPC JobService (embedded adapters, fake analyzer)."""

import time

import pytest
from fastapi.testclient import TestClient

from tests.integration.conftest import MAX_UPLOAD, SAMPLE
from videojobs.gateway.app import create_app

MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"


@pytest.fixture
def client(api):
    app = create_app(f"127.0.0.1:{api.port}", max_upload_bytes=MAX_UPLOAD, chunk_bytes=64 * 1024)
    with TestClient(app) as c:
        yield c


def submit(client, data: bytes, filename="clip.mp4", **fields):
    return client.post("/video/submit", files={"file": (filename, data, "video/mp4")},
                       data={k: str(v) for k, v in fields.items()})


def test_submit_poll_results(client, fake_worker, api):
    r = submit(client, SAMPLE.read_bytes(), pipeline_id="yolo", sample_fps=2, classes="bottle,person")
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert list(r.json()) == ["job_id"]
    assert api.repo.get(job_id).options["sample_fps"] == 2.0
    deadline = time.time() + 20
    while True:
        status = client.get(f"/video/status/{job_id}").json()
        if status["status"] == "COMPLETED":
            break
        assert status["status"] in ("PENDING", "RUNNING") and time.time() < deadline
        time.sleep(0.05)
    assert status["progress"] == 1.0 and status["job_id"] == job_id
    body = client.get(f"/video/results/{job_id}").json()
    assert body["job_id"] == job_id and isinstance(body["results"], list)
    assert [f["frame_index"] for f in body["results"]] == [0, 30, 60, 90, 120]
    assert body["results"][0]["result"] == {"detections": [], "text": "", "ocr": []}
    page = client.get(f"/video/results/{job_id}", params={"page_size": 2}).json()
    assert len(page["results"]) == 2 and page["next_page_token"]
    nxt = client.get(f"/video/results/{job_id}", params={"page_size": 2, "page_token": page["next_page_token"]}).json()
    assert [f["frame_index"] for f in nxt["results"]] == [60, 90]


def test_upload_is_checked_by_content_not_extension(client, api):
    r = submit(client, b"GIF89a" + b"\x00" * 500, filename="looks-like.mp4")
    assert r.status_code == 415 and "not an MP4" in r.json()["detail"]
    r = submit(client, SAMPLE.read_bytes(), filename="renamed.gif")
    assert r.status_code == 202


@pytest.mark.parametrize("make_request, status, text", [
    (lambda c: submit(c, b""), 400, "empty"),
    (lambda c: submit(c, MP4_HEAD + b"\x00" * (MAX_UPLOAD + 10)), 413, "exceeds the limit"),
    (lambda c: c.post("/video/submit", data={"pipeline_id": "yolo"}, files={"other": ("a", b"x")}), 400, "no 'file'"),
    (lambda c: c.post("/video/submit", json={"file": "x"}), 415, "multipart"),
    (lambda c: submit(c, SAMPLE.read_bytes(), sample_fps="fast"), 422, "numbers"),
    (lambda c: submit(c, SAMPLE.read_bytes(), max_frames=-2), 422, "max_frames"),
    (lambda c: submit(c, SAMPLE.read_bytes(), pipeline_id="nope"), 422, "unknown pipeline_id"),
    (lambda c: submit(c, SAMPLE.read_bytes(), colour="red"), 422, "unknown form field"),
])
def test_bad_submissions_get_precise_4xx_and_keep_nothing(client, api, make_request, status, text):
    r = make_request(client)
    assert r.status_code == status, r.text
    assert text in r.json()["detail"]
    assert api.repo.unfinished_job_ids() == []
    assert [p for p in api.storage.root.rglob("*") if p.is_file()] == []


def test_unknown_malformed_and_unfinished_ids(client):
    r = client.get("/video/status/0b9f8a52-3f1e-4d5c-9a7b-1c2d3e4f5a6b")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    for path in ("/video/status/12345", "/video/results/not-a-uuid", "/video/status/%20"):
        r = client.get(path)
        assert r.status_code == 400 and "malformed job id" in r.json()["detail"], path
    job_id = submit(client, SAMPLE.read_bytes()).json()["job_id"]
    r = client.get(f"/video/results/{job_id}")
    assert r.status_code == 409 and "status is PENDING" in r.json()["detail"]


def test_openapi_and_probes(client):
    doc = client.get("/openapi.json").json()
    assert {"/video/submit", "/video/status/{job_id}", "/video/results/{job_id}"} <= set(doc["paths"])
    assert "multipart/form-data" in doc["paths"]["/video/submit"]["post"]["requestBody"]["content"]
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_readyz_is_503_when_the_api_is_unreachable():
    app = create_app("127.0.0.1:1", max_upload_bytes=MAX_UPLOAD)
    with TestClient(app) as c:
        assert c.get("/readyz").status_code == 503
        r = c.get("/video/status/0b9f8a52-3f1e-4d5c-9a7b-1c2d3e4f5a6b")
        assert r.status_code == 503


def _streamed_upload(size_mb: int, boundary: str = "vjboundary"):
    yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.mp4\"\r\n"
           "Content-Type: video/mp4\r\n\r\n").encode() + MP4_HEAD
    block = b"\x00" * (1024 * 1024)
    for _ in range(size_mb):
        yield block
    yield f"\r\n--{boundary}--\r\n".encode()


def test_upload_memory_does_not_grow_with_file_size(tmp_path):
    """The gateway spools the file part to disk and forwards it in chunks; the api stores it in chunks.

    Real HTTP (uvicorn in a thread, a streaming httpx client): the test client would buffer the body itself.
    """
    import socket
    import threading
    import tracemalloc

    import httpx
    import uvicorn

    from videojobs.api.bootstrap import build_api
    from videojobs.common.config import Settings

    limit = 512 * 1024 * 1024
    api = build_api(Settings(data_dir=tmp_path, grpc_port=0, max_upload_bytes=limit))
    api.start()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(f"127.0.0.1:{api.port}", max_upload_bytes=limit),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    peaks = {}
    try:
        while not server.started:
            time.sleep(0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            for size_mb in (8, 96):
                tracemalloc.start()
                r = client.post("/video/submit", content=_streamed_upload(size_mb),
                                headers={"content-type": "multipart/form-data; boundary=vjboundary"})
                peaks[size_mb] = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
                assert r.status_code == 202, r.text
                stored = api.storage.root / "inputs" / f"{r.json()['job_id']}.mp4"
                assert stored.stat().st_size == size_mb * 1024 * 1024 + len(MP4_HEAD)
    finally:
        server.should_exit = True
        thread.join(10)
        api.stop(grace=0)
    # 12x the bytes, about the same peak: nothing holds the whole upload.
    assert peaks[96] < peaks[8] + 8 * 1024 * 1024, peaks
    assert peaks[96] < 32 * 1024 * 1024, peaks
