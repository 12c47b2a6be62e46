"""Adding a pipeline is one registry entry; adding an option is one field: everything else derives."""

from __future__ import annotations

import argparse

import pytest

from tests.unit.test_pipeline_service import FakeDetector, clip, service  # noqa: F401 (fixtures)
from videojobs.common.options import AnalysisOptions, add_option_arguments
from videojobs.common.pipelines import PIPELINES, Pipeline, Stage, get_pipeline
from videojobs.common.resources import Capabilities
from videojobs.gateway.app import submit_form_schema


@pytest.fixture
def detect_only(monkeypatch):
    entry = Pipeline("detect_only", "Objects without tracking.", (Stage.DETECT,))
    monkeypatch.setitem(PIPELINES, entry.pipeline_id, entry)
    return entry


def test_a_new_pipeline_entry_reaches_validation_form_and_capabilities(detect_only):
    assert get_pipeline("detect_only") is detect_only
    assert "detect_only" in submit_form_schema()["properties"]["pipeline_id"]["enum"]
    caps = Capabilities.build(1024, None)
    assert [p.stages for p in caps.pipelines if p.pipeline_id == "detect_only"] == [["detect"]]


def test_the_worker_runs_only_the_new_pipelines_stages(detect_only, service, clip):  # noqa: F811
    doc = service.run_on_file("detect_only", clip, AnalysisOptions(max_frames=2))
    frames = doc.results
    assert all(f.result.detections and f.result.ocr == [] for f in frames)
    assert all(d.track_id is None for f in frames for d in f.result.detections)  # no TRACK stage
    assert doc.tracks == [] and doc.provenance.ocr_lang is None and doc.pipeline_id == "detect_only"


def test_every_option_field_is_in_the_form_and_the_cli():
    form = submit_form_schema()["properties"]
    parser = argparse.ArgumentParser()
    add_option_arguments(parser)
    flags = {a.dest: a.option_strings for a in parser._actions}
    for name, info in AnalysisOptions.model_fields.items():
        assert form[name]["description"] == info.description
        assert flags[name] == ["--" + name.replace("_", "-")]
