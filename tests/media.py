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

import av


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
