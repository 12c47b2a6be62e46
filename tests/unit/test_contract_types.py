"""The contract's types: published schemas current, proto conversion lossless, problem catalogue sound."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import grpc
import pytest
from google.protobuf.json_format import MessageToDict

from videojobs.common import schemas, wire
from videojobs.common.errors import PROBLEMS, PROBLEMS_BY_REASON
from videojobs.common.job import Job, JobStatus
from videojobs.common.options import AnalysisOptions
from videojobs.common.resources import Capabilities, JobResource, WorkerCapabilities
from videojobs.common.results import (
    Box,
    Detection,
    IndexedResults,
    FrameAnalysis,
    FrameResult,
    ModelInfo,
    OcrLine,
    Provenance,
    ResultsDocument,
    Sampling,
    Track,
    VideoMetadata,
)
from videojobs.v1 import jobs_pb2


def test_published_schemas_match_the_types():
    assert schemas.main(["--check"]) == 0
    for name in schemas.SCHEMAS:
        assert schemas.path_of(name).read_text(encoding="utf-8") == schemas.render(name)


def document() -> ResultsDocument:
    box = Box(x1=1.5, y1=2.0, x2=30.25, y2=40.0)
    return ResultsDocument(
        pipeline_id="yolo_ocr",
        video=VideoMetadata(width=640, height=360, fps=29.8333, frame_count=1189, duration_ms=39854.749, codec="h264",
                            container="iso-bmff"),
        sampling=Sampling(sample_fps=1.0, frame_step=29.8333, max_frames=0, frames_analysed=2,
                          requested_sample_fps=1.0, every_frame=False, first_frame_index=0, last_frame_index=30),
        provenance=Provenance(model=ModelInfo(file="m.pt", sha256="ab" * 32, backend="openvino", input_size=None),
                              libraries={"opencv": "5.0", "ultralytics": "8.4"}, ocr_lang="eng",
                              options=AnalysisOptions(classes=("bottle",))),
        results=[
            FrameResult(frame_index=0, timestamp_ms=0.0, result=FrameAnalysis(
                detections=[Detection(class_id=39, class_name="bottle", confidence=0.9, box=box,
                                      box_norm=Box(x1=0.0, y1=0.01, x2=0.05, y2=0.11), track_id=1),
                            Detection(class_id=39, class_name="bottle", confidence=0.3, box=box, box_norm=box)],
                text="LABEL", ocr=[OcrLine(text="LABEL", confidence=0.88, box=box, detection_index=0),
                                   OcrLine(text="FREE", confidence=0.7, box=box)])),
            FrameResult(frame_index=30, timestamp_ms=1005.587, result=FrameAnalysis()),
        ],
        tracks=[Track(track_id=1, class_id=39, class_name="bottle", first_frame_index=0, last_frame_index=0,
                      start_ms=0.0, end_ms=0.0, frames=1)],
    )


def test_results_pages_convert_to_proto_and_back_without_loss():
    doc = document()
    results = IndexedResults.from_bytes(doc.to_bytes())
    first = wire.results_page_to_pb("j", JobStatus.COMPLETED, results.page(0, 1), len(results), "tok")
    second = wire.results_page_to_pb("j", JobStatus.COMPLETED, results.page(1, 2), len(results), "")
    assert (first.job_id, first.status, first.next_page_token, first.total_size) == ("j", jobs_pb2.JOB_STATUS_COMPLETED,
                                                                                    "tok", 2)
    back = wire.results_page_from_pb(first)
    assert back.results == doc.results[:1]
    assert back.model_copy(update={"results": doc.results}) == doc
    assert wire.results_page_from_pb(second).results == doc.results[1:]
    # Unset optional members stay unset on the wire (MessageToDict omits them; REST shows null).
    as_dict = MessageToDict(first, preserving_proto_field_name=True)
    assert "track_id" not in as_dict["results"][0]["result"]["detections"][1]
    assert "detection_index" not in as_dict["results"][0]["result"]["ocr"][1]
    # Field names are the document's own.
    assert set(doc.model_dump()) <= set(jobs_pb2.GetResultsResponse.DESCRIPTOR.fields_by_name)


def test_job_resource_round_trip():
    job = Job.submit("yolo", AnalysisOptions(sample_fps=2.5, classes=("cup",)),
                     now=datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=timezone.utc))
    resource = JobResource.from_job(job)
    assert wire.job_from_pb(wire.job_to_pb(resource)) == resource
    failed = resource.model_copy(update={"status": JobStatus.FAILED, "error_message": "the file is empty"})
    assert wire.job_from_pb(wire.job_to_pb(failed)) == failed
    assert set(JobResource.model_fields) == set(jobs_pb2.Job.DESCRIPTOR.fields_by_name)


def test_capabilities_round_trip_with_and_without_a_worker():
    worker = WorkerCapabilities(worker_id="w", model_file="m.pt", model_sha256="0" * 64, class_names=["a", "b"],
                                ocr_languages=["eng"], published_at=datetime.now(timezone.utc))
    for caps in (Capabilities.build(1 << 30, None), Capabilities.build(1 << 30, worker)):
        assert wire.capabilities_from_pb(wire.capabilities_to_pb(caps)) == caps


def test_options_travel_only_when_set():
    options = AnalysisOptions.parse({"sample_fps": "2"})
    message = wire.options_to_pb(options)
    assert message.HasField("sample_fps") and not message.HasField("imgsz")
    assert wire.options_from_pb(message) == options
    assert set(AnalysisOptions.model_fields) == set(jobs_pb2.AnalysisOptions.DESCRIPTOR.fields_by_name)


def test_problem_catalogue_is_consistent():
    assert len(PROBLEMS_BY_REASON) == len(PROBLEMS)
    for slug, problem in PROBLEMS.items():
        assert problem.slug == slug and problem.type_uri == f"/problems/{slug}"
        assert grpc.StatusCode[problem.grpc_code]
        assert 400 <= problem.http_status < 600 and problem.title and problem.description


@pytest.mark.parametrize("status", list(JobStatus))
def test_every_status_has_a_wire_spelling(status):
    assert wire.status_from_pb(wire.status_to_pb(status)) is status


def test_the_results_answer_is_the_results_page_message_field_for_field():
    from videojobs.common.results import JobResults, whole_results

    assert list(JobResults.model_fields) == ["job_id", "status", *ResultsDocument.model_fields,
                                             "next_page_token", "total_size"]
    assert set(JobResults.model_fields) == set(jobs_pb2.GetResultsResponse.DESCRIPTOR.fields_by_name)
    answer = whole_results("j", document())
    page = wire.results_page_to_pb("j", JobStatus.COMPLETED, document(), 2, "")
    assert answer.model_dump(mode="json") == JobResults.model_validate(wire.pb_to_dict(page)).model_dump(mode="json")


def non_ascii_document() -> ResultsDocument:
    """document() with more frames, and OCR text whose UTF-8 takes 2, 3 and 4 bytes a character."""
    doc = document()
    texts = ["café", "東京駅", "🙂 ok", "plain"]
    frames = [frame.model_copy(update={"frame_index": 60 + 30 * i, "result": FrameAnalysis(
        text=text, ocr=[OcrLine(text=text, confidence=0.5, box=doc.results[0].result.ocr[0].box)])})
        for i, (frame, text) in enumerate(zip(doc.results * 2, texts))]
    return doc.model_copy(update={"results": [*doc.results, *frames]})


# A document is indexed held whole, or read in chunks (of any size: a value may be cut anywhere) and
# its frames read back by range later.
HOW = ["whole", 1, 7, 64, 4096]


def indexed(data: bytes, how, check: bool = True, reads: list | None = None) -> IndexedResults:
    if how == "whole":
        return IndexedResults.from_bytes(data, check=check)

    def read(start: int, end: int) -> bytes:
        if reads is not None:
            reads.append((start, end))
        return data[start:end]

    return IndexedResults.from_chunks((data[i:i + how] for i in range(0, len(data), how)), read, check=check)


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("indent", [None, 2])
def test_an_indexed_document_answers_as_the_parsed_one(indent, how):
    doc = non_ascii_document()
    data = doc.to_bytes() if indent is None else json.dumps(json.loads(doc.to_bytes()), indent=indent,
                                                            ensure_ascii=False).encode()
    results = indexed(data, how)
    assert len(results) == len(doc.results) == 6
    assert results.header == doc.model_copy(update={"results": []})
    assert results.frames() == doc.results
    for start, end in [(0, 1), (1, 4), (4, 99), (6, 7)]:
        assert results.page(start, end) == doc.model_copy(update={"results": doc.results[start:end]})
    assert list(results.frame_indices) == [f.frame_index for f in doc.results]
    assert results.position_of(120) == 4 and results.frame_at(4).result.text == "🙂 ok"
    assert results.position_of(121) is None and results.position_of(-1) is None
    assert results.detection_count == sum(len(f.result.detections) for f in doc.results)
    kept = len(data) if how == "whole" else 0
    assert results.nbytes == kept + 24 * len(results)


def test_a_document_read_in_chunks_reads_back_only_the_frames_asked_for():
    doc = non_ascii_document()
    data = doc.to_bytes()
    reads: list = []
    results = indexed(data, 100, reads=reads)
    assert reads == []  # indexing reads the chunks only
    assert results.page(1, 4).results == doc.results[1:4]
    [(start, end)] = reads  # one range: the three frames and the commas between them
    assert data[start:end].startswith(b'{"frame_index":30') and data[end:end + 1] == b","
    assert json.loads(b"[" + data[start:end] + b"]") == [json.loads(f.model_dump_json()) for f in doc.results[1:4]]
    assert results.frames(3, 3) == [] and len(reads) == 1


@pytest.mark.parametrize("data, reason", [
    (b"not json", "expected '{'"),
    (b'{"schema_version": 2}', "no results member"),
    (b'{"results": [{"frame_index": 3}, {"frame_index": 2}]}', "frame order"),
    (b'{"results": [1]}', "frame order"),
    (b'{"results": []} trailing', "unexpected data"),
    (b'{1: [], "results": []}', "member name"),
    (b'{"results": [{"frame_index": 0, "result": 5}]}', "validation error"),
])
@pytest.mark.parametrize("how", HOW)
def test_a_stored_document_that_is_not_one_fails_to_index(data, reason, how):
    with pytest.raises(ValueError, match=reason):
        indexed(data, how)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 100])
def test_header_values_cut_between_chunks_are_read_whole(size):
    from videojobs.common.results import _Scan

    # a number cut after "12" would parse: a value is taken only once something follows it
    data = '{"x": 12345, "y": "café", "results": [], "z": [6789, 1e-3], "w": 67}'.encode()
    scan = _Scan(iter([data[i:i + size] for i in range(0, len(data), size)]), True)
    assert scan.header == {"x": 12345, "y": "café", "z": [6789, 0.001], "w": 67} and len(scan.frame_indices) == 0


@pytest.mark.parametrize("how", HOW)
def test_a_document_cut_short_fails_to_index_wherever_it_is_cut(how):
    data = non_ascii_document().to_bytes()
    for end in range(0, len(data), 37):
        with pytest.raises(ValueError):
            indexed(data[:end], how)


def test_indexing_checks_every_frame_unless_told_not_to():
    raw = json.loads(non_ascii_document().to_bytes())
    raw["results"][5]["timestamp_ms"] = "late"  # the last frame does not validate
    data = json.dumps(raw).encode()
    for how in HOW:
        with pytest.raises(ValueError):
            indexed(data, how)
        assert list(indexed(data, how, check=False).frame_indices) == [0, 30, 60, 90, 120, 150]
