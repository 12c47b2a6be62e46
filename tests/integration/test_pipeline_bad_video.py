"""Every kind of bad input fails fast with its own BadVideo error (built in tmp_path)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import cv2
import numpy as np
import pytest

from tests.media import VP9_REALTIME, concatenated_clip, synthetic_clip, vp9_rewritten
from tests.integration.conftest_pipeline import (  # noqa: F401  (fixtures)
    audio_only_mp4,
    faststart,
    model_path,
    pipeline_service,
    sample_video,
    write_clip,
)
from videojobs.common.errors import PoisonInput
from videojobs.worker.pipeline import (
    AbsurdDimensions,
    BadVideo,
    DecodeStalled,
    EmptyVideo,
    NoVideoStream,
    NotAVideo,
    OversizedPictureBuffer,
    TruncatedVideo,
)

pytestmark = pytest.mark.slow


def _random_bytes(tmp_path, sample):
    p = tmp_path / "random.mp4"
    p.write_bytes(np.random.default_rng(7).integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    return p


def _text_file(tmp_path, sample):
    p = tmp_path / "notes.mp4"
    p.write_text("this is not a video\n" * 50)
    return p


def _empty_file(tmp_path, sample):
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    return p


def _truncated_before_index(tmp_path, sample):
    data = sample.read_bytes()  # the sample keeps its index (moov) at the end
    p = tmp_path / "cut.mp4"
    p.write_bytes(data[: len(data) // 2])
    return p


def _truncated_media(tmp_path, sample):
    data = faststart(sample.read_bytes())  # index first, so the cut loses frames, not the index
    p = tmp_path / "cut-faststart.mp4"
    p.write_bytes(data[: len(data) // 2])
    return p


def _zero_frames(tmp_path, sample):
    p = tmp_path / "zero.mp4"
    cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 64)).release()
    return p


def _audio_only(tmp_path, sample):
    return audio_only_mp4(tmp_path / "audio.mp4")


def _too_small(tmp_path, sample):
    return write_clip(tmp_path / "tiny.mp4", [np.zeros((8, 8, 3), np.uint8)] * 3, fps=10)


def _too_wide(tmp_path, sample):
    return write_clip(tmp_path / "wide.mp4", [np.zeros((16, 9000, 3), np.uint8)] * 2, fps=10, fourcc="MJPG")


def _too_many_pixels(tmp_path, sample):
    # Each side is within bounds; the frame is 36 megapixels, over DCI 8K's 35.4.
    return write_clip(tmp_path / "square.avi", [np.zeros((6000, 6000, 3), np.uint8)] * 2, fps=10, fourcc="MJPG")


def _sixteen_reference_frames_at_8k(tmp_path, sample):
    # x264's veryslow preset asks for 16 at any size; the service keeps 5 frames of 8K (255 MiB).
    return synthetic_clip(tmp_path / "refs.mp4", "mp4", "libx264", (7680, 4320), frames=2,
                          options={"preset": "ultrafast", "x264-params": "ref=16"})


_NO_B_FRAMES = {"preset": "ultrafast", "x264-params": "ref=1:bframes=0"}


def _frames_grow_to_8192x8192_mid_stream(tmp_path, sample):
    # The header (and the first parameter set) say 640x360; the stream switches to 67 megapixels later.
    return concatenated_clip(tmp_path / "grows.mp4", "mp4", "libx264", [
        dict(size=(640, 360), frames=3, options=_NO_B_FRAMES), dict(size=(8192, 8192), frames=1, options=_NO_B_FRAMES)])


def _sixteen_reference_frames_from_the_middle(tmp_path, sample):
    return concatenated_clip(tmp_path / "refs-later.mkv", "matroska", "libx264", [
        dict(size=(640, 360), frames=3, options=_NO_B_FRAMES),
        dict(size=(7680, 4320), frames=1, options={"preset": "ultrafast", "x264-params": "ref=16:bframes=0"})])


def _eight_different_vp9_references_at_8k(tmp_path, sample):
    # Every frame refreshes another of VP9's 8 reference slots: the decoder keeps 8 different 8K frames.
    clip = synthetic_clip(tmp_path / "vp9.webm", "webm", "libvpx-vp9", (640, 360), frames=10, options=VP9_REALTIME)
    return vp9_rewritten(clip, tmp_path / "vp9-8.mkv", size=(7680, 4320), distinct_references=True)


CASES = [
    (_random_bytes, NotAVideo, "not a video"),
    (_text_file, NotAVideo, "not a video"),
    (_empty_file, NotAVideo, "empty"),
    (_truncated_before_index, TruncatedVideo, "cut off"),
    (_truncated_media, TruncatedVideo, "runs past the end"),
    (_zero_frames, EmptyVideo, "no"),
    (_audio_only, NoVideoStream, "no video track"),
    (_too_small, AbsurdDimensions, "8x8"),
    (_too_wide, AbsurdDimensions, "9000x16"),
    (_too_many_pixels, AbsurdDimensions, "6000x6000 (36.0 megapixels) is over the 35.4 megapixels"),
    (_sixteen_reference_frames_at_8k, OversizedPictureBuffer, "keep 16 reference frames of 7680x4320 8-bit 4:2:0 (759 MiB)"),
    (_frames_grow_to_8192x8192_mid_stream, AbsurdDimensions,
     "inside the H.264 stream (its sequence parameter sets), the frame size 8192x8192 (67.1 megapixels) is over"),
    (_sixteen_reference_frames_from_the_middle, OversizedPictureBuffer, "keep 16 reference frames of 7680x4320"),
    (_eight_different_vp9_references_at_8k, OversizedPictureBuffer,
     "the VP9 stream makes its decoder keep 8 different reference frames at once, up to 7680x4320 8-bit 4:2:0 (380 MiB)"),
]


@pytest.mark.parametrize("make, error, words", CASES, ids=[c[0].__name__.strip("_") for c in CASES])
def test_bad_video_fails_with_its_error(pipeline_service, sample_video, tmp_path, make, error, words):
    path = make(tmp_path, sample_video)
    started = time.monotonic()
    with pytest.raises(error) as info:
        pipeline_service.run_on_file("yolo_ocr", path)
    assert isinstance(info.value, BadVideo) and isinstance(info.value, PoisonInput)
    assert words in str(info.value)
    # Clients read the message: it names the problem, never the worker's file name.
    assert path.name not in str(info.value) and str(tmp_path) not in str(info.value)
    assert time.monotonic() - started < 10


def test_a_frame_size_that_grows_mid_stream_fails_on_either_decoding_path(pipeline_service, tmp_path):
    from videojobs.common.options import AnalysisOptions

    grows = _frames_grow_to_8192x8192_mid_stream(tmp_path, None)
    for options in (AnalysisOptions(sample_fps=0), AnalysisOptions(sample_fps=1)):  # OpenCV, then PyAV
        with pytest.raises(AbsurdDimensions, match="8192x8192"):
            pipeline_service.run_on_file("yolo", grows, options)
    # MPEG-4 part 2 has no parameter sets read at open: frames are decoded with libavcodec's max_pixels, which
    # refuses the 64 megapixel keyframe before it is allocated (OpenCV decoded and scaled it: 1.4 GiB, COMPLETED).
    mpeg4 = concatenated_clip(tmp_path / "grows.avi", "avi", "mpeg4", [
        dict(size=(640, 360), frames=3), dict(size=(8000, 8000), frames=12)])
    for options in (AnalysisOptions(sample_fps=0), AnalysisOptions(sample_fps=1)):  # every frame; frames 0 and 10
        with pytest.raises(AbsurdDimensions, match="inside the stream, the frame size changes to one the decoder "
                                                   "refused: over the 35.4 megapixels"):
            pipeline_service.run_on_file("yolo", mpeg4, options)


def test_a_stream_that_changes_size_within_the_bounds_is_analysed_at_its_headers_size(pipeline_service, tmp_path):
    import av

    from videojobs.common.options import AnalysisOptions
    from videojobs.worker.pipeline.video import FrameReader, SamplingPlan

    parts = [dict(size=(640, 360), frames=10, options=_NO_B_FRAMES), dict(size=(1280, 720), frames=10,
                                                                            options=_NO_B_FRAMES)]
    joined = concatenated_clip(tmp_path / "joined.mp4", "mp4", "libx264", parts)

    def frames(sample_fps):
        with FrameReader(joined, 10.0) as reader:
            info = reader.open()
            plan = SamplingPlan(info.frame_count, info.fps, sample_fps, 0)
            frames = {i: f for i, f in reader.frames(plan)}
            assert reader.selective == (sample_fps > 0)  # every frame: decoded in order; else by keyframes
            return frames

    every = frames(0)
    sampled = frames(5)
    assert sorted(every) == list(range(20)) and sorted(sampled) == list(range(0, 20, 2))
    assert {f.shape for f in every.values()} == {(360, 640, 3)}
    assert all(np.array_equal(every[i], f) for i, f in sampled.items())  # the same pixels either way
    with av.open(str(joined)) as container:  # frame 15 as coded: 1280x720, scaled down to the header's size
        native = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)][15]
    assert native.shape == (720, 1280, 3)
    halved = cv2.resize(native, (640, 360), interpolation=cv2.INTER_AREA)
    assert np.abs(halved.astype(int) - every[15].astype(int)).mean() < 3
    doc = pipeline_service.run_on_file("yolo", joined, AnalysisOptions(sample_fps=0))
    assert (doc.video.width, doc.video.height, doc.sampling.frames_analysed) == (640, 360, 20)


def test_a_stalled_decode_is_cut_off(model_path, sample_video, tmp_path):
    from videojobs.worker.pipeline import VideoFilePipelineService

    fifo = tmp_path / "stalled.mp4"
    os.mkfifo(fifo)
    release = threading.Event()

    def feed_then_hang():
        with open(fifo, "wb") as f:
            f.write(sample_video.read_bytes()[:200_000])
            f.flush()
            release.wait(60)

    feeder = threading.Thread(target=feed_then_hang, daemon=True)
    feeder.start()
    service = VideoFilePipelineService(str(model_path), tmp_path / "cache", decode_timeout_seconds=2.0)
    started = time.monotonic()
    try:
        with pytest.raises(DecodeStalled, match="no progress for 2 s"):
            service.run_on_file("yolo", fifo)
        assert time.monotonic() - started < 8
    finally:
        release.set()
        feeder.join(10)
        service.close()


class _SlowPackets:
    """A stream check that takes `seconds` over each packet (`stall`: over the `at`-th one only)."""

    def __init__(self, inner, seconds: float, at: int | None = None) -> None:
        self.inner, self.seconds, self.at, self.packets = inner, seconds, at, 0

    def add(self, packet) -> None:
        self.packets += 1
        if self.at is None or self.packets == self.at:
            time.sleep(self.seconds)
        self.inner.add(packet)

    def check(self) -> None:
        self.inner.check()


def test_opening_is_bounded_by_a_wait_without_progress_not_by_its_length(sample_video, monkeypatch):
    # Reading every packet of a long file at open (a day of video) may take longer than the decode timeout
    # while it makes progress all along; one packet that takes longer than the timeout is still cut off.
    from videojobs.worker.pipeline import picture_buffer
    from videojobs.worker.pipeline.video import FrameReader

    real = picture_buffer.stream_check
    monkeypatch.setattr(picture_buffer, "stream_check", lambda stream: _SlowPackets(real(stream), 0.003))
    with FrameReader(sample_video, timeout=1.0) as reader:  # 1189 packets: at least 3.6 s of progress
        assert reader.open().frame_count == 1189 and reader.seek_index.exact
    monkeypatch.setattr(picture_buffer, "stream_check", lambda stream: _SlowPackets(real(stream), 3.0, at=10))
    with FrameReader(sample_video, timeout=1.0) as reader:
        with pytest.raises(DecodeStalled, match="opening the video made no progress for 1 s"):
            reader.open()


def test_decoding_between_samples_far_apart_is_not_cut_off_while_it_makes_progress(sample_video, monkeypatch):
    from videojobs.worker.pipeline.video import FrameReader, SamplingPlan

    real = FrameReader._decoded

    def slow(self, *args):  # 50 ms a frame: the frames decoded between two samples take longer than the timeout
        for frame in real(self, *args):
            time.sleep(0.05)
            yield frame

    monkeypatch.setattr(FrameReader, "_decoded", slow)
    with FrameReader(sample_video, timeout=1.0) as reader:
        info = reader.open()
        plan = SamplingPlan(info.frame_count, info.fps, 0.05, 2)  # frames 0 and about 600
        frames = [index for index, _ in reader.frames(plan)]
        assert frames == list(plan) and reader.frames_decoded > 40  # over 2 s of decoding for the second


def test_a_reader_closed_before_the_end_has_stopped_its_decoder_so_the_process_exits_cleanly(sample_video):
    # The decoder thread used to be still tearing FFmpeg down when a short script's interpreter
    # finalized: the process aborted after its work was done (exit code 134, "terminate called
    # without an active exception"), every time on this plan (OpenCV's sequential decode, stopped early).
    script = textwrap.dedent("""
        import sys
        from pathlib import Path
        from videojobs.worker.pipeline.video import FrameReader, SamplingPlan
        with FrameReader(Path(sys.argv[1]), timeout=30) as reader:
            info = reader.open()
            frames = sum(1 for _ in reader.frames(SamplingPlan(info.frame_count, info.fps, 0, max_frames=128)))
        print(frames, reader._thread.is_alive())
    """)
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", script, str(sample_video)], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-600:]
        assert done.stdout.split() == ["128", "False"]


def test_data_running_out_mid_decode_is_truncation(tmp_path, sample_video, monkeypatch):
    """Without the container check (e.g. a non-MP4), decoding running dry still reports truncation."""
    import videojobs.worker.pipeline.video as video

    data = faststart(sample_video.read_bytes())
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(video, "mp4_layout", lambda p: None)
    with video.FrameReader(path, timeout=10) as reader:
        info = reader.open()
        with pytest.raises(TruncatedVideo, match="ends after frame"):
            for _ in reader.frames(video.SamplingPlan(info.frame_count, info.fps, 0)):
                pass
