"""Segments on real video: exact seeking (pixel hashes against a sequential decode) on the shared
sample, on a generated clip with B-frames and short GOPs and on a variable-frame-rate clip (which
must fall back to one pass), and merged results byte-identical to one pass with the real model."""

from __future__ import annotations

import hashlib
import json
from fractions import Fraction
from pathlib import Path

import av
import cv2
import pytest

from tests.integration.conftest_pipeline import model_path, pipeline_service, sample_video  # noqa: F401

pytestmark = pytest.mark.slow
from videojobs.common.options import AnalysisOptions
from videojobs.common.errors import PoisonInput
from videojobs.common.results import ResultsDocument
from videojobs.common.segments import Segment, SkippedSegment, split_samples
from videojobs.worker.pipeline.video import FrameReader, SamplingPlan, SeekIndex


def sequential_hashes(path: Path) -> list[str]:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(hashlib.sha1(frame.tobytes()).hexdigest())
    cap.release()
    return out


def seek_index(path: Path) -> SeekIndex:
    """The file's seek index, as a reader makes it when it opens the file."""
    with FrameReader(path, 10.0) as reader:
        reader.open()
        return reader.seek_index


def segment_hashes(path: Path, plan: SamplingPlan, first: int, end: int,
                   decoded: list[int] | None = None) -> list[tuple[int, str]]:
    """Frames of samples [first, end) decoded the way a job or a segment does: with the file's seek
    index, so from the keyframe before the first and only what the plan needs (`decoded` gets how
    many frames the decoder produced, or -1 if it decoded sequentially)."""
    with FrameReader(path, 10.0) as reader:
        reader.open()
        out = [(i, hashlib.sha1(f.tobytes()).hexdigest()) for i, f in reader.frames(plan, first, end)]
        if decoded is not None:
            decoded.append(reader.frames_decoded if reader.selective else -1)
        return out


def bframe_clip(src: Path, dst: Path, seconds: float = 4.0) -> Path:
    """H.264 with 3 B-frames and a keyframe every 12 frames (open GOPs allowed), from the sample."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        source = inp.streams.video[0]
        target = out.add_stream("libx264", rate=30, options={
            "x264-params": "bframes=3:b-pyramid=normal:keyint=12:min-keyint=12:scenecut=0:open-gop=1",
            "preset": "ultrafast", "crf": "30"})
        target.width, target.height, target.pix_fmt = 320, 180, "yuv420p"
        for k, frame in enumerate(inp.decode(source)):
            if k >= seconds * 30:
                break
            frame = frame.reformat(width=320, height=180, format="yuv420p")
            frame.pts, frame.time_base = k, Fraction(1, 30)
            for packet in target.encode(frame):
                out.mux(packet)
        for packet in target.encode():
            out.mux(packet)
    return dst


def intra_clip(src: Path, dst: Path, codec: str, seconds: float = 4.0, **writer) -> Path:
    """The sample scaled to 320x180 through OpenCV's writer: MJPEG (every frame a keyframe) or
    mp4v (a keyframe every 12 frames), as screen recordings and OpenCV's own outputs are."""
    cap = cv2.VideoCapture(str(src))
    out = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*codec), 30.0, (320, 180))
    for _ in range(int(seconds * 30)):
        ok, frame = cap.read()
        if not ok:
            break
        out.write(cv2.resize(frame, (320, 180)))
    cap.release()
    out.release()
    return dst


def vfr_clip(src: Path, dst: Path, frames: int = 90) -> Path:
    """Frames 33 ms and 50 ms apart in turn: a variable frame rate."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        source = inp.streams.video[0]
        target = out.add_stream("libx264", options={"preset": "ultrafast", "x264-params": "keyint=10"})
        target.width, target.height, target.pix_fmt = 320, 180, "yuv420p"
        target.codec_context.time_base = target.time_base = Fraction(1, 1000)
        t = 0
        for k, frame in enumerate(inp.decode(source)):
            if k >= frames:
                break
            frame = frame.reformat(width=320, height=180, format="yuv420p")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            t += 33 if k % 2 else 50
            for packet in target.encode(frame):
                out.mux(packet)
        for packet in target.encode():
            out.mux(packet)
    return dst


@pytest.mark.parametrize("sample_fps,size", [(0.0, 300), (7.0, 17)])
def test_segments_decode_the_same_pixels_as_one_sequential_pass_on_the_sample(sample_video, sample_fps, size):  # noqa: F811
    index = seek_index(sample_video)
    assert index.exact and index.keyframes[:3] == (0, 250, 500)  # GOP 250, B-frames
    reference = sequential_hashes(sample_video)
    plan = SamplingPlan(len(reference), 29.8333333, sample_fps)
    decoded = [item for a, b in split_samples(len(plan), size, 8) for item in segment_hashes(sample_video, plan, a, b)]
    assert [i for i, _ in decoded] == list(plan)
    assert [h for _, h in decoded] == [reference[i] for i in plan]


def test_segments_are_exact_on_a_bframe_clip_with_short_gops(tmp_path, sample_video):  # noqa: F811
    clip = bframe_clip(sample_video, tmp_path / "bframes.mp4")
    index = seek_index(clip)
    assert index.exact, index.reason
    assert len(index.keyframes) >= 8
    reference = sequential_hashes(clip)
    plan = SamplingPlan(len(reference), 30.0, 0.0)
    for first, end in [(0, 13), (13, 37), (37, 61), (61, len(plan)), (5, 6), (12, 13), (23, 24)]:
        got = segment_hashes(clip, plan, first, end)
        assert [h for _, h in got] == reference[first:end], (first, end)


@pytest.mark.parametrize("kind,sample_fps,at_most", [
    *[(kind, fps, share) for kind, share in (("mjpeg", None), ("mp4v", 0.3), ("bframes", 0.6), ("sample", 0.55))
      for fps in (1.0, 2.5)],
    ("mjpeg", 7.0, None), ("mjpeg", 15.0, None), ("bframes", 15.0, 1.0), ("sample", 15.0, 1.0)])
def test_sampled_frames_decoded_selectively_equal_a_sequential_decode(tmp_path, sample_video, kind,  # noqa: F811
                                                                      sample_fps, at_most):
    """MJPEG: every frame a keyframe; mp4v: a keyframe every 12 frames; bframes: H.264, 12-frame open
    GOPs with B-pyramids; the sample: H.264, a keyframe every 250 frames, half the frames non-reference."""
    clip = {"mjpeg": lambda: intra_clip(sample_video, tmp_path / "c.avi", "MJPG"),
            "mp4v": lambda: intra_clip(sample_video, tmp_path / "c.mp4", "mp4v"),
            "bframes": lambda: bframe_clip(sample_video, tmp_path / "c.mp4"),
            "sample": lambda: sample_video}[kind]()
    reference = sequential_hashes(clip)
    fps = cv2.VideoCapture(str(clip)).get(cv2.CAP_PROP_FPS)
    plan = SamplingPlan(len(reference), fps, sample_fps)
    decoded: list[int] = []
    got = segment_hashes(clip, plan, 0, len(plan), decoded)
    assert [i for i, _ in got] == list(plan)
    assert [h for _, h in got] == [reference[i] for i in plan]
    if at_most is None:  # intra-only: exactly the planned frames
        assert decoded == [len(plan)]
    else:  # a share of a sequential decode
        assert 0 < decoded[0] <= at_most * (plan.last_index + 1), decoded


def test_every_frame_sampling_decodes_sequentially(sample_video):  # noqa: F811
    plan = SamplingPlan(40, 29.8333333, 0.0)
    decoded: list[int] = []
    got = segment_hashes(sample_video, plan, 0, len(plan), decoded)
    assert [h for _, h in got] == sequential_hashes(sample_video)[:40] and decoded == [-1]


def test_a_variable_frame_rate_clip_is_not_split_and_the_sampling_block_says_why(tmp_path, sample_video,  # noqa: F811
                                                                                 pipeline_service):  # noqa: F811
    clip = vfr_clip(sample_video, tmp_path / "vfr.mp4")
    index = seek_index(clip)
    assert not index.exact and "variable" in index.reason
    split = pipeline_service.plan_split("yolo", clip, AnalysisOptions(sample_fps=0), 16)
    assert len(split.ranges) == 1 and split.samples > 16
    assert "cannot be seeked exactly" in split.note and "variable" in split.note


def test_one_pass_written_to_a_file_as_it_goes_is_the_documents_bytes(sample_video, pipeline_service):  # noqa: F811
    options = AnalysisOptions(sample_fps=1.0)
    whole = pipeline_service.run_on_file("yolo", sample_video, options).to_bytes()
    frames = json.loads(whole)["results"]
    with pipeline_service.run_to_file("yolo", sample_video, options) as written:
        assert written.file.read() == whole and written.frames == len(frames)
    assert written.file.closed
    batches: list = []
    header = pipeline_service.run_on_file("yolo", sample_video, options, frames_to=batches.append)
    assert header.results == [] and header.sampling.frames_analysed == len(frames)
    assert [len(b) for b in batches] == [min(8, len(frames) - k) for k in range(0, len(frames), 8)]
    note = "analysed in one pass: the video cannot be seeked exactly (variable frame rate)"
    with pipeline_service.run_to_file("yolo", sample_video, options, segmentation_note=note) as written:
        noted = json.loads(written.file.read())
    assert noted == {**json.loads(whole), "sampling": {**json.loads(whole)["sampling"], "segmentation_note": note}}


def test_merged_segments_give_the_bytes_of_one_pass(sample_video, pipeline_service):  # noqa: F811
    options = AnalysisOptions(sample_fps=1.0)
    whole = json.loads(pipeline_service.run_on_file("yolo", sample_video, options).to_bytes())
    split = pipeline_service.plan_split("yolo", sample_video, options, 16)
    assert len(split.ranges) == 3 and split.note is None
    parts = [pipeline_service.run_segment("yolo", sample_video, options, r.first_sample, r.end_sample)
             for r in split.ranges]
    # a segment given twice: its frames count once; the parts are read as the merge asks for them
    given = []
    with pipeline_service.merge_segments("yolo", options, (given.append(p) or p for p in
                                                           [parts[0], parts[1], parts[1], parts[2]])) as merged:
        data = merged.file.read()
    assert len(given) == 4 and merged.frames == len(whole["results"])
    assert merged.file.closed, "the merged file is temporary"
    doc = json.loads(data)
    assert data == ResultsDocument.model_validate_json(data).to_bytes(), "the document's own bytes"
    assert whole["tracks"], "the sample has tracked objects"
    assert json.dumps(doc["results"]) == json.dumps(whole["results"])
    assert json.dumps(doc["tracks"]) == json.dumps(whole["tracks"])
    assert doc["sampling"] == {**whole["sampling"], "segments": 3}
    assert doc["video"] == whole["video"] and doc["provenance"] == whole["provenance"]
    # on_bad_frames=skip: a segment that could not be decoded is left out and listed; none left: poison
    skipped = SkippedSegment.of(Segment("j", 1, split.ranges[1].first_sample, split.ranges[1].end_sample,
                                        split.ranges[1].first_frame, split.ranges[1].last_frame), "bad range")
    merged = json.loads(pipeline_service.merge_segments("yolo", options, [parts[0], skipped.to_bytes(),
                                                                          parts[2]]).file.read())
    left_out = set(range(split.ranges[1].first_frame, split.ranges[1].last_frame + 1))
    assert [f["frame_index"] for f in merged["results"]] == [f["frame_index"] for f in whole["results"]
                                                             if f["frame_index"] not in left_out]
    assert merged["sampling"]["skipped_ranges"] == [skipped.skipped.model_dump()]
    assert merged["sampling"]["frames_analysed"] == len(merged["results"])
    with pytest.raises(PoisonInput, match="no range of the video could be decoded: bad range"):
        pipeline_service.merge_segments("yolo", options, [skipped.to_bytes()])
    # out of order: refused, not merged into wrong tracks
    with pytest.raises(ValueError, match="segment order"):
        pipeline_service.merge_segments("yolo", options, [parts[0], parts[2], parts[1]])


def test_a_segment_reads_the_files_packets_once_before_it_decodes(sample_video, pipeline_service,  # noqa: F811
                                                                   monkeypatch):
    """Opening describes the file (OpenCV) and reads its packets once (``survey``: the parameter sets and the
    seek index in one pass); then the segment decodes from its keyframe. No other pass over the file."""
    from videojobs.worker.pipeline import video

    options = AnalysisOptions(sample_fps=1.0)
    split = pipeline_service.plan_split("yolo", sample_video, options, 16)
    second = split.ranges[1]
    opened: list[str] = []
    real_open, real_capture = av.open, cv2.VideoCapture
    monkeypatch.setattr(video.av, "open", lambda *a, **kw: opened.append("PyAV") or real_open(*a, **kw))
    monkeypatch.setattr(video.cv2, "VideoCapture", lambda *a: opened.append("OpenCV") or real_capture(*a))
    part = json.loads(pipeline_service.run_segment("yolo", sample_video, options, second.first_sample,
                                                   second.end_sample))
    assert sorted(opened) == ["OpenCV", "PyAV", "PyAV"], opened
    assert [f["frame_index"] for f in part["frames"]][:1] == [second.first_frame]
