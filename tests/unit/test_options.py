import pytest

from videojobs.common.errors import InvalidOptions
from videojobs.common.options import AnalysisOptions, validate_pipeline_id


def test_defaults_are_documented_values():
    opts = AnalysisOptions.parse({})
    assert opts.to_dict() == {"sample_fps": 1.0, "max_frames": 0, "min_confidence": 0.25,
                              "classes": [], "ocr_lang": "eng", "imgsz": 640}


def test_form_strings_are_parsed():
    opts = AnalysisOptions.parse({"sample_fps": "2.5", "max_frames": "10", "min_confidence": "0.4",
                                  "classes": "bottle, person,bottle", "imgsz": "320"})
    assert (opts.sample_fps, opts.max_frames, opts.min_confidence, opts.classes, opts.imgsz) == (
        2.5, 10, 0.4, ("bottle", "person"), 320)


@pytest.mark.parametrize("raw", [
    {"sample_fps": "-1"}, {"sample_fps": "fast"}, {"sample_fps": "nan"}, {"sample_fps": 1000},
    {"max_frames": "-3"}, {"max_frames": "2.5"}, {"min_confidence": "1.5"}, {"imgsz": "100"},
    {"imgsz": "4096"}, {"ocr_lang": "english; rm -rf"}, {"classes": ["ok", "<script>"]}, {"colour": "red"},
])
def test_invalid_values_are_rejected_with_a_message(raw):
    with pytest.raises(InvalidOptions) as err:
        AnalysisOptions.parse(raw)
    assert str(err.value)


def test_pipeline_ids():
    assert validate_pipeline_id("") == "yolo_ocr"
    assert validate_pipeline_id("ocr") == "ocr"
    with pytest.raises(InvalidOptions, match="unknown pipeline_id"):
        validate_pipeline_id("sam2")
