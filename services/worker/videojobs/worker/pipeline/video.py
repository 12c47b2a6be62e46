"""Video decoding and frame sampling: OpenCV opens and describes a file, PyAV decodes its frames.

Decoding runs in one background thread per job that hands over only the sampled
frames through a small bounded queue, so memory stays flat whatever the video
length, decoding overlaps analysis, and a decode that stalls (a hung network
mount, a pathological file) is cut off by ``timeout`` instead of hanging the job.

Opening a file reads all its video packets once without decoding them (``survey``): their
timestamps and key flags make its seek index, and the parameter sets inside them are held to
the service's bounds (``picture_buffer``). When sampling skips frames and the file's frames
can be reached by seeking exactly, only what the planned frames need is decoded: the decoder jumps to
the keyframe before a planned frame whenever one lies ahead, and frames no other frame
refers to (non-reference B-frames) are left undecoded unless planned. At 1 sample per
second that decodes 1 frame of 30 of an intra-only file (MJPEG), about 6 of 30 with a
keyframe every 12 frames, and half of the shared sample's (a keyframe every 250 frames,
every other frame a non-reference B-frame). Otherwise (every frame sampled, or a file that
cannot be seeked exactly) every frame is decoded in order and counted as it comes out.

Both paths decode with PyAV, the same FFmpeg decoders OpenCV wraps, and convert to BGR the
way OpenCV does (swscale, bicubic), so the pixels equal those of a sequential OpenCV decode
(tests/integration/test_segments_pipeline.py checks them frame by frame; the documents of the
shared sample are byte-identical to OpenCV's). PyAV rather than OpenCV because it can give
libavcodec ``max_pixels``: a frame larger than the service analyses, in a stream whose header
said otherwise, is refused before it is allocated (OpenCV decoded an MPEG-4 stream that grew to
8000x8000 in its middle, 1.4 GiB at its peak, and scaled its frames down). A stream that changes
its size within the bounds is scaled to its header's size, as OpenCV did, on both paths.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import queue
import stat
import struct
import threading
import time
from array import array
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Optional

import av
import cv2
import numpy as np

from videojobs.common.cpus import usable_cpus
from videojobs.common.formats import FRAME_PIXELS_MAX
from videojobs.common.options import INT32_MAX
from videojobs.common.results import Sampling, VideoMetadata

from videojobs.worker.pipeline import picture_buffer
from videojobs.worker.pipeline.errors import (
    AbsurdDimensions,
    BadVideo,
    DecodeStalled,
    EmptyVideo,
    NoVideoStream,
    NotAVideo,
    TooManyFrames,
    TruncatedVideo,
)

MAX_FPS = 1000.0
# Decoded frames the decoder thread may have ready before they are taken (``FrameReader.frames(buffer=)``).
DECODE_AHEAD_FRAMES = 8
# A file whose frames run out earlier than its header says is accepted when the
# shortfall is within this share of the announced frames (container frame counts of
# some muxers are estimates); beyond it the file is reported truncated.
TRUNCATION_TOLERANCE = 0.02
# How long close() waits for the decoder thread to stop and release the file. A stop is seen
# within one frame or one 0.2 s queue wait; the bound only keeps close() from hanging on a
# thread blocked in FFmpeg, which FFmpeg's own read timeout ends later.
CLOSE_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about the video track."""

    width: int
    height: int
    fps: float
    frame_count: int
    codec: str

    @property
    def duration_ms(self) -> float:
        return self.frame_count * 1000.0 / self.fps if self.fps > 0 else 0.0

    def metadata(self, container: str) -> VideoMetadata:
        """Results-document form."""
        return VideoMetadata(
            width=self.width,
            height=self.height,
            fps=round(self.fps, 4),
            frame_count=self.frame_count,
            duration_ms=round(self.duration_ms, 3),
            codec=self.codec,
            container=container,
        )


class SamplingPlan:
    """Which frame indices are analysed: the frame nearest to every 1/sample_fps seconds.

    ``sample_fps == 0`` or a rate at or above the video's own means every frame.
    The plan is computed, never stored as a list, so it costs nothing for long videos.
    """

    def __init__(self, frame_count: int, fps: float, sample_fps: float, max_frames: int = 0) -> None:
        self.frame_count = max(0, int(frame_count))
        self.fps = float(fps)
        self.requested_sample_fps = float(sample_fps)
        every = sample_fps <= 0 or sample_fps >= fps
        self.every_frame = every
        # Frames between two samples, in (fractional) frame units.
        self.step = 1.0 if every else self.fps / float(sample_fps)
        count = self._count_within(self.frame_count)
        self.max_frames = int(max_frames)
        self.count = min(count, self.max_frames) if self.max_frames > 0 else count

    def index(self, k: int) -> int:
        """The frame index of the k-th sample."""
        if self.every_frame:
            return k
        # floor(x + 0.5) rather than round(): banker's rounding would make the
        # choice between two equally near frames depend on parity.
        return int(math.floor(k * self.step + 0.5))

    def _count_within(self, n: int) -> int:
        if n <= 0:
            return 0
        if self.every_frame:
            return n
        k = int((n - 1) / self.step)
        while k >= 0 and self.index(k) >= n:
            k -= 1
        while self.index(k + 1) < n:
            k += 1
        return k + 1

    @property
    def effective_sample_fps(self) -> float:
        """Analysed frames per second of video."""
        return self.fps / self.step if self.fps > 0 else 0.0

    @property
    def last_index(self) -> int:
        return self.index(self.count - 1) if self.count else -1

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[int]:
        return (self.index(k) for k in range(self.count))

    def sampling(self, frames_analysed: int) -> Sampling:
        """Results-document form."""
        return Sampling(
            sample_fps=round(self.effective_sample_fps, 4),
            frame_step=round(self.step, 4),
            max_frames=self.max_frames,
            frames_analysed=frames_analysed,
            requested_sample_fps=round(self.requested_sample_fps, 4),
            every_frame=self.every_frame,
            first_frame_index=self.index(0) if frames_analysed else None,
            last_frame_index=self.index(frames_analysed - 1) if frames_analysed else None,
        )


def fourcc_to_str(value: float) -> str:
    """OpenCV's numeric FOURCC as text ("avc1", "mp4v"); "" when unknown."""
    code = int(value) & 0xFFFFFFFF
    if code == 0:
        return ""
    chars = bytes((code >> (8 * i)) & 0xFF for i in range(4))
    text = chars.decode("latin-1")
    return text if all(32 <= b < 127 for b in chars) else f"0x{code:08x}"


@dataclass(frozen=True)
class Mp4Layout:
    """What the box headers of an ISO-BMFF file say."""

    tracks: tuple[tuple[str, int], ...]  # (handler type, sample count or -1 if unknown)
    has_moov: bool
    cut_short: bool  # a box runs past the end of the file


def mp4_layout(path: Path) -> Optional[Mp4Layout]:
    """Tracks of an ISO-BMFF file, or None if it is not one (or not a regular file).

    Used to explain why OpenCV could not open a file (an audio-only MP4, a video
    track without samples, a file cut before its index); reads box headers only.
    """
    containers = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}
    tracks: list[list] = []
    state = {"moov": False, "cut": False}

    def walk(f, pos: int, end: int, depth: int) -> None:
        while pos + 8 <= end:
            f.seek(pos)
            header = f.read(16)
            if len(header) < 8:
                return
            size, kind = struct.unpack(">I4s", header[:8])
            hdr = 8
            if size == 1:
                if len(header) < 16:
                    return
                size, hdr = struct.unpack(">Q", header[8:16])[0], 16
            elif size == 0:
                size = end - pos
            if size < hdr:
                return
            if pos + size > end:
                state["cut"] = True
            if kind == b"moov":
                state["moov"] = True
            if kind == b"trak":
                tracks.append(["", -1])
            if kind in containers and depth < 5:
                walk(f, pos + hdr, min(pos + size, end), depth + 1)
            elif kind == b"hdlr" and tracks:
                f.seek(pos + hdr + 8)  # version/flags, pre_defined
                tracks[-1][0] = f.read(4).decode("latin-1")
            elif kind == b"stsz" and tracks:
                f.seek(pos + hdr + 8)  # version/flags, sample_size
                raw = f.read(4)
                if len(raw) == 4:
                    tracks[-1][1] = struct.unpack(">I", raw)[0]
            pos += size

    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            return None
        with path.open("rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[4:8] != b"ftyp":
                return None
            walk(f, 0, st.st_size, 0)
    except OSError:
        return None
    return Mp4Layout(tuple((h, n) for h, n in tracks), state["moov"], state["cut"])


def describe_unopenable(path: Path) -> Exception:
    """The most specific error for a file OpenCV could not open."""
    try:
        st = path.stat()
    except OSError:
        return NotAVideo("the input file cannot be read")
    if stat.S_ISREG(st.st_mode) and st.st_size == 0:
        return NotAVideo("the file is empty (0 bytes)")
    layout = mp4_layout(path)
    if layout is None:
        return NotAVideo("the file is not a video the decoder can read (corrupt, or an unsupported codec or container)")
    if not layout.has_moov:
        if layout.cut_short:
            return TruncatedVideo("the MP4 is cut off: it ends inside its media data, before its index (truncated upload?)")
        return NotAVideo("the MP4 has no index (moov box); it cannot be decoded")
    handlers = [h for h, _ in layout.tracks]
    if not handlers:
        return EmptyVideo("the MP4 has no tracks: it holds no frames")
    if "vide" not in handlers:
        kinds = ", ".join(sorted(set(handlers))) or "none"
        return NoVideoStream(f"the file has no video track (tracks: {kinds})")
    if all(n == 0 for h, n in layout.tracks if h == "vide"):
        return EmptyVideo("the video track has no frames")
    if layout.cut_short:
        return TruncatedVideo("the MP4 is cut off before the end of its boxes (truncated upload?)")
    return NotAVideo("the MP4's video track cannot be decoded (corrupt or an unsupported codec)")


def check_info(path: Path, info: VideoInfo) -> None:
    """Reject videos the pipeline must not try to analyse."""
    picture_buffer.check_frame_size(info.width, info.height)
    if not (0 < info.fps <= MAX_FPS) or not math.isfinite(info.fps):
        raise NotAVideo(f"the frame rate {info.fps!r} is not usable")
    if info.frame_count <= 0:
        raise EmptyVideo("the video track has no frames")
    if info.frame_count > INT32_MAX:
        raise TooManyFrames(
            f"the video claims {info.frame_count} frames; the service analyses at most {INT32_MAX} per video"
        )


_END = object()


@dataclass(frozen=True)
class SeekIndex:
    """Whether a file's frames can be reached by seeking exactly, and where its keyframes are.

    ``keyframes`` are frame indices in presentation order (the order a sequential decode
    returns frames). ``exact`` is False, with ``reason``, when frame numbers and timestamps do
    not map one to one (a variable frame rate, a packet count unlike the header's, missing
    timestamps): then seeking could land on another frame than a sequential decode counts.
    """

    exact: bool
    keyframes: tuple[int, ...] = ()
    reason: str = ""

    def keyframe_at_or_before(self, frame_index: int) -> int:
        at = bisect.bisect_right(self.keyframes, frame_index)
        return self.keyframes[at - 1] if at else 0


def survey(path: Path, fps: float, announced: int, alive: Callable[[], None] = lambda: None) -> SeekIndex:
    """One pass of the demuxer over the video's packets, nothing decoded: what they make the decoder keep is
    held to the service's bounds (``picture_buffer.stream_check``: H.264 / HEVC parameter sets, VP9 frame
    headers; it raises), and the packets' timestamps and key flags make the seek index, given the frame rate
    and count the header announces. `alive` is called at every packet (progress, for a caller's timeout)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        references = picture_buffer.stream_check(stream)
        origin = stream.start_time or 0
        to_ms = float(stream.time_base or 0) * 1000.0
        stamps = array("d")
        keys: list[float] = []
        timed = True
        for packet in container.demux(stream):
            alive()
            references.add(packet)
            at = packet.pts if packet.pts is not None else packet.dts
            if at is None:
                timed = timed and not packet.size  # (the demuxer ends with an empty packet of no time)
                continue
            stamps.append((at - origin) * to_ms)
            if packet.is_keyframe:
                keys.append(stamps[-1])
    references.check()
    if not timed:
        return SeekIndex(False, reason="the video's packets carry no usable timestamps")
    return _seek_index(stamps, keys, fps, announced)


def _seek_index(stamps: "array[float]", keys: list[float], fps: float, announced: int) -> SeekIndex:
    """Whether seeking is exact, from the packets' times (ms from the stream's start) and the keyframes' among
    them. In NumPy: a day of 30 fps video is 2.6 million packets (as Python floats, a set and a rank dict,
    their checks took about 100 MiB more at open)."""
    if not stamps or not (fps > 0) or not math.isfinite(fps):
        return SeekIndex(False, reason="the video's packets carry no usable timestamps")
    if len(stamps) != announced:
        return SeekIndex(False, reason=f"the container announces {announced} frames but holds {len(stamps)} packets")
    order = np.sort(np.frombuffer(stamps, dtype=np.float64))
    if np.any(order[1:] == order[:-1]):
        return SeekIndex(False, reason="packets share timestamps")
    frame_ms = 1000.0 / fps
    if np.any(np.abs(np.diff(order) - frame_ms) > 0.05 * frame_ms):
        return SeekIndex(False, reason="the frame rate is variable (frames are not evenly spaced in time)")
    if abs(order[0]) > 0.5 * frame_ms:
        return SeekIndex(False, reason="the first frame does not start at time 0")
    keyframes = tuple(sorted(int(rank) for rank in np.searchsorted(order, keys)))  # each key's own time's rank
    if not keyframes or keyframes[0] != 0:
        return SeekIndex(False, reason="the first frame is not a keyframe")
    return SeekIndex(True, keyframes)


class FrameReader:
    """Decodes one file in a background thread and yields the planned frames in order.

    Usage: ``reader = FrameReader(path, timeout); info = reader.open()``, then
    ``for index, frame in reader.frames(plan)``; always ``close()`` (or use ``with``).
    Every wait on the decoder is bounded: the thread must make progress (read or decode a packet) at
    least every ``timeout`` seconds, else DecodeStalled is raised and the (daemon) thread abandoned.
    """

    def __init__(self, path: Path, timeout: float, threads: int = 0,
                 thread_cap: Optional[Callable[[int, int], int]] = None) -> None:
        self.path = Path(path)
        self.threads = max(0, int(threads))  # FFmpeg decoder threads (0: one per usable core in order; 1 when skipping)
        # At most this many for a frame size: FFmpeg's frame threads each decode a frame of their own
        # (47 MiB at 7680x4320), so on many cores they would hold many frames.
        self.thread_cap = thread_cap
        self.decoder_threads = 0  # what the decoder was opened with (after thread_cap)
        self.timeout = float(timeout)
        self._queue: "queue.Queue[object]" = queue.Queue(maxsize=DECODE_AHEAD_FRAMES)
        self._plan_ready = threading.Event()
        self._stop = threading.Event()
        self._plan: Optional[SamplingPlan] = None
        self._range: tuple[int, int] = (0, 0)
        self.seek_index = SeekIndex(False, reason="not opened")  # made at open (``survey``)
        self._thread: Optional[threading.Thread] = None
        self.decode_seconds = 0.0  # time the decoder thread spent decoding and converting
        self.frames_decoded = 0  # frames the decoder produced (sampled or not)
        self.selective = False  # whether only what the plan needs was decoded (PyAV, by keyframes)
        self._stalled = False  # the consumer gave up waiting: the thread may never return
        self._alive_at = 0.0  # when the decoder thread last made progress (time.monotonic)

    # -- public ---------------------------------------------------------------------
    def open(self) -> VideoInfo:
        """Open the file and read its metadata (bounded by the timeout)."""
        self._thread = threading.Thread(target=self._run, name=f"decode-{self.path.name}", daemon=True)
        self._thread.start()
        item = self._get("opening the video")
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, VideoInfo)
        layout = mp4_layout(self.path)
        if layout is not None and layout.cut_short:
            # Caught here rather than frames later when decoding runs dry.
            raise TruncatedVideo("the MP4 is cut off: its media data runs past the end of the file (truncated upload?)")
        return item

    def frames(self, plan: SamplingPlan, first: int = 0, end: Optional[int] = None,
               buffer: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(frame_index, bgr_frame)`` for the planned samples ``first..end`` (default: all), in order.

        Where the file's ``seek_index`` is exact, decoding starts at the keyframe before the first
        wanted frame and jumps to the keyframe before a later one when that saves decoding; every
        frame still equals a sequential decode's. Otherwise samples after the first (``first > 0``)
        are reached by decoding from frame 0. `buffer`: frames decoded ahead at most
        (0: ``DECODE_AHEAD_FRAMES``), e.g. fewer for large frames.
        """
        if buffer > 0:  # the decoder thread waits for the plan before it puts a frame
            self._queue = queue.Queue(maxsize=buffer)
        self._plan = plan
        self._range = (first, len(plan) if end is None else min(end, len(plan)))
        self._plan_ready.set()
        while True:
            item = self._get("decoding the video")
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]

    def close(self) -> None:
        """Stop the decoder thread and wait until it has let go of the file (it releases the capture
        itself); a thread stuck in a decode that stalled is abandoned instead.

        Waiting matters at exit: a decoder thread still tearing FFmpeg down when the interpreter
        finalizes is stopped inside OpenCV's C++ code, and the process aborts ("terminate called
        without an active exception", exit code 134) after its work is done."""
        self._stop.set()
        self._plan_ready.set()
        # Unblock a producer waiting on a full queue.
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        if self._thread is not None and not self._stalled and self._thread is not threading.current_thread():
            self._thread.join(CLOSE_WAIT_SECONDS)

    def __enter__(self) -> "FrameReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------
    def _get(self, what: str) -> object:
        """The decoder thread's next item, waiting as long as the thread makes progress (a packet read, a
        frame decoded) at least every ``timeout`` seconds: opening a day of video, or decoding the frames
        between two samples far apart, may take longer than that, a decoder stuck in one call may not."""
        self._alive()
        while True:
            remaining = self._alive_at + self.timeout - time.monotonic()
            if remaining <= 0:
                self._stop.set()
                self._stalled = True
                raise DecodeStalled(
                    f"{what} made no progress for {self.timeout:g} s; giving up"
                )
            try:
                return self._queue.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                if self._thread is not None and not self._thread.is_alive() and self._queue.empty():
                    return _END

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        cap = None
        try:
            t0 = time.perf_counter()
            cap = self._capture()
            if not cap.isOpened():
                self._put(describe_unopenable(self.path))
                return
            info = VideoInfo(
                width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                fps=float(cap.get(cv2.CAP_PROP_FPS)),
                frame_count=int(cap.get(cv2.CAP_PROP_FRAME_COUNT)),
                codec=fourcc_to_str(cap.get(cv2.CAP_PROP_FOURCC)),
            )
            # Let go of OpenCV's view first: the frames are decoded by PyAV (with libavcodec's bound on a
            # frame's size), and each demuxer holds the file's index (220 MiB for a day of MP4).
            cap.release()
            cap = None
            check_info(self.path, info)
            self.seek_index = survey(self.path, info.fps, info.frame_count, self._alive)
            self.decode_seconds += time.perf_counter() - t0
            if not self._put(info):
                return
            self._plan_ready.wait()
            plan = self._plan
            if plan is None or self._stop.is_set():
                return
            first, end = self._range
            targets = (plan.index(k) for k in range(first, end))
            if self.seek_index.exact and (first > 0 or not plan.every_frame):
                self.selective = True
                self._decode_skipping(targets, plan, info, self.seek_index)
            else:
                self._decode(targets, plan, info)
        except BadVideo as exc:
            self._put(exc)
        except Exception as exc:  # reported to the consumer, never lost in the thread
            self._put(NotAVideo(f"decoding failed: {type(exc).__name__}"))
        finally:
            if cap is not None:
                cap.release()

    @property
    def _ffmpeg_timeout(self) -> float:
        # FFmpeg's own bound is set a little later than ours: ours raises
        # DecodeStalled, FFmpeg's then lets this abandoned thread end.
        return self.timeout + 5.0

    def _capture(self) -> "cv2.VideoCapture":
        """OpenCV's view of the file, to describe it (it decodes no frame: one thread is enough)."""
        timeout_ms = max(1, int(self._ffmpeg_timeout * 1000))
        return cv2.VideoCapture(
            str(self.path),
            cv2.CAP_FFMPEG,
            [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms,
             cv2.CAP_PROP_N_THREADS, 1],
        )

    def _decode(self, targets: Iterator[int], plan: SamplingPlan, info: VideoInfo) -> None:
        """Every frame from the first, counted in the order the decoder gives them (as OpenCV counts them:
        right for files whose timestamps do not number their frames); only the planned ones are converted."""
        target = next(targets, None)
        index = 0
        with self._container(self._threads(info, usable_cpus())) as (container, stream):
            frames = self._decoded(container, stream, lambda packet: True)
            while target is not None and not self._stop.is_set():
                t0 = time.perf_counter()
                frame = next(frames, None)
                image = None if frame is None or index != target else self._image(frame, info)
                self.decode_seconds += time.perf_counter() - t0
                if frame is None:
                    self._put(self._early_end(index, plan, info))
                    return
                if index == target:
                    if not self._emit(index, image, info):
                        return
                    target = next(targets, None)
                index += 1
                self.frames_decoded = index
        self._put(_END)

    def _threads(self, info: VideoInfo, default: int) -> int:
        """Decoder threads: as asked (else `default`), and no more than ``thread_cap`` allows at this size."""
        threads = self.threads or default
        if self.thread_cap is not None:
            threads = min(threads, max(1, self.thread_cap(info.width, info.height)))
        return threads

    @contextlib.contextmanager
    def _container(self, threads: int) -> Iterator[tuple["av.container.InputContainer", "av.VideoStream"]]:
        """The file opened with PyAV for decoding its first video stream on `threads` threads, with
        libavcodec's bound on a frame's size (``max_pixels``): a frame larger than the service analyses is
        refused before it is allocated, whatever the codec and whatever the header said."""
        self.decoder_threads = threads
        with av.open(str(self.path), timeout=self._ffmpeg_timeout) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            stream.thread_count = threads
            stream.codec_context.options = {"max_pixels": str(picture_buffer.DECODER_PIXELS_MAX)}
            yield container, stream

    def _alive(self) -> None:
        self._alive_at = time.monotonic()

    def _decoded(self, container: "av.container.InputContainer", stream: "av.VideoStream",
                 wanted: Callable[["av.Packet"], bool]) -> Iterator["av.VideoFrame"]:
        """The frames of `stream` from where the container stands; a packet not `wanted` may be dropped by the
        decoder if no other frame refers to it. A damaged packet is skipped, as FFmpeg's own tools and OpenCV
        do; a frame size the decoder refused is AbsurdDimensions."""
        codec = stream.codec_context
        for packet in container.demux(stream):
            self._alive()
            codec.skip_frame = "DEFAULT" if wanted(packet) else "NONREF"
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                if codec.width and codec.height:  # H.264 / HEVC keep the size the decoder refused
                    picture_buffer.check_frame_size(codec.width, codec.height, where="inside the stream, ")
                continue
            except av.error.ArgumentError:
                # What libavcodec's own size check answers (EINVAL), the size forgotten (MPEG-4, VP9).
                raise AbsurdDimensions(
                    "inside the stream, the frame size changes to one the decoder refused: over the "
                    f"{FRAME_PIXELS_MAX / 1e6:.1f} megapixels of 8192x4320 (DCI 8K) the service analyses"
                ) from None
            yield from frames

    @staticmethod
    def _image(frame: "av.VideoFrame", info: VideoInfo) -> np.ndarray:
        """The frame in BGR at the header's size: a stream that changes its size in the middle (within the
        bounds) is scaled back to it, as OpenCV does, so boxes keep one frame of reference."""
        return frame.to_ndarray(width=info.width, height=info.height, format="bgr24", interpolation="BICUBIC")

    def _decode_skipping(self, targets: Iterator[int], plan: SamplingPlan, info: VideoInfo, index: SeekIndex) -> None:
        """The planned frames with PyAV: jump to the keyframe before a wanted frame whenever one lies
        ahead of the decoder (on an intra-only stream: to the frame itself), and let the decoder drop
        frames that nothing refers to unless they are planned."""
        first, end = self._range
        # One decoder thread unless told otherwise: what this path decodes is mostly reference frames
        # between samples, and FFmpeg's frame threads cost CPU the detector's streams need
        # (1.2-2.5 core-ms per analysed frame more on the shared sample and a 1280x720 mp4v clip).
        with self._container(self._threads(info, 1)) as (container, stream):
            origin = stream.start_time or 0
            tick = stream.time_base
            fps = Fraction(info.fps).limit_denominator(1_000_000)

            def frame_at(pts: int) -> int:
                return math.floor((pts - origin) * tick * fps + Fraction(1, 2))

            def planned(frame_index: int) -> bool:
                k = round(frame_index / plan.step)
                return any(first <= j < end and plan.index(j) == frame_index for j in (k - 1, k, k + 1))

            def wanted(packet: "av.Packet") -> bool:
                # A non-reference frame changes no other frame: decoding it is needed only if planned.
                return packet.pts is None or planned(frame_at(packet.pts))

            def decoded(key: int) -> Iterator[tuple[int, "av.VideoFrame"]]:
                if key > 0:
                    container.seek(origin + math.floor(key / fps / tick), stream=stream, backward=True)
                for frame in self._decoded(container, stream, wanted):
                    if frame.pts is None:
                        raise NotAVideo("a decoded frame has no timestamp")
                    yield frame_at(frame.pts), frame

            source: Optional[Iterator[tuple[int, "av.VideoFrame"]]] = None
            position = 0  # the frame a forward decode reaches next
            for target in targets:
                if self._stop.is_set():
                    return
                key = index.keyframe_at_or_before(target)
                if source is None or key > position:
                    source, position = decoded(key), key
                t0 = time.perf_counter()
                image = None
                for at, frame in source:
                    self.frames_decoded += 1
                    position = at + 1
                    if at == target:
                        image = self._image(frame, info)
                        break
                    if at > target:
                        raise NotAVideo(f"frame {target} is not where the video's index puts it")
                self.decode_seconds += time.perf_counter() - t0
                if image is None:
                    self._put(self._early_end(position, plan, info))
                    return
                if not self._emit(target, image, info):
                    return
        self._put(_END)

    def _emit(self, index: int, frame: Optional[np.ndarray], info: VideoInfo) -> bool:
        if frame is None or frame.shape[0] != info.height or frame.shape[1] != info.width:
            shape = None if frame is None else frame.shape
            self._put(NotAVideo(f"frame {index} decoded as {shape}, not {info.width}x{info.height}"))
            return False
        return self._put((index, frame))

    def _early_end(self, index: int, plan: SamplingPlan, info: VideoInfo) -> object:
        """The stream ran out at `index` before the plan was done."""
        if index == 0:
            return EmptyVideo("no frame could be decoded")
        shortfall = info.frame_count - index
        if shortfall <= max(1, TRUNCATION_TOLERANCE * info.frame_count):
            return _END  # frame count was an estimate; the frames before are fine
        return TruncatedVideo(
            f"the data ends after frame {index} of the "
            f"{info.frame_count} its header announces (file truncated or corrupt)"
        )
