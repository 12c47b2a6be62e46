"""The hostile corpus: malformed and unusual video files, each with the outcome the service must give.

Every file is built at run time from the shared sample (PyAV, OpenCV or byte surgery,
``tests/media.py``); nothing is stored in the repository. ``run_corpus`` sends each one
through REST (``POST /video/submit``) to a running service and follows the job to its
end; ``check_rows`` says which promises broke: the expected outcome, never a 5xx, no
job left unfinished past the bound. ``scripts/hostile_corpus.py`` and
``tests/hostile/test_corpus.py`` both use this module.
"""

from __future__ import annotations

import gzip
import os
import struct
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import httpx

from tests.media import (
    audio_only,
    audio_only_mp4,
    concatenated_clip,
    duplicate_box,
    faststart,
    find_box,
    flip_bits,
    frame_count_bomb,
    gif_file,
    patch_box,
    remux,
    rename_box,
    synthetic_clip,
    transcode,
    video_stbl,
    VP9_REALTIME,
    vp9_rewritten,
    wav_file,
    write_clip,
    zip_file,
)

FINAL = ("COMPLETED", "FAILED", "CANCELLED")
# Every job: the detector only, two frames at most (the corpus is about input handling, not analysis).
JOB_OPTIONS = {"pipeline_id": "yolo", "max_frames": "2", "sample_fps": "1"}
# The service runs with this upload limit, so one corpus file can exceed it cheaply.
MAX_UPLOAD_BYTES = 4 * 1024 * 1024
# The service's bound on a decode that makes no progress (a stalled file fails after it).
DECODE_TIMEOUT_SECONDS = 30  # the default; none of the files stalls, so a busy machine must not look like one
# Settings of the service the corpus runs against (`videojobs serve`, embedded defaults).
SERVICE_ENV = {
    "VIDEOJOBS_AUTH": "none",
    "VIDEOJOBS_WORKER_THREADS": "2",
    "VIDEOJOBS_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
    "VIDEOJOBS_DECODE_TIMEOUT_SECONDS": str(DECODE_TIMEOUT_SECONDS),
    "VIDEOJOBS_LOG_FORMAT": "text",
}


@dataclass(frozen=True)
class Expect:
    """An outcome: an HTTP refusal at submit (`status` + problem slug), or the job's final state
    (`COMPLETED`, or `FAILED` with a substring of its error_message)."""

    outcome: str  # "COMPLETED", "FAILED" or an HTTP status such as "415"
    detail: str = ""  # problem slug (refusals) or error_message substring (FAILED)

    def __str__(self) -> str:
        if self.outcome == "COMPLETED":
            return "COMPLETED"
        if self.outcome == "FAILED":
            return f"FAILED ~ {self.detail!r}"
        return f"{self.outcome} {self.detail}"

    def matches(self, observed: "Observed") -> bool:
        if self.outcome != observed.outcome:
            return False
        if self.outcome == "FAILED":
            return self.detail.lower() in observed.detail.lower()
        return self.outcome == "COMPLETED" or observed.detail == self.detail


COMPLETED = Expect("COMPLETED")


def failed(words: str) -> Expect:
    return Expect("FAILED", words)


def refused(status: int, slug: str) -> Expect:
    return Expect(str(status), slug)


@dataclass
class Observed:
    outcome: str
    detail: str = ""

    def __str__(self) -> str:
        if self.outcome == "FAILED":
            return f"FAILED: {self.detail}"
        return f"{self.outcome} {self.detail}".strip()


Builder = Callable[[Path, Path], Path]


@dataclass(frozen=True)
class Case:
    name: str  # the file name uploaded (unless `upload_name`)
    what: str
    build: Builder  # (sample, destination) -> the file written
    expect: Expect
    options: dict[str, str] = field(default_factory=dict)  # on top of JOB_OPTIONS
    upload_name: str | None = None
    content_type: str = "video/mp4"


# -- builders -----------------------------------------------------------------------------
def _bytes(make: Callable[[bytes], bytes]) -> Builder:
    def build(sample: Path, dst: Path) -> Path:
        dst.write_bytes(make(sample.read_bytes()))
        return dst
    return build


def _fast(make: Callable[[bytes], bytes]) -> Builder:
    """Byte surgery on the sample with its index (moov) first."""
    return _bytes(lambda data: make(faststart(data)))


def _cut(fraction: float, index_first: bool = False) -> Builder:
    def make(data: bytes) -> bytes:
        data = faststart(data) if index_first else data
        return data[:max(1, int(len(data) * fraction))]
    return _bytes(make)


def _copy(sample: Path, dst: Path) -> Path:
    dst.write_bytes(sample.read_bytes())
    return dst


def _mdat_range(data: bytes) -> tuple[int, int]:
    pos, size, hdr = find_box(data, [b"mdat"])[-1]
    return pos + hdr, pos + size


def _flip_media(data: bytes) -> bytes:
    start, end = _mdat_range(data)
    return flip_bits(data, 2000, start, end, seed=9)


def _without_mdat(data: bytes) -> bytes:
    pos, size, _ = find_box(data, [b"mdat"])[-1]
    return data[:pos] + data[pos + size:]


def _zero_media(data: bytes) -> bytes:
    start, end = _mdat_range(data)
    return data[:start] + bytes(end - start) + data[end:]


def _flip_index(data: bytes) -> bytes:
    pos, size, _ = find_box(data, [b"moov"])[-1]
    return flip_bits(data, 64, pos + 8, pos + size, seed=3)


def _cut_at_index(data: bytes) -> bytes:
    pos, _, _ = find_box(data, [b"moov"])[-1]
    return data[:pos + 600]  # the index starts, then breaks off


def _top_box_size(kind: bytes, size: int) -> Callable[[bytes], bytes]:
    def make(data: bytes) -> bytes:
        return patch_box(data, [kind], 0, ">I", size)
    return make


def _largesize_mdat(data: bytes) -> bytes:
    """mdat declared with a 64-bit size of 2^62 (the 8 bytes come out of the free box before it)."""
    free = find_box(data, [b"free"])[-1][0]
    mdat_pos, mdat_size, _ = find_box(data, [b"mdat"])[-1]
    assert free + 8 == mdat_pos
    head = struct.pack(">I4sQ", 1, b"mdat", 1 << 62)
    return data[:free] + head + data[mdat_pos + 8:]


def _no_ftyp(data: bytes) -> bytes:
    return data[find_box(data, [b"free"])[-1][0]:]  # starts with 'free', offsets shifted: chunk offsets lie


def _moov_first_no_ftyp(data: bytes) -> bytes:
    fast = faststart(data)
    moov = find_box(fast, [b"moov"])[-1][0]
    return rename_box(fast[:moov], [b"ftyp"], b"free") + fast[moov:]  # ftyp turned into padding


def _wide_box_first(data: bytes) -> bytes:
    """An old QuickTime camera's layout: a 'wide' box before everything (chunk offsets patched)."""
    out = bytearray(struct.pack(">I4s", 8, b"wide") + data)
    chain = find_box(bytes(out), video_stbl(b"stco"))
    pos = chain[-1][0]
    (count,) = struct.unpack(">I", out[pos + 12:pos + 16])
    for i in range(count):
        at = pos + 16 + 4 * i
        struct.pack_into(">I", out, at, struct.unpack(">I", out[at:at + 4])[0] + 8)
    return bytes(out)


def _transcode(container: str, codec: str, options: dict[str, str] | None = None, seconds: float = 2.0,
               pix_fmt: str = "yuv420p") -> Builder:
    def build(sample: Path, dst: Path) -> Path:
        return transcode(sample, dst, container, codec, seconds=seconds, options=options, pix_fmt=pix_fmt)
    return build


def _remux(container: str) -> Builder:
    return lambda sample, dst: remux(sample, dst, container)


def _synthetic(container: str, codec: str, size: tuple[int, int], **kw) -> Builder:
    return lambda sample, dst: synthetic_clip(dst, container, codec, size, **kw)


def _concatenated(container: str, *parts: tuple[tuple[int, int], int, str]) -> Builder:
    """H.264 parts (size, frames, x264 params) one after the other in one track: the header is the first's."""
    specs = [dict(size=size, frames=frames, options={"preset": "ultrafast", "x264-params": f"{params}:bframes=0"})
             for size, frames, params in parts]
    return lambda sample, dst: concatenated_clip(dst, container, "libx264", specs)


def _vp9_rewritten(**rewrite) -> Builder:
    """A small libvpx VP9 clip with its frame headers rewritten (``vp9_rewritten``)."""
    def build(sample: Path, dst: Path) -> Path:
        clip = synthetic_clip(dst.with_suffix(".src.webm"), "webm", "libvpx-vp9", (640, 360), frames=10,
                              options=VP9_REALTIME)
        try:
            return vp9_rewritten(clip, dst, **rewrite)
        finally:
            clip.unlink()
    return build


def _then(first: Builder, make: Callable[[bytes], bytes]) -> Builder:
    def build(sample: Path, dst: Path) -> Path:
        first(sample, dst)
        dst.write_bytes(make(dst.read_bytes()))
        return dst
    return build


def _avi_dimensions(width: int, height: int) -> Callable[[bytes], bytes]:
    """The AVI's headers (avih, strh frame, strf BITMAPINFOHEADER) claim another frame size."""
    def make(data: bytes) -> bytes:
        out = bytearray(data)
        avih, strf = out.find(b"avih"), out.find(b"strf")
        struct.pack_into("<II", out, avih + 8 + 32, width, height)  # dwWidth, dwHeight
        struct.pack_into("<ii", out, strf + 8 + 4, width, height)  # biWidth, biHeight
        return bytes(out)
    return make


def _gzip(sample: Path, dst: Path) -> Path:
    dst.write_bytes(gzip.compress(sample.read_bytes(), mtime=0))
    return dst


def _text(sample: Path, dst: Path) -> Path:
    dst.write_text("ftyp isom -- this is a text file with an .mp4 name\n" * 40)
    return dst


def _html(sample: Path, dst: Path) -> Path:
    dst.write_text("<!doctype html><html><body><video src=x.mp4></video></body></html>\n")
    return dst


def _random(sample: Path, dst: Path) -> Path:
    import random

    dst.write_bytes(random.Random(5).randbytes(100_000))
    return dst


def _png(sample: Path, dst: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 30, 30)).save(dst, format="PNG")
    return dst


def _empty(sample: Path, dst: Path) -> Path:
    dst.write_bytes(b"")
    return dst


def _ftyp_only(sample: Path, dst: Path) -> Path:
    dst.write_bytes(sample.read_bytes()[:32])
    return dst


def _ftyp_then_garbage(sample: Path, dst: Path) -> Path:
    dst.write_bytes(sample.read_bytes()[:32] + bytes((i * 31 + 7) % 256 for i in range(50_000)))
    return dst


def _mkv_header_only(sample: Path, dst: Path) -> Path:
    remux(sample, dst, "matroska")
    dst.write_bytes(dst.read_bytes()[:200])
    return dst


def _oversized(sample: Path, dst: Path) -> Path:
    with dst.open("wb") as f:
        f.write(sample.read_bytes())
        f.write(bytes(MAX_UPLOAD_BYTES))
    return dst


def _zero_frames(sample: Path, dst: Path) -> Path:
    import cv2

    cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 64)).release()
    return dst


def _single_frame(sample: Path, dst: Path) -> Path:
    return synthetic_clip(dst, "mp4", "libx264", (64, 48), frames=1)


def _tiny_mjpeg(sample: Path, dst: Path) -> Path:
    import numpy as np

    return write_clip(dst, [np.full((1, 1, 3), 128, np.uint8)] * 3, fps=10, fourcc="MJPG")


STBL_AVC1 = video_stbl(b"stsd") + [b"avc1"]
MDHD = [b"moov", b"trak", b"mdia", b"mdhd"]
MVHD = [b"moov", b"mvhd"]
TKHD = [b"moov", b"trak", b"tkhd"]

UNSUPPORTED = refused(415, "unsupported-media-type")

CASES: tuple[Case, ...] = (
    # -- not videos at all: refused while uploading, by content -------------------------------
    Case("empty.mp4", "a 0-byte file", _empty, refused(400, "invalid-upload")),
    Case("notes.mp4", "a text file renamed .mp4", _text, UNSUPPORTED),
    Case("page.mp4", "an HTML page renamed .mp4", _html, UNSUPPORTED),
    Case("noise.mp4", "100 KB of pseudo-random bytes", _random, UNSUPPORTED),
    Case("image.mp4", "a PNG image renamed .mp4", _png, UNSUPPORTED),
    Case("anim.gif", "a real GIF animation", lambda s, d: gif_file(d), UNSUPPORTED),
    Case("tone.avi", "a WAV (RIFF, like AVI) renamed .avi", lambda s, d: wav_file(d), UNSUPPORTED),
    Case("clip.zip", "a ZIP holding the sample", lambda s, d: zip_file(d, s), UNSUPPORTED),
    Case("clip.mp4.gz", "the sample gzipped", _gzip, UNSUPPORTED),
    Case("ftyp-size-lie.mp4", "ftyp box claims 4 GiB", _bytes(_top_box_size(b"ftyp", 0xFFFFFFFF)), UNSUPPORTED),
    Case("oversized.mp4", "the sample followed by 4 MiB of zeros (over the upload limit)", _oversized,
         refused(413, "upload-too-large")),
    # -- truncations -------------------------------------------------------------------------
    Case("ftyp-only.mp4", "only the first box (32 bytes)", _ftyp_only, failed("no index")),
    Case("cut-10pct.mp4", "first 10 % (index at the end: lost)", _cut(0.10), failed("cut off")),
    Case("cut-50pct.mp4", "first 50 %", _cut(0.50), failed("cut off")),
    Case("cut-in-index.mp4", "cut 600 bytes into the index", _bytes(_cut_at_index), failed("cut off")),
    Case("cut-last-byte.mp4", "the last byte missing", _bytes(lambda d: d[:-1]), failed("cut off")),
    Case("fast-cut-10pct.mp4", "index first, first 10 %", _cut(0.10, index_first=True), failed("cut off")),
    Case("fast-cut-50pct.mp4", "index first, first 50 %", _cut(0.50, index_first=True), failed("cut off")),
    Case("fast-cut-95pct.mp4", "index first, first 95 %", _cut(0.95, index_first=True), failed("cut off")),
    Case("mkv-cut-header.mkv", "Matroska cut after 200 bytes", _mkv_header_only, failed("not a video")),
    Case("mkv-cut-30pct.mkv", "Matroska cut at 30 %, frames sampled past the cut (sample_fps=0.05)",
         _then(_remux("matroska"), lambda d: d[:len(d) * 3 // 10]), failed("truncated"), options={"sample_fps": "0.05"}),
    Case("mkv-cut-30pct-early.mkv", "the same file, frames sampled before the cut only",
         _then(_remux("matroska"), lambda d: d[:len(d) * 3 // 10]), COMPLETED),
    Case("avi-cut-50pct.avi", "AVI (MPEG-4) cut in half",
         _then(_transcode("avi", "mpeg4", {"qscale": "4"}), lambda d: d[:len(d) // 2]), failed("truncated")),
    Case("ftyp-garbage.mp4", "an ftyp box, then 50 KB of garbage", _ftyp_then_garbage, failed("cut off")),
    # -- missing, duplicated and lying boxes ---------------------------------------------------
    Case("no-moov.mp4", "index box removed", _bytes(lambda d: rename_box(d, [b"moov"])), failed("no index")),
    Case("mdat-renamed.mp4", "media box renamed 'skip' (chunk offsets still find the data)",
         _bytes(lambda d: rename_box(d, [b"mdat"])), COMPLETED),
    Case("no-mdat.mp4", "media box cut out (chunk offsets point past the end)", _bytes(_without_mdat),
         failed("decod")),
    Case("no-ftyp.mp4", "starts with 'free' (no ftyp)", _bytes(_no_ftyp), failed("decod")),
    Case("moov-first-no-ftyp.mp4", "index first, ftyp blanked", _bytes(_moov_first_no_ftyp), COMPLETED),
    Case("wide-first.mov", "QuickTime 'wide' box first", _bytes(_wide_box_first), COMPLETED),
    Case("moov-twice.mp4", "the index box twice", _bytes(lambda d: duplicate_box(d, [b"moov"])), COMPLETED),
    Case("stsz-twice.mp4", "the sample-size table twice", _bytes(lambda d: duplicate_box(d, video_stbl(b"stsz"))),
         COMPLETED),
    Case("no-stsz.mp4", "sample-size table removed", _bytes(lambda d: rename_box(d, video_stbl(b"stsz"))),
         failed("no frame could be decoded")),
    Case("no-stco.mp4", "chunk-offset table removed", _bytes(lambda d: rename_box(d, video_stbl(b"stco"))),
         failed("decod")),
    Case("no-stts.mp4", "time-to-sample table removed", _bytes(lambda d: rename_box(d, video_stbl(b"stts"))),
         failed("frame rate")),
    Case("no-stsd.mp4", "sample description removed", _bytes(lambda d: rename_box(d, video_stbl(b"stsd"))),
         failed("decod")),
    Case("moov-size-lie.mp4", "index box claims 1 MB more than the file has",
         _bytes(lambda d: patch_box(d, [b"moov"], 0, ">I", find_box(d, [b"moov"])[-1][1] + 1_000_000)),
         failed("cut off")),
    Case("mdat-size-lie.mp4", "media box claims 4 GiB (index first)", _fast(_top_box_size(b"mdat", 0xFFFFFFF0)),
         failed("cut off")),
    Case("mdat-size-zero.mp4", "media box size 0 (to the end of file), index first",
         _fast(_top_box_size(b"mdat", 0)), COMPLETED),
    Case("mdat-largesize.mp4", "media box with a 64-bit size of 2^62", _bytes(_largesize_mdat), failed("cut off")),
    Case("box-size-3.mp4", "the free box claims 3 bytes (less than a header)",
         _bytes(_top_box_size(b"free", 3)), failed("no index")),
    Case("stco-past-end.mp4", "chunk offsets point past the end of the file",
         _bytes(lambda d: patch_box(d, video_stbl(b"stco"), 16, ">I", 0x7FFFFFF0)), failed("decod")),
    # -- int32 and other number bombs ----------------------------------------------------------
    Case("stsz-count-bomb.mp4", "sample-size table claims 2^32-1 samples",
         _bytes(lambda d: patch_box(d, video_stbl(b"stsz"), 16, ">I", 0xFFFFFFFF)), failed("decod")),
    Case("stts-count-bomb.mp4", "time-to-sample entry claims 2^31 samples",
         _bytes(lambda d: patch_box(d, video_stbl(b"stts"), 16, ">I", 0x80000000)),
         failed("claims 2147483648 frames")),
    Case("frames-bomb.avi", "AVI headers claim 4294967040 frames", lambda s, d: frame_count_bomb(s, d),
         failed("4294967040 frames")),
    Case("frames-bomb-every-frame.avi", "the same, with sample_fps=0 (every frame)",
         lambda s, d: frame_count_bomb(s, d), failed("4294967040 frames"), options={"sample_fps": "0"}),
    Case("mdhd-timescale-0.mp4", "media timescale 0", _bytes(lambda d: patch_box(d, MDHD, 20, ">I", 0)),
         failed("truncated or corrupt")),
    Case("mvhd-timescale-0.mp4", "movie timescale 0", _bytes(lambda d: patch_box(d, MVHD, 20, ">I", 0)), COMPLETED),
    Case("mdhd-duration-max.mp4", "media duration 2^32-1", _bytes(lambda d: patch_box(d, MDHD, 24, ">I", 0xFFFFFFFF)),
         COMPLETED),
    Case("fps-90000.mp4", "media timescale x 3000 (about 90000 fps)",
         _bytes(lambda d: patch_box(d, MDHD, 20, ">I", 11456 * 3000)), failed("frame rate")),
    Case("avc1-65535x65535.mp4", "sample entry claims 65535x65535 (the stream is 640x360)",
         _bytes(lambda d: patch_box(d, STBL_AVC1, 32, ">HH", 65535, 65535)), COMPLETED),
    Case("tkhd-huge-dims.mp4", "track header claims 65535x65535",
         _bytes(lambda d: patch_box(d, TKHD, 84, ">II", 0xFFFF0000, 0xFFFF0000)), COMPLETED),
    Case("avi-huge-dims.avi", "AVI (MJPEG) headers claim 100000x100000",
         _then(_synthetic("avi", "mjpeg", (64, 48), pix_fmt="yuvj420p"), _avi_dimensions(100000, 100000)),
         COMPLETED),  # the decoder goes by the stream's own size (64x48)
    Case("square-8192x8192.mp4", "a real 8192x8192 video (H.264, 67 megapixels a frame)",
         _synthetic("mp4", "libx264", (8192, 8192), frames=2, options={"preset": "ultrafast"}),
         failed("8192x8192 (67.1 megapixels) is over")),
    Case("dci-8k-8192x4320.mp4", "a real 8192x4320 video (DCI 8K), the largest frames accepted (H.264)",
         _synthetic("mp4", "libx264", (8192, 4320), frames=2, options={"preset": "ultrafast"}), COMPLETED),
    Case("8k-16-reference-frames.mp4", "a real 7680x4320 H.264 video that keeps 16 reference frames (x264 --ref 16)",
         _synthetic("mp4", "libx264", (7680, 4320), frames=2, options={"preset": "ultrafast", "x264-params": "ref=16"}),
         failed("keep 16 reference frames of 7680x4320 8-bit 4:2:0 (759 MiB); the service keeps at most 255 MiB")),
    Case("8k-10-bit-5-reference-frames.mp4", "a real 7680x4320 10-bit H.264 video with 5 reference frames",
         _synthetic("mp4", "libx264", (7680, 4320), frames=2, pix_fmt="yuv420p10le",
                    options={"preset": "ultrafast", "x264-params": "ref=5"}),
         failed("keep 5 reference frames of 7680x4320 10-bit 4:2:0 (475 MiB)")),
    Case("8k-hevc-9-pictures.mkv", "a real 7680x4320 HEVC video that keeps 9 decoded pictures (x265 --ref 8)",
         _synthetic("matroska", "libx265", (7680, 4320), frames=2,
                    options={"preset": "ultrafast", "x265-params": "ref=8:log-level=0"}),
         failed("keep 9 decoded pictures of 7680x4320 8-bit 4:2:0 (427 MiB)")),
    Case("grows-to-8192x8192.mp4", "H.264 that switches from 640x360 to 8192x8192 (a new SPS) after 3 frames",
         _concatenated("mp4", ((640, 360), 3, "ref=1"), ((8192, 8192), 1, "ref=1")),
         failed("inside the H.264 stream (its sequence parameter sets), the frame size 8192x8192")),
    Case("8k-16-reference-frames-later.mkv", "H.264 at 640x360, then 7680x4320 keeping 16 reference frames",
         _concatenated("matroska", ((640, 360), 3, "ref=1"), ((7680, 4320), 1, "ref=16")),
         failed("keep 16 reference frames of 7680x4320 8-bit 4:2:0 (759 MiB)")),
    Case("vp9-8-references-8k.mkv", "VP9 7680x4320 whose every frame refreshes another of its 8 reference slots",
         _vp9_rewritten(size=(7680, 4320), distinct_references=True),
         failed("keep 8 different reference frames at once, up to 7680x4320 8-bit 4:2:0 (380 MiB)")),
    Case("wide-9000x16.avi", "a real 9000x16 video (MJPEG)", _synthetic("avi", "mjpeg", (9000, 16), frames=2,
                                                                         pix_fmt="yuvj420p"),
         failed("9000x16 is outside")),
    # -- bit flips and blanked data ------------------------------------------------------------
    Case("flipped-media.mp4", "2000 bit flips in the media data", _bytes(_flip_media), COMPLETED),
    Case("flipped-index.mp4", "64 bit flips in the index", _bytes(_flip_index), failed("no video track")),
    Case("zeroed-media.mp4", "media data all zeros", _bytes(_zero_media), failed("decoded")),
    # -- other codecs, containers and shapes ------------------------------------------------
    Case("remux.mov", "H.264 in QuickTime", _remux("mov"), COMPLETED),
    Case("remux.mkv", "H.264 in Matroska", _remux("matroska"), COMPLETED),
    Case("vp9.webm", "VP9 in WebM", _transcode("webm", "libvpx-vp9", {"deadline": "realtime", "cpu-used": "8",
                                                                     "crf": "45", "b": "0"}, seconds=1), COMPLETED),
    Case("vp8.webm", "VP8 in WebM", _transcode("webm", "libvpx", {"deadline": "realtime", "cpu-used": "8",
                                                                 "crf": "40", "b": "1M"}, seconds=1), COMPLETED),
    Case("mpeg4.avi", "MPEG-4 part 2 in AVI", _transcode("avi", "mpeg4", {"qscale": "4"}), COMPLETED),
    Case("mpeg4.mp4", "MPEG-4 part 2 in MP4", _transcode("mp4", "mpeg4", {"qscale": "4"}), COMPLETED),
    Case("mjpeg.avi", "Motion JPEG in AVI", _transcode("avi", "mjpeg", {"qscale": "5"}, pix_fmt="yuvj420p"),
         COMPLETED),
    Case("h264-bframes.mp4", "H.264 with 3 B-frames (libx264)",
         _transcode("mp4", "libx264", {"preset": "ultrafast", "x264-params": "bframes=3:b-adapt=0"},
                    seconds=1), COMPLETED),
    Case("h264-yuv444.mkv", "H.264 High 4:4:4 in Matroska", _transcode("matroska", "libx264", {"preset": "ultrafast"},
                                                                       seconds=1, pix_fmt="yuv444p"), COMPLETED),
    Case("hevc.mp4", "H.265 in MP4", _transcode("mp4", "libx265", {"preset": "ultrafast", "x265-params": "log-level=0"},
                                                 seconds=1), COMPLETED),
    Case("1x1.avi", "1x1 pixel video (MJPEG)", _tiny_mjpeg, failed("1x1")),
    Case("16x16.mp4", "16x16 pixel video, the smallest accepted", _synthetic("mp4", "libx264", (16, 16)), COMPLETED),
    Case("odd-33x17.mkv", "odd frame size 33x17 (FFV1)", _synthetic("matroska", "ffv1", (33, 17)), COMPLETED),
    Case("single-frame.mp4", "a video of one frame", _single_frame, COMPLETED),
    Case("zero-frames.mp4", "a video track with no frames", _zero_frames, failed("no frames")),
    Case("audio-only.mp4", "PCM audio, no video track (MP4)", lambda s, d: audio_only_mp4(d), failed("no video track")),
    Case("audio-only.mkv", "Opus audio, no video track (Matroska)", lambda s, d: audio_only(d, "matroska", "libopus",
                                                                                             rate=48000),
         failed("not a video")),
    # -- hostile names and headers on a good file ----------------------------------------------
    Case("traversal.mp4", "the sample named ../../../etc/passwd.mp4", _copy, COMPLETED,
         upload_name="../../../etc/passwd.mp4"),
    Case("content-type-lie.mp4", "the sample sent as image/png", _copy, COMPLETED, content_type="image/png"),
)


@dataclass
class Row:
    name: str
    what: str
    expected: str
    observed: str
    http_status: int
    job_id: str = ""
    seconds: float = 0.0
    ok: bool = False


def build_corpus(sample: Path, folder: Path, cases: tuple[Case, ...] = CASES) -> list[tuple[Case, Path]]:
    """Write every case's file into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    return [(case, case.build(sample, folder / case.name)) for case in cases]


def _problem_slug(response: httpx.Response) -> str:
    try:
        return str(response.json().get("type", "")).rsplit("/", 1)[-1]
    except ValueError:
        return ""


def run_corpus(http: httpx.Client, files: list[tuple[Case, Path]], timeout: float = 180.0) -> list[Row]:
    """Submit every file through REST, then follow each accepted job until it is final or `timeout` passes."""
    rows: list[Row] = []
    started: dict[str, float] = {}
    for case, path in files:
        with path.open("rb") as f:
            t0 = time.monotonic()
            response = http.post("/video/submit", data={**JOB_OPTIONS, **case.options},
                                 files={"file": (case.upload_name or case.name, f, case.content_type)})
        row = Row(case.name, case.what, str(case.expect), "", response.status_code)
        if response.status_code == 202:
            row.job_id = response.json()["job_id"]
            started[row.job_id] = t0
        else:
            row.observed = str(Observed(str(response.status_code), _problem_slug(response)))
            row.seconds = round(time.monotonic() - t0, 2)
        rows.append(row)
    deadline = time.monotonic() + timeout
    waiting = [r for r in rows if r.job_id]
    while waiting and time.monotonic() < deadline:
        for row in list(waiting):
            status = http.get(f"/video/status/{row.job_id}")
            if status.status_code != 200:
                row.http_status = status.status_code
                row.observed = str(Observed(str(status.status_code), _problem_slug(status)))
                waiting.remove(row)
                continue
            body = status.json()
            if body["status"] in FINAL:
                row.observed = str(Observed(body["status"], body.get("error_message") or ""))
                row.seconds = round(time.monotonic() - started[row.job_id], 2)
                if body["status"] == "COMPLETED":  # its results must be servable too
                    results = http.get(f"/video/results/{row.job_id}")
                    if results.status_code != 200:
                        row.http_status = results.status_code
                        row.observed = f"COMPLETED, results {results.status_code} {_problem_slug(results)}"
                waiting.remove(row)
        time.sleep(0.2)
    for row in waiting:
        row.observed = f"STUCK ({http.get(f'/video/status/{row.job_id}').json().get('status')} after {timeout:g} s)"
    for (case, _), row in zip(files, rows):
        row.ok = _matches(case.expect, row.observed)
    return rows


def _matches(expect: Expect, observed: str) -> bool:
    if observed.startswith("FAILED: "):
        return expect.matches(Observed("FAILED", observed[len("FAILED: "):]))
    outcome, _, detail = observed.partition(" ")
    return expect.matches(Observed(outcome, detail))


def check_rows(rows: list[Row]) -> list[str]:
    """The promises the corpus run broke (empty when all held)."""
    problems = []
    for row in rows:
        if row.http_status >= 500:
            problems.append(f"{row.name}: server error {row.http_status} ({row.observed})")
        if row.observed.startswith("STUCK"):
            problems.append(f"{row.name}: {row.observed}")
        elif not row.ok:
            problems.append(f"{row.name}: expected {row.expected}, observed {row.observed}")
    return problems


def leftovers(data_dir: Path, accepted_jobs: int, pid: int | None = None) -> list[str]:
    """What a finished corpus run must not leave: scratch files, half-written objects, inputs of refused
    uploads, open upload spools."""
    storage = data_dir / "storage"
    if not storage.is_dir():
        return [f"no storage folder at {storage}: the check looked in the wrong place"]
    found = [str(p) for p in (data_dir / "scratch").rglob("*") if p.is_file()]
    found += [str(p) for p in storage.rglob("*.part")]
    inputs = [p for p in (storage / "inputs").rglob("*") if p.is_file()]
    if len(inputs) > accepted_jobs:
        found.append(f"{len(inputs)} input objects for {accepted_jobs} accepted jobs")
    fd_dir = Path(f"/proc/{pid}/fd") if pid else None
    if fd_dir and fd_dir.is_dir():
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if "videojobs-upload" in target or "videojobs-s3" in target:
                found.append(f"open file {target}")
    return found


def format_table(rows: list[Row]) -> str:
    width = max(len(r.name) for r in rows)
    exp = max(len(r.expected) for r in rows)
    lines = [f"{'file':<{width}}  {'expected':<{exp}}  {'ok':<3} observed", "-" * (width + exp + 60)]
    for r in rows:
        observed = r.observed if len(r.observed) <= 110 else r.observed[:107] + "..."
        lines.append(f"{r.name:<{width}}  {r.expected:<{exp}}  {'ok' if r.ok else 'NO':<3} {observed}")
    return "\n".join(lines)


def as_json(rows: list[Row]) -> list[dict]:
    return [asdict(r) for r in rows]


@dataclass
class CorpusRun:
    rows: list[Row]
    after_corpus: str  # outcome of a normal job submitted after the corpus
    leftovers: list[str]
    seconds: float

    def problems(self) -> list[str]:
        found = check_rows(self.rows)
        if self.after_corpus != "COMPLETED":
            found.append(f"a normal job after the corpus ended {self.after_corpus} (worker broken?)")
        found += [f"left behind: {item}" for item in self.leftovers]
        return found

    def summary(self) -> dict:
        counts: dict[str, int] = {}
        for row in self.rows:
            key = row.observed.split(":")[0].split(" ")[0]
            counts[key] = counts.get(key, 0) + 1
        return {"files": len(self.rows), "as_expected": sum(r.ok for r in self.rows),
                "server_errors": sum(r.http_status >= 500 for r in self.rows), "outcomes": counts,
                "after_corpus": self.after_corpus, "leftovers": len(self.leftovers), "seconds": round(self.seconds, 1),
                "problems": self.problems()}


def run_on_embedded_service(sample: Path, workdir: Path, model_cache: Path, timeout: float = 180.0) -> CorpusRun:
    """Build the corpus under `workdir`, start `videojobs serve` (embedded defaults) on a data folder there,
    run the corpus through its REST gateway, then submit the plain sample and check nothing was left behind."""
    from tests.e2e.conftest import Service

    t0 = time.monotonic()
    workdir = workdir.resolve()  # the service runs in its data folder: a relative path would point elsewhere
    files = build_corpus(sample, workdir / "files")
    data_dir = workdir / "service"
    data_dir.mkdir(parents=True, exist_ok=True)
    service = Service(data_dir, model_cache, **SERVICE_ENV).start()
    try:
        rows = run_corpus(service.http, files, timeout=timeout)
        job_id = service.submit_rest(sample, **JOB_OPTIONS)
        after = service.wait_for(job_id, statuses=FINAL, timeout=timeout)["status"]
        assert service.proc is not None
        left = leftovers(data_dir, sum(1 for r in rows if r.job_id) + 1, service.proc.pid)
    except BaseException:
        print(service.diagnostics(120))
        raise
    finally:
        if service.proc and service.proc.poll() is None:
            service.stop()
    return CorpusRun(rows, after, left, time.monotonic() - t0)
