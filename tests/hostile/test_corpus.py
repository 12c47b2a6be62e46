"""The hostile corpus through REST on an embedded `videojobs serve`: every file gets its expected outcome.

70+ malformed or unusual files (tests/hostile/corpus.py, built here from the shared
sample): each ends in its expected 4xx refusal, COMPLETED job (with servable results) or
FAILED job with a clear error_message; no 5xx, no job left unfinished, the worker still
completes a normal job afterwards, and nothing is left in the data folder.
`scripts/hostile_corpus.py` runs the same and prints the table.
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import SAMPLE, model_cache  # noqa: F401  (fixture)
from tests.hostile import corpus

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def test_every_hostile_file_gets_its_expected_outcome(tmp_path, model_cache):  # noqa: F811
    # The bound on every job: generous, so a machine shared with other work does not fail it.
    run = corpus.run_on_embedded_service(SAMPLE, tmp_path, model_cache, timeout=300)
    print("\n" + corpus.format_table(run.rows))
    (tmp_path / "hostile.json").write_text(json.dumps({"summary": run.summary(), "rows": corpus.as_json(run.rows)}))
    assert len(run.rows) >= 40
    assert run.problems() == [], "\n".join(run.problems())
    outcomes = run.summary()["outcomes"]
    assert outcomes["COMPLETED"] >= 10 and outcomes["FAILED"] >= 20 and outcomes["415"] >= 5  # every kind is there


def test_outcome_matching_is_strict():
    expect = corpus.failed("cut off")
    assert corpus._matches(expect, "FAILED: the MP4 is cut off before its index")
    assert not corpus._matches(expect, "FAILED: no frame could be decoded")
    assert not corpus._matches(expect, "COMPLETED")
    assert corpus._matches(corpus.refused(415, "unsupported-media-type"), "415 unsupported-media-type")
    assert not corpus._matches(corpus.refused(415, "unsupported-media-type"), "500 internal")
    assert not corpus._matches(corpus.COMPLETED, "COMPLETED, results 502 upstream-error")
    rows = [corpus.Row("a.mp4", "", "COMPLETED", "STUCK (RUNNING after 5 s)", 200),
            corpus.Row("b.mp4", "", "COMPLETED", "500 internal", 500)]
    assert len(corpus.check_rows(rows)) == 3


def test_the_leftover_check_finds_what_it_must(tmp_path):
    assert corpus.leftovers(tmp_path, 0)[0].startswith("no storage folder")
    (tmp_path / "storage" / "inputs").mkdir(parents=True)
    (tmp_path / "storage" / "inputs" / "a.mp4").write_bytes(b"x")
    (tmp_path / "storage" / "inputs" / ".b.mp4.1234.part").write_bytes(b"x")
    (tmp_path / "scratch" / "host-1").mkdir(parents=True)
    (tmp_path / "scratch" / "host-1" / "input.mp4").write_bytes(b"x")
    assert len(corpus.leftovers(tmp_path, 2)) == 2  # the scratch file and the half-written object
    assert len(corpus.leftovers(tmp_path, 1)) == 3  # and an input object no accepted job explains
