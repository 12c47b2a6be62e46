"""Sampling math, FOURCC text and container inspection (no model, no decoding)."""

from __future__ import annotations

import pytest

from tests.integration.conftest_pipeline import audio_only_mp4, faststart, box
from videojobs.worker.pipeline.errors import EmptyVideo, NoVideoStream, NotAVideo, TruncatedVideo
from videojobs.worker.pipeline.video import SamplingPlan, describe_unopenable, fourcc_to_str, mp4_layout


def test_one_fps_on_the_sample_geometry_gives_forty_frames_one_second_apart():
    plan = SamplingPlan(frame_count=1189, fps=29.833333, sample_fps=1.0)
    indices = list(plan)
    assert len(plan) == len(indices) == 40
    assert indices[:4] == [0, 30, 60, 89]
    # Each sample is the frame nearest to k seconds.
    for k, index in enumerate(indices):
        assert abs(index / 29.833333 - k) <= 0.5 / 29.833333 + 1e-9
    assert indices[-1] < 1189


@pytest.mark.parametrize("sample_fps", [0, 30, 60, 240])
def test_zero_or_at_least_the_video_rate_means_every_frame(sample_fps):
    plan = SamplingPlan(frame_count=95, fps=30.0, sample_fps=sample_fps)
    assert plan.every_frame
    assert list(plan) == list(range(95))


def test_integer_step_and_max_frames():
    plan = SamplingPlan(frame_count=250, fps=25.0, sample_fps=2.5, max_frames=7)
    assert list(plan) == [0, 10, 20, 30, 40, 50, 60]
    assert plan.sampling(7).frame_step == 10.0
    assert plan.sampling(7).sample_fps == 2.5
    assert plan.sampling(7).last_frame_index == 60


def test_last_sample_never_points_past_the_end():
    for n in range(1, 200):
        plan = SamplingPlan(frame_count=n, fps=29.97, sample_fps=0.7)
        indices = list(plan)
        assert indices and indices[0] == 0 and indices[-1] < n
        assert indices == sorted(set(indices))
        # One more sample would be past the end.
        assert plan.index(len(plan)) >= n


def test_no_frames_no_samples():
    assert len(SamplingPlan(frame_count=0, fps=30.0, sample_fps=1.0)) == 0


def test_fourcc_text():
    assert fourcc_to_str(875967080.0) == "h264"
    assert fourcc_to_str(0) == ""
    assert fourcc_to_str(0x7634706D) == "mp4v"


def test_layout_of_an_audio_only_mp4(tmp_path):
    path = audio_only_mp4(tmp_path / "a.mp4")
    layout = mp4_layout(path)
    assert layout is not None and layout.has_moov and not layout.cut_short
    assert layout.tracks == (("soun", 8000),)
    assert isinstance(describe_unopenable(path), NoVideoStream)


def test_unopenable_files_are_explained(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert isinstance(describe_unopenable(tmp_path / "empty.mp4"), NotAVideo)
    (tmp_path / "junk.mp4").write_bytes(b"\x00\x01junk" * 100)
    assert isinstance(describe_unopenable(tmp_path / "junk.mp4"), NotAVideo)
    ftyp = box(b"ftyp", b"isom\0\0\0\0isom")
    (tmp_path / "cut.mp4").write_bytes(ftyp + b"\0\0\x10\0mdat" + b"\0" * 100)
    assert isinstance(describe_unopenable(tmp_path / "cut.mp4"), TruncatedVideo)
    (tmp_path / "notracks.mp4").write_bytes(ftyp + box(b"moov", box(b"mvhd", b"\0" * 100)))
    assert isinstance(describe_unopenable(tmp_path / "notracks.mp4"), EmptyVideo)


def test_faststart_helper_moves_the_index_first(tmp_path):
    path = audio_only_mp4(tmp_path / "a.mp4")
    data = path.read_bytes()
    # audio_only_mp4 already writes moov first; moving it again must keep the file identical.
    assert faststart(data) == data


# -- the seek index, from the packets' times (ms) and the keyframes' among them --------------------------
def _index(stamps, keys, fps=30.0, announced=None):
    from array import array

    from videojobs.worker.pipeline.video import _seek_index

    return _seek_index(array("d", stamps), list(keys), fps, len(stamps) if announced is None else announced)


def test_the_seek_index_ranks_keyframes_in_presentation_order():
    frame = 1000 / 30
    decoding_order = [0, 3, 1, 2, 6, 4, 5, 9, 7, 8]  # B-frames: packets come before the frames they show after
    stamps = [k * frame for k in decoding_order]
    index = _index(stamps, [0.0, 6 * frame])
    assert index.exact and index.keyframes == (0, 6)
    assert index.keyframe_at_or_before(5) == 0 and index.keyframe_at_or_before(8) == 6


@pytest.mark.parametrize("stamps, keys, announced, reason", [
    ([], [], 0, "carry no usable timestamps"),
    ([0.0, 33.3], [0.0], 3, "announces 3 frames but holds 2 packets"),
    ([0.0, 33.3, 33.3], [0.0], None, "share timestamps"),
    ([0.0, 33.3, 83.3], [0.0], None, "frame rate is variable"),
    ([40.0, 73.3, 106.7], [40.0], None, "does not start at time 0"),
    ([0.0, 33.3, 66.7], [33.3], None, "first frame is not a keyframe"),
])
def test_the_seek_index_is_not_exact_where_frames_and_times_do_not_map_one_to_one(stamps, keys, announced, reason):
    index = _index(stamps, keys, announced=announced)
    assert not index.exact and reason in index.reason
