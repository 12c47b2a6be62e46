"""scripts/bench_pipeline.py's `decode_alone`: what decoding alone costs for a sampling must be
measured on the decoding the pipeline does for it (by keyframes, unreferenced frames skipped), or
the share of the cores it reports against the forward means nothing."""

from __future__ import annotations

import pytest

from tests.conftest import load_script
from tests.integration.conftest_pipeline import model_path, sample_video  # noqa: F401  (fixtures)
from videojobs.common.options import AnalysisOptions

bench = load_script("bench_pipeline")


@pytest.mark.parametrize("sample_fps, max_frames", [(1.0, 3), (0.0, 5)], ids=["1fps", "every-frame"])
def test_decode_alone_decodes_what_the_pipeline_decodes(sample_video, model_path, tmp_path,  # noqa: F811
                                                        sample_fps, max_frames):
    service = bench.build_service(str(model_path), tmp_path)
    try:
        service.run_on_file("ocr", sample_video, AnalysisOptions(sample_fps=sample_fps, max_frames=max_frames))
        pipeline_decoded = int(service.last_timings["frames_decoded"])
    finally:
        service.close()
    alone = bench.decode_alone(sample_video, sample_fps, max_frames, repeat=1)
    assert alone["frames"] == max_frames
    assert alone["frames_decoded"] == pipeline_decoded
    assert alone["core_ms_per_frame"] > 0
    if sample_fps:  # frame 60 is reached through reference frames only: fewer than a sequential decode's 61
        assert max_frames < alone["frames_decoded"] < 61
    else:
        assert alone["frames_decoded"] == max_frames
