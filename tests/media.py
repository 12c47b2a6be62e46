"""Test media built at test time from the shared sample (never copied into the repo).

PyAV (FFmpeg) remuxes the sample's H.264 into other containers, transcodes where
a container wants another codec, and writes the non-video files uploads must
refuse. Each builder returns the path it wrote.
"""

from __future__ import annotations

import io
import math
import struct
import wave
import zipfile
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import av
import numpy as np


def remux(src: Path, dst: Path, container: str) -> Path:
    """The same H.264 packets in another container (e.g. 'mov', 'matroska')."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format=container) as out:
        stream = inp.streams.video[0]
        target = out.add_stream_from_template(stream)
        for packet in inp.demux(stream):
            if packet.dts is None:  # the demuxer's flush packet
                continue
            packet.stream = target
            out.mux(packet)
    return dst


def transcode(src: Path, dst: Path, container: str, codec: str, seconds: float = 3.0,
              pix_fmt: str = "yuv420p", options: dict[str, str] | None = None) -> Path:
    """The first `seconds` of `src` re-encoded with `codec` (e.g. vp9 in webm, mpeg4 in avi)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format=container) as out:
        source = inp.streams.video[0]
        rate = Fraction(source.average_rate).limit_denominator(1001) if source.average_rate else Fraction(30)
        target = out.add_stream(codec, rate=rate, options=options or {})
        target.width, target.height, target.pix_fmt = source.codec_context.width, source.codec_context.height, pix_fmt
        limit = int(math.ceil(seconds * rate))
        for index, frame in enumerate(inp.decode(source)):
            if index >= limit:
                break
            frame = frame.reformat(format=pix_fmt)
            frame.pts, frame.time_base = index, 1 / rate
            for packet in target.encode(frame):
                out.mux(packet)
        for packet in target.encode():
            out.mux(packet)
    return dst


def container_variants(sample: Path, folder: Path) -> dict[str, Path]:
    """The sample as .mp4, .mov, .mkv, .webm and .avi files the service must accept."""
    folder.mkdir(parents=True, exist_ok=True)
    return {
        ".mp4": sample,
        ".mov": remux(sample, folder / "sample.mov", "mov"),
        ".mkv": remux(sample, folder / "sample.mkv", "matroska"),
        ".webm": transcode(sample, folder / "sample.webm", "webm", "libvpx-vp9",
                           options={"deadline": "realtime", "cpu-used": "8", "crf": "40", "b": "0"}),
        ".avi": transcode(sample, folder / "sample.avi", "avi", "mpeg4", options={"qscale": "4"}),
    }


def gif_file(path: Path) -> Path:
    """A real 2-frame GIF animation."""
    with av.open(str(path), "w", format="gif") as out:
        stream = out.add_stream("gif", rate=5)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "rgb8"
        for shade in (0, 255):
            frame = av.VideoFrame(32, 32, "rgb24")
            frame.planes[0].update(bytes([shade]) * frame.planes[0].buffer_size)
            for packet in stream.encode(frame.reformat(format="rgb8")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def wav_file(path: Path, seconds: float = 0.5, rate: int = 8000) -> Path:
    """A real PCM WAV: RIFF like AVI, but not a video."""
    samples = b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
                       for i in range(int(seconds * rate)))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples)
    return path


def zip_file(path: Path, inner: Path) -> Path:
    """A ZIP archive holding a real video (still not a video itself)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.write(inner, inner.name)
    path.write_bytes(buffer.getvalue())
    return path


def frame_count_bomb(src: Path, dst: Path) -> Path:
    """A decodable AVI whose headers claim 4294967040 frames (more than results can index: int32)."""
    import struct

    data = bytearray(transcode(src, dst, "avi", "mpeg4", seconds=2.0, options={"qscale": "4"}).read_bytes())
    avih, strh = data.find(b"avih"), data.find(b"strh")
    struct.pack_into("<I", data, avih + 8 + 16, 0xFFFFFF00)  # MainAVIHeader.dwTotalFrames
    struct.pack_into("<I", data, strh + 8 + 32, 0xFFFFFF00)  # AVIStreamHeader.dwLength
    dst.write_bytes(bytes(data))
    return dst


def labelled_clip(src: Path, dst: Path, labels: list[str], seconds_per_label: float = 3.0) -> Path:
    """The first len(labels) * seconds_per_label seconds of `src` with a white banner at the bottom naming
    one label at a time (dark print, large): objects for the detector and text for OCR in one clip."""
    import cv2

    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS)
    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    try:
        for index in range(int(fps * seconds_per_label * len(labels))):
            ok, frame = cap.read()
            if not ok:
                break
            label = labels[min(len(labels) - 1, int(index / (fps * seconds_per_label)))]
            cv2.rectangle(frame, (0, height - 70), (width, height), (255, 255, 255), -1)
            cv2.putText(frame, label, (20, height - 20), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (0, 0, 0), 3, cv2.LINE_AA)
            writer.write(frame)
    finally:
        writer.release()
        cap.release()
    return dst


# -- ISO-BMFF building blocks ----------------------------------------------------------
def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def full_box(kind: bytes, version: int, flags: int, payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags) + payload)


_MATRIX = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)


def audio_only_mp4(path: Path, seconds: float = 1.0, rate: int = 8000) -> Path:
    """A valid MP4 holding one 16-bit mono PCM ('sowt') audio track and no video."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()
    ftyp = box(b"ftyp", b"isom" + struct.pack(">I", 512) + b"isomiso2mp41")

    def moov(chunk_offset: int) -> bytes:
        mvhd = full_box(b"mvhd", 0, 0, struct.pack(">IIII", 0, 0, 1000, int(seconds * 1000))
                        + struct.pack(">IH", 0x00010000, 0x0100) + b"\0" * 10 + _MATRIX + b"\0" * 24
                        + struct.pack(">I", 2))
        tkhd = full_box(b"tkhd", 0, 7, struct.pack(">IIIII", 0, 0, 1, 0, int(seconds * 1000)) + b"\0" * 8
                        + struct.pack(">hhhH", 0, 0, 0x0100, 0) + _MATRIX + struct.pack(">II", 0, 0))
        mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, rate, n, 0x55C4, 0))
        hdlr = full_box(b"hdlr", 0, 0, struct.pack(">I", 0) + b"soun" + b"\0" * 12 + b"SoundHandler\0")
        smhd = full_box(b"smhd", 0, 0, struct.pack(">hH", 0, 0))
        dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1) + full_box(b"url ", 0, 1, b"")))
        sowt = box(b"sowt", b"\0" * 6 + struct.pack(">H", 1) + struct.pack(">HHI", 0, 0, 0)
                   + struct.pack(">HHHHI", 1, 16, 0, 0, rate << 16))
        stbl = box(b"stbl", b"".join([
            full_box(b"stsd", 0, 0, struct.pack(">I", 1) + sowt),
            full_box(b"stts", 0, 0, struct.pack(">III", 1, n, 1)),
            full_box(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, n, 1)),
            full_box(b"stsz", 0, 0, struct.pack(">II", 2, n)),
            full_box(b"stco", 0, 0, struct.pack(">II", 1, chunk_offset)),
        ]))
        minf = box(b"minf", smhd + dinf + stbl)
        trak = box(b"trak", tkhd + box(b"mdia", mdhd + hdlr + minf))
        return box(b"moov", mvhd + trak)

    size_moov = len(moov(0))
    data = ftyp + moov(len(ftyp) + size_moov + 8) + box(b"mdat", pcm)
    path.write_bytes(data)
    return path


def top_level_boxes(data: bytes) -> list[tuple[bytes, int, int]]:
    """(kind, offset, size) of each top-level box."""
    out, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
        elif size == 0:
            size = len(data) - pos
        out.append((kind, pos, size))
        pos += size
    return out


def faststart(data: bytes) -> bytes:
    """The same MP4 with its index (moov) moved before the media data, chunk offsets patched."""
    boxes = top_level_boxes(data)
    moov = next(b for b in boxes if b[0] == b"moov")
    if moov[1] < min((o for k, o, _ in boxes if k == b"mdat"), default=len(data)):
        return data  # already index-first
    moov_bytes = bytearray(data[moov[1]:moov[1] + moov[2]])
    shift = len(moov_bytes)
    containers = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}

    def patch(pos: int, end: int) -> None:
        while pos + 8 <= end:
            size, kind = struct.unpack(">I4s", moov_bytes[pos:pos + 8])
            if kind in containers:
                patch(pos + 8, pos + size)
            elif kind in (b"stco", b"co64"):
                count = struct.unpack(">I", moov_bytes[pos + 12:pos + 16])[0]
                fmt, width = (">I", 4) if kind == b"stco" else (">Q", 8)
                for i in range(count):
                    at = pos + 16 + i * width
                    (value,) = struct.unpack(fmt, moov_bytes[at:at + width])
                    moov_bytes[at:at + width] = struct.pack(fmt, value + shift)
            pos += size

    patch(8, len(moov_bytes))
    first_media = min(b[1] for b in boxes if b[0] != b"ftyp")
    rest = b"".join(data[o:o + s] for k, o, s in boxes if k not in (b"ftyp", b"moov"))
    return data[:first_media] + bytes(moov_bytes) + rest


def write_clip(path: Path, frames: Iterable[np.ndarray], fps: float, fourcc: str = "mp4v") -> Path:
    """Write BGR frames with OpenCV (its pip wheels write mp4v or MJPEG, not H.264)."""
    import cv2

    writer = None
    try:
        for frame in frames:
            if writer is None:
                h, w = frame.shape[:2]
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
                assert writer.isOpened(), f"cannot write {path}"
            writer.write(frame)
    finally:
        if writer is not None:
            writer.release()
    return path


# -- box surgery on ISO-BMFF files (the hostile corpus) ---------------------------------
# Boxes whose payload is a list of boxes, and how many bytes of their own come first.
_CONTAINER_SKIP = {b"moov": 0, b"trak": 0, b"mdia": 0, b"minf": 0, b"stbl": 0, b"edts": 0, b"dinf": 0,
                   b"udta": 0, b"stsd": 8, b"avc1": 78, b"mp4v": 78}


def _box_header(data: bytes, pos: int, end: int) -> tuple[bytes, int, int] | None:
    """(kind, size, header length) of the box at `pos`, None if no whole header fits."""
    if pos + 8 > end:
        return None
    size, kind = struct.unpack(">I4s", data[pos:pos + 8])
    hdr = 8
    if size == 1:
        if pos + 16 > end:
            return None
        size, hdr = struct.unpack(">Q", data[pos + 8:pos + 16])[0], 16
    elif size == 0:
        size = end - pos
    return kind, size, hdr


def find_box(data: bytes, path: Iterable[bytes]) -> list[tuple[int, int, int]]:
    """The box at `path` (e.g. [b'moov', b'trak', b'mdia', b'mdhd']) and its ancestors, outermost first:
    (offset, size, header length) each. The first box of each kind is taken. KeyError if absent."""
    chain: list[tuple[int, int, int]] = []
    start, end = 0, len(data)
    for wanted in path:
        pos = start
        while True:
            header = _box_header(data, pos, end)
            if header is None:
                raise KeyError(wanted)
            kind, size, hdr = header
            if kind == wanted:
                chain.append((pos, size, hdr))
                start, end = pos + hdr + _CONTAINER_SKIP.get(kind, 0), min(pos + size, end)
                break
            if size < hdr:
                raise KeyError(wanted)
            pos += size
    return chain


def video_stbl(child: bytes) -> list[bytes]:
    """Path of a box in the first track's sample table (the sample's only track is its video)."""
    return [b"moov", b"trak", b"mdia", b"minf", b"stbl", child]


def rename_box(data: bytes, path: list[bytes], new_kind: bytes = b"skip") -> bytes:
    """The box at `path` turned into another type (b'skip': gone for readers, offsets kept). Not b'free':
    FFmpeg looks inside free boxes for a lost index."""
    pos, _, _ = find_box(data, path)[-1]
    out = bytearray(data)
    out[pos + 4:pos + 8] = new_kind
    return bytes(out)


def duplicate_box(data: bytes, path: list[bytes]) -> bytes:
    """The box at `path` twice in a row, every ancestor's size grown to match (32-bit sizes only)."""
    chain = find_box(data, path)
    pos, size, _ = chain[-1]
    out = bytearray(data[:pos + size] + data[pos:pos + size] + data[pos + size:])
    for a_pos, a_size, _ in chain[:-1]:
        struct.pack_into(">I", out, a_pos, a_size + size)
    return bytes(out)


def patch_box(data: bytes, path: list[bytes], offset: int, fmt: str, *values: int) -> bytes:
    """Overwrite a field `offset` bytes into the box at `path` (offset counts from the box's start)."""
    pos, _, _ = find_box(data, path)[-1]
    out = bytearray(data)
    struct.pack_into(fmt, out, pos + offset, *values)
    return bytes(out)


def flip_bits(data: bytes, count: int, start: int, end: int, seed: int) -> bytes:
    """`count` random bits flipped between `start` and `end` (reproducible with `seed`)."""
    import random

    rng = random.Random(seed)
    out = bytearray(data)
    for _ in range(count):
        at = rng.randrange(start, end)
        out[at] ^= 1 << rng.randrange(8)
    return bytes(out)


def synthetic_clip(path: Path, container: str, codec: str, size: tuple[int, int], frames: int = 10, fps: int = 10,
                   pix_fmt: str = "yuv420p", options: dict[str, str] | None = None) -> Path:
    """A small clip of moving gradients encoded by PyAV (any size, codec and container FFmpeg writes)."""
    width, height = size
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=fps, options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for i in range(frames):
            rgb = np.zeros((height, width, 3), np.uint8)
            rgb[..., 0] = (np.arange(width, dtype=np.uint32)[None, :] * 255 // max(1, width - 1) + i * 20) % 256
            rgb[..., 1] = (np.arange(height, dtype=np.uint32)[:, None] * 255 // max(1, height - 1)) % 256
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def concatenated_clip(path: Path, container: str, codec: str, parts: list[dict], fps: int = 10) -> Path:
    """One video track made of separately encoded clips, one after the other, as a concatenation of recordings
    is: each part (``synthetic_clip``'s size, frames, options, pix_fmt) starts with a keyframe and parameters
    of its own in its packets, while the container's header describes the first part only. Parts are encoded
    without B-frames (as the caller's options say), so packets are in presentation order."""
    raws = [synthetic_clip(path.with_name(f"{path.name}.part{n}"), _RAW_FORMATS[codec], codec, **part)
            for n, part in enumerate(parts)]
    packets: list[tuple[bytes, bool]] = []
    for raw in raws:
        with av.open(str(raw)) as source:
            packets.extend((bytes(p), p.is_keyframe) for p in source.demux(video=0) if p.size)
    with av.open(str(raws[0])) as source, av.open(str(path), "w", format=container) as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        stream.time_base = Fraction(1, fps)
        for i, (data, keyframe) in enumerate(packets):
            packet = av.Packet(data)
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, i, i, Fraction(1, fps)
            packet.is_keyframe = keyframe
            out.mux(packet)
    for raw in raws:
        raw.unlink()
    return path


_RAW_FORMATS = {"libx264": "h264", "libx265": "hevc", "mpeg4": "m4v"}


def audio_only(path: Path, container: str, codec: str, seconds: float = 1.0, rate: int = 16000) -> Path:
    """A file with one audio track (a tone) and no video, in any container FFmpeg writes."""
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate)
        samples = int(seconds * rate)
        tone = (np.sin(2 * np.pi * 440 * np.arange(samples) / rate) * 8000).astype(np.int16)
        frame_size = stream.codec_context.frame_size or 1024
        for start in range(0, samples, frame_size):
            chunk = tone[start:start + frame_size]
            frame = av.AudioFrame.from_ndarray(chunk[None, :], format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


VP9_REALTIME = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "auto-alt-ref": "0", "crf": "50",
                "b": "0"}  # libvpx: one frame a packet, no hidden alternate reference frames


def vp9_rewritten(src: Path, dst: Path, size: tuple[int, int] | None = None,
                  distinct_references: bool = False) -> Path:
    """`src` (VP9 of profile 0 or 1, as libvpx writes it with ``VP9_REALTIME``) with its frame headers rewritten
    into Matroska: `size` as its keyframes' frame size (inter frames take theirs from their references), and
    with `distinct_references` every inter frame refreshing reference slot k % 8 alone, so that the decoder
    keeps 8 different frames (no encoder writes that; the frames still decode, from other references)."""
    from bitstring import BitArray

    with av.open(str(src)) as source, av.open(str(dst), "w", format="matroska") as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        for k, packet in enumerate(p for p in source.demux(video=0) if p.size):
            bits = BitArray(bytes(packet))
            profile = bits[2] | bits[3] << 1  # profile_low_bit, then profile_high_bit
            assert bits[:2].uint == 2 and profile in (0, 1) and not bits[4], "not a frame this can rewrite"
            keyframe, shown, resilient = not bits[5], bits[6], bits[7]
            if keyframe and size is not None:
                at = 8 + 24 + 4 + (3 if profile == 1 else 0)  # after the sync code and the colour configuration
                bits.overwrite(f"uint16={size[0] - 1}, uint16={size[1] - 1}", at)
            elif not keyframe and shown and not resilient and distinct_references:
                bits.overwrite(f"uint8={1 << (k % 8)}", 10)  # refresh_frame_flags, after reset_frame_context
            rewritten = av.Packet(bits.bytes)
            rewritten.stream, rewritten.time_base = stream, packet.time_base
            rewritten.pts, rewritten.dts, rewritten.duration = packet.pts, packet.dts, packet.duration
            rewritten.is_keyframe = packet.is_keyframe
            out.mux(rewritten)
    return dst
