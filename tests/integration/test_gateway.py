"""The REST gateway in front of a real gRPC JobService (embedded adapters, fake analyzer)."""

import time

import jsonschema
import pytest
from fastapi.testclient import TestClient

from tests.conftest import load_script
from tests.integration.conftest import MAX_UPLOAD, SAMPLE
from videojobs.common import schemas
from videojobs.common.config import Settings
from videojobs.common.errors import PROBLEMS
from videojobs.gateway.app import create_app

MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
PROBLEM_JSON = "application/problem+json"


@pytest.fixture
def client(api):
    app = create_app(Settings(max_upload_bytes=MAX_UPLOAD, upload_chunk_bytes=64 * 1024), f"127.0.0.1:{api.port}")
    with TestClient(app) as c:
        yield c


def submit(client, data: bytes, filename="clip.mp4", **fields):
    return client.post("/video/submit", files={"file": (filename, data, "video/mp4")},
                       data={k: str(v) for k, v in fields.items()})


def assert_problem(r, status: int, slug: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM_JSON
    body = r.json()
    assert body["type"] == f"/problems/{slug}" and body["status"] == status
    assert body["title"] == PROBLEMS[slug].title and body["detail"]
    return body


def wait_completed(client, job_id):
    deadline = time.time() + 20
    while True:
        status = client.get(f"/video/status/{job_id}").json()
        if status["status"] == "COMPLETED":
            return status
        assert status["status"] in ("PENDING", "RUNNING") and time.time() < deadline
        time.sleep(0.05)


def test_submit_poll_results(client, fake_worker, api):
    r = submit(client, SAMPLE.read_bytes(), pipeline_id="yolo", sample_fps=2, classes="bottle,person")
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert list(r.json()) == ["job_id"] and r.headers["location"] == f"/video/status/{job_id}"
    assert api.repo.get(job_id).options.sample_fps == 2.0
    status = wait_completed(client, job_id)
    assert status["progress"] == 1.0 and status["job_id"] == job_id and status["options"]["classes"] == ["bottle",
                                                                                                          "person"]
    jsonschema.validate(status, schemas.SCHEMAS["job"].model_json_schema())
    body = client.get(f"/video/results/{job_id}").json()
    assert body["job_id"] == job_id and body["status"] == "COMPLETED" and isinstance(body["results"], list)
    assert [f["frame_index"] for f in body["results"]] == [0, 30, 60, 90, 120]
    assert body["results"][0]["result"] == {"detections": [], "text": "", "ocr": []}
    assert body["next_page_token"] == "" and body["total_size"] == 5
    jsonschema.validate(body, client.get("/video/schemas/results.json").json())
    page = client.get(f"/video/results/{job_id}", params={"page_size": 2}).json()
    assert len(page["results"]) == 2 and page["next_page_token"] and page["total_size"] == 5
    nxt = client.get(f"/video/results/{job_id}", params={"page_size": 2, "page_token": page["next_page_token"]}).json()
    assert [f["frame_index"] for f in nxt["results"]] == [60, 90]


def test_a_document_longer_than_a_page_is_sent_whole_a_page_at_a_time(client, imaging_worker):
    """2,500 frames: more than the 1,000 the api gives a page. Without page_size the answer is the whole
    document, streamed (chunked) rather than assembled in the gateway, equal to its pages put together."""
    imaging_worker._analyzer.frames = 2500
    job_id = submit(client, SAMPLE.read_bytes(), pipeline_id="yolo").json()["job_id"]
    wait_completed(client, job_id)
    whole = client.get(f"/video/results/{job_id}")
    assert whole.status_code == 200 and whole.headers["content-type"] == "application/json"
    assert "content-length" not in whole.headers  # streamed
    body = whole.json()
    jsonschema.validate(body, client.get("/video/schemas/results.json").json())
    assert body["total_size"] == len(body["results"]) == 2500 and body["next_page_token"] == ""
    pages, token = [], ""
    while True:
        page = client.get(f"/video/results/{job_id}", params={"page_size": 1000, "page_token": token}).json()
        pages.append(page)
        token = page["next_page_token"]
        if not token:
            break
    assert len(pages) == 3
    assert body["results"] == [frame for page in pages for frame in page["results"]]
    assert {k: v for k, v in body.items() if k != "results"} == {**{k: v for k, v in pages[-1].items()
                                                                   if k != "results"}}
    assert sum(len(f["result"]["detections"]) for f in body["results"]) == 2500 + 1250
    small = client.get(f"/video/results/{job_id}", params={"page_size": 5})  # one page: answered whole, as before
    assert small.headers["content-length"] == str(len(small.content))


def test_upload_is_checked_by_content_not_extension(client, api):
    body = assert_problem(submit(client, b"GIF89a" + b"\x00" * 500, filename="looks-like.mp4"), 415,
                          "unsupported-media-type")
    assert "MP4, MOV or M4V (ISO-BMFF), Matroska (MKV), WebM or AVI" in body["detail"]
    assert len(body["accepted_formats"]) == 4
    assert submit(client, SAMPLE.read_bytes(), filename="renamed.gif").status_code == 202


@pytest.mark.parametrize("make_request, status, slug, text", [
    (lambda c: submit(c, b""), 400, "invalid-upload", "empty"),
    (lambda c: submit(c, MP4_HEAD + b"\x00" * (MAX_UPLOAD + 10)), 413, "upload-too-large", "exceeds the limit"),
    (lambda c: c.post("/video/submit", data={"pipeline_id": "yolo"}, files={"other": ("a", b"x")}), 400,
     "invalid-upload", "no 'file'"),
    (lambda c: c.post("/video/submit", json={"file": "x"}), 415, "unsupported-media-type", "multipart"),
    (lambda c: submit(c, SAMPLE.read_bytes(), sample_fps="fast"), 422, "invalid-options", "sample_fps"),
    (lambda c: submit(c, SAMPLE.read_bytes(), max_frames=-2), 422, "invalid-options", "max_frames"),
    (lambda c: submit(c, SAMPLE.read_bytes(), max_frames=2**31), 422, "invalid-options", "max_frames"),
    (lambda c: submit(c, SAMPLE.read_bytes(), sample_fps="1e-320"), 422, "invalid-options", "sample_fps"),
    (lambda c: submit(c, SAMPLE.read_bytes(), pipeline_id="nope"), 422, "invalid-options", "unknown pipeline_id"),
    (lambda c: submit(c, SAMPLE.read_bytes(), colour="red"), 422, "invalid-options", "unknown form field"),
    (lambda c: c.post("/video/submit", content=b"--X\r\ngarbage\x00\xff" * 50,
                      headers={"content-type": "multipart/form-data; boundary=X"}), 400, "bad-request", "multipart"),
    (lambda c: c.post("/video/submit", content=b"x", headers={"content-type": "multipart/form-data; boundary="
                                                                               + "b" * 300}), 400, "bad-request",
     "boundary"),
])
def test_bad_submissions_get_problem_details_and_keep_nothing(client, api, make_request, status, slug, text):
    body = assert_problem(make_request(client), status, slug)
    assert text in body["detail"]
    if slug == "invalid-options":
        assert body["invalid_params"] and {"name", "reason"} == set(body["invalid_params"][0])
    assert api.repo.unfinished_job_ids() == []
    assert [p for p in api.storage.root.rglob("*") if p.is_file()] == []


def test_unknown_class_names_the_valid_ones_once_a_worker_published(client, api, fake_worker):
    deadline = time.time() + 10
    while api.jobs.capabilities().detector is None:
        assert time.time() < deadline
        time.sleep(0.05)
    body = assert_problem(submit(client, SAMPLE.read_bytes(), classes="bottle,notaclass"), 422, "unknown-class")
    assert "notaclass" in body["detail"] and body["valid_choices"] == ["bottle", "person"]
    assert body["invalid_params"][0]["name"] == "classes"
    body = assert_problem(submit(client, SAMPLE.read_bytes(), ocr_lang="xyz"), 422, "unknown-language")
    assert body["valid_choices"] == ["eng"]
    caps = client.get("/video/capabilities").json()
    assert caps["detector"]["class_names"] == ["bottle", "person"] and caps["ocr_languages"] == ["eng"]
    jsonschema.validate(caps, client.get("/video/schemas/capabilities.json").json())


def test_ids_routes_and_methods_answer_problems(client):
    assert_problem(client.get("/video/status/0b9f8a52-3f1e-4d5c-9a7b-1c2d3e4f5a6b"), 404, "job-not-found")
    for path in ("/video/status/12345", "/video/results/not-a-uuid", "/video/status/%20", "/video/status/" + "a" * 10_000):
        body = assert_problem(client.get(path), 400, "invalid-job-id")
        assert len(body["detail"]) < 200, path  # a huge id is not echoed back
    assert_problem(client.get("/video/nothing-here"), 404, "not-found")
    assert_problem(client.delete("/video/submit"), 405, "method-not-allowed")
    assert_problem(client.get("/video/results/0b9f8a52-3f1e-4d5c-9a7b-1c2d3e4f5a6b", params={"page_size": 0}), 422,
                   "invalid-request")
    job_id = submit(client, SAMPLE.read_bytes()).json()["job_id"]
    body = assert_problem(client.get(f"/video/results/{job_id}"), 409, "results-not-ready")
    assert body["job_status"] == "PENDING" and "status is PENDING" in body["detail"]
    assert body["instance"] == f"/video/results/{job_id}"


def test_every_problem_type_is_documented(client):
    for slug, problem in PROBLEMS.items():
        doc = client.get(f"/problems/{slug}").json()
        assert doc == {"type": problem.type_uri, "title": problem.title, "status": problem.http_status,
                       "description": problem.description}
    assert_problem(client.get("/problems/no-such-problem"), 404, "not-found")
    route = client.get("/openapi.json").json()["paths"]["/problems/{slug}"]["get"]
    assert route["parameters"][0]["schema"]["enum"] == list(PROBLEMS)  # so the fuzzers reach the 200 answers


def test_openapi_documents_typed_answers_and_problems(client):
    doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    assert {"/video/submit", "/video/status/{job_id}", "/video/results/{job_id}", "/video/capabilities"} <= set(paths)
    form = paths["/video/submit"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["pipeline_id"]["enum"] == ["yolo_ocr", "yolo", "ocr"]
    assert form["properties"]["sample_fps"]["maximum"] == 240.0 and "min_text_confidence" in form["properties"]
    status_responses = paths["/video/status/{job_id}"]["get"]["responses"]
    assert status_responses["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/JobResource"}
    assert "/problems/job-not-found" in status_responses["404"]["description"]
    assert "application/problem+json" in status_responses["404"]["content"]
    results_200 = paths["/video/results/{job_id}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert results_200 == {"$ref": "#/components/schemas/JobResults"}
    for path, item in paths.items():
        for method, op in item.items():
            assert any(code.startswith("2") for code in op["responses"]), (path, method)
            # Any request can be malformed HTTP, answered with a bad-request problem (gateway/protocol.py).
            assert "/problems/bad-request" in op["responses"]["400"]["description"], (path, method)
            for param in op.get("parameters", []):
                if param["name"] == "job_id":  # ids are UUIDs, so clients and the fuzzers send UUIDs
                    assert param["schema"]["format"] == "uuid", (path, method)
    assert sum("{job_id}" in path for path in paths) == 7


def test_docs_work_offline(client):
    html = client.get("/docs").text
    assert "cdn" not in html.lower() and "https://" not in html and "http://" not in html
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        ref = next(part.split('"')[0] for part in html.split('"/') if asset in part.split('"')[0])
        r = client.get("/" + ref)
        assert r.status_code == 200 and len(r.content) > 10_000, asset


def test_schemas_are_served_and_current(client):
    for name in schemas.SCHEMAS:
        r = client.get(f"/video/schemas/{name}.json")
        assert r.status_code == 200 and r.json() == schemas.SCHEMAS[name].model_json_schema() | {
            "$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"/video/schemas/{name}.json"}
        assert r.headers["content-type"] == "application/schema+json"
    # The OpenAPI document says so, and names the schemas a client may ask for.
    route = client.get("/openapi.json").json()["paths"]["/video/schemas/{name}.json"]["get"]
    assert list(route["responses"]["200"]["content"]) == ["application/schema+json"]
    assert route["parameters"][0]["schema"]["enum"] == list(schemas.SCHEMAS)
    assert_problem(client.get("/video/schemas/nope.json"), 404, "not-found")


def test_readyz_and_status_are_problems_when_the_api_is_unreachable():
    app = create_app(Settings(max_upload_bytes=MAX_UPLOAD), "127.0.0.1:1")
    with TestClient(app) as c:
        assert c.get("/readyz").status_code == 503
        body = assert_problem(c.get("/video/status/0b9f8a52-3f1e-4d5c-9a7b-1c2d3e4f5a6b"), 503, "service-unavailable")
        assert "127.0.0.1" not in body["detail"] and ":1" not in body["detail"]


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
    import threading
    import tracemalloc

    import httpx
    import uvicorn

    from videojobs.api.bootstrap import build_api
    from videojobs.common.config import Settings
    from videojobs.gateway.bootstrap import server_config

    limit = 512 * 1024 * 1024
    api = build_api(Settings(data_dir=tmp_path, grpc_port=0, max_upload_bytes=limit))
    api.start()
    port = load_script("servers").free_port()
    gateway_settings = Settings(max_upload_bytes=limit)
    server = uvicorn.Server(server_config(create_app(gateway_settings, f"127.0.0.1:{api.port}"), gateway_settings,
                                          log_level="warning", host="127.0.0.1", port=port))
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
