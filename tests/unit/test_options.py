import argparse

import pytest

from videojobs.common.errors import InvalidOptions
from videojobs.common.options import AnalysisOptions, add_option_arguments, options_from_arguments
from videojobs.common.pipelines import PIPELINES, Stage, get_pipeline


def test_defaults_are_documented_values():
    opts = AnalysisOptions.parse({})
    assert opts.to_dict() == {"sample_fps": 1.0, "max_frames": 0, "min_confidence": 0.25, "classes": [],
                              "ocr_lang": "eng", "imgsz": 640, "min_text_confidence": 0.6, "on_bad_frames": "fail"}


def test_form_strings_are_parsed():
    opts = AnalysisOptions.parse({"sample_fps": "2.5", "max_frames": "10", "min_confidence": "0.4",
                                  "classes": "bottle, person,bottle", "imgsz": "320"})
    assert (opts.sample_fps, opts.max_frames, opts.min_confidence, opts.classes, opts.imgsz) == (
        2.5, 10, 0.4, ("bottle", "person"), 320)


def test_repeated_class_fields_and_comma_lists_mix():
    assert AnalysisOptions.parse({"classes": ["bottle,cup", " person", ""]}).classes == ("bottle", "cup", "person")


@pytest.mark.parametrize("raw, field", [
    ({"sample_fps": "-1"}, "sample_fps"), ({"sample_fps": "fast"}, "sample_fps"), ({"sample_fps": "nan"}, "sample_fps"),
    ({"sample_fps": "inf"}, "sample_fps"), ({"sample_fps": 1000}, "sample_fps"), ({"sample_fps": "1e-320"}, "sample_fps"),
    ({"max_frames": "-3"}, "max_frames"), ({"max_frames": "2.5"}, "max_frames"),
    ({"max_frames": str(2**31)}, "max_frames"), ({"min_confidence": "1.5"}, "min_confidence"),
    ({"imgsz": "100"}, "imgsz"), ({"imgsz": "4096"}, "imgsz"), ({"ocr_lang": "english; rm -rf"}, "ocr_lang"),
    ({"classes": ["ok", "<script>"]}, "classes"), ({"classes": ["x" * 65]}, "classes"),
    ({"classes": [f"c{i}" for i in range(101)]}, "classes"), ({"colour": "red"}, "colour"),
    ({"min_text_confidence": "2"}, "min_text_confidence"),
])
def test_invalid_values_are_rejected_naming_the_field(raw, field):
    with pytest.raises(InvalidOptions) as err:
        AnalysisOptions.parse(raw)
    assert [v.field for v in err.value.violations] == [field]
    assert field in str(err.value)
    assert err.value.extensions()["invalid_params"][0]["name"] == field


def test_sample_fps_zero_means_every_frame_and_small_rates_are_allowed():
    assert AnalysisOptions.parse({"sample_fps": "0"}).sample_fps == 0.0
    assert AnalysisOptions.parse({"sample_fps": "0.01"}).sample_fps == 0.01


def test_cli_flags_derive_from_the_fields():
    parser = argparse.ArgumentParser()
    add_option_arguments(parser)
    flags = {a.dest for a in parser._actions if a.option_strings}
    assert set(AnalysisOptions.field_names()) <= flags
    args = parser.parse_args(["--sample-fps", "2", "--classes", "bottle,cup", "--min-text-confidence", "0.3"])
    opts = options_from_arguments(args)
    assert (opts.sample_fps, opts.classes, opts.min_text_confidence, opts.imgsz) == (2.0, ("bottle", "cup"), 0.3, 640)


def test_pipeline_registry():
    assert get_pipeline("").pipeline_id == "yolo_ocr"
    assert get_pipeline("ocr").stages == (Stage.OCR,)
    assert get_pipeline("yolo").runs(Stage.DETECT) and not get_pipeline("yolo").runs(Stage.OCR)
    with pytest.raises(InvalidOptions, match="unknown pipeline_id") as err:
        get_pipeline("sam2")
    assert err.value.violations[0].field == "pipeline_id"
    assert set(PIPELINES) == {"yolo_ocr", "yolo", "ocr"}


def test_on_bad_frames_is_fail_or_skip():
    assert AnalysisOptions.parse({"on_bad_frames": "skip"}).on_bad_frames == "skip"
    with pytest.raises(InvalidOptions) as err:
        AnalysisOptions.parse({"on_bad_frames": "ignore"})
    assert err.value.violations[0].field == "on_bad_frames"
