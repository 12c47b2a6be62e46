"""The gateway's unpaged results answer, streamed a page at a time (gateway/app.py `_whole_results`), and
the benchmark that measures it and the worker's merge (scripts/bench_results.py), on documents longer
than one api page."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.conftest import load_script
from videojobs.common import wire
from videojobs.common.results import MAX_PAGE_SIZE, IndexedResults, JobResults, ResultsDocument
from videojobs.gateway.app import _whole_results
from videojobs.v1 import jobs_pb2

bench = load_script("bench_results")


async def streamed(stub) -> bytes:
    first = await stub.GetResults(jobs_pb2.GetResultsRequest(job_id="j", page_size=MAX_PAGE_SIZE))
    return b"".join([chunk async for chunk in _whole_results(stub, first, wire.results_page_from_pb(first), ())])


@pytest.mark.parametrize("frames", [1001, 2500])
def test_the_streamed_answer_is_the_whole_answer_byte_for_byte(frames):
    data = bench.document_bytes(frames)
    document = ResultsDocument.from_bytes(data)
    stub = bench.PagesStub(IndexedResults.from_bytes(data))
    body = asyncio.run(streamed(stub))
    whole = JobResults(job_id="j", status="COMPLETED", **dict(document), next_page_token="", total_size=frames)
    assert body == whole.model_dump_json().encode()
    assert stub.calls == -(-frames // MAX_PAGE_SIZE)  # one call a page: the first, then one for each further page
    assert [f["frame_index"] for f in json.loads(body)["results"]] == list(range(frames))


def test_the_benchmark_measures_each_mode_on_a_valid_document(tmp_path):
    path = tmp_path / "r.json"
    bench.prepare(path, 1200)
    assert len(ResultsDocument.from_bytes(path.read_bytes()).results) == 1200
    assert len(path.with_suffix(".parts").read_bytes().splitlines()) == -(-1200 // bench.SEGMENT_FRAMES)
    rows = {mode: bench.measure(mode, path) for mode in bench.MODES}
    assert {row["frames"] for row in rows.values()} == {1200}
    assert rows["gateway-before"]["answer_bytes"] == rows["gateway-now"]["answer_bytes"]
    assert rows["merge-before"]["sha256"] == rows["merge-now"]["sha256"]  # the same document, either way
    assert all({"peak_added_mib", "resident_added_mib", "seconds"} <= set(row) for row in rows.values())
