"""Frame images and contact sheets: what the model saw, with what it found drawn on top.

The worker keeps a JPEG of every analysed frame (``videojobs.common.frames``); these
use cases hand them out, draw a frame's detections on request (Pillow: boxes, class
names, confidences, track ids, and the OCR lines' boxes) and lay annotated frames out
as a contact sheet. A COMPLETED job's results never change, so rendered images are
cached by job, frame and kind, within a byte budget. The job is always looked up
first, so the cache never answers for a job the caller could not see.
"""

from __future__ import annotations

import functools
import io
from typing import Optional, Sequence, TypeVar

from PIL import Image, ImageDraw, ImageFont

from videojobs.api.service import JobsService
from videojobs.common.tenants import Caller
from videojobs.common.errors import FrameNotFound
from videojobs.common.frames import JPEG, PNG, FrameImageStore, RenderedImage, SheetLayout
from videojobs.api.caching import ByteBudgetCache
from videojobs.common.results import FrameResult, IndexedResults

JPEG_QUALITY = 85
DEFAULT_CACHE_BYTES = 32 * 1024 * 1024
T = TypeVar("T")

# One colour per class id (cycled), the same order the viewer page uses.
PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
)
OCR_COLOUR = (255, 255, 255)
SHEET_BACKGROUND = (24, 24, 24)
MISSING_FRAME = (64, 64, 64)


def class_colour(class_id: int) -> tuple[int, int, int]:
    return PALETTE[class_id % len(PALETTE)]


@functools.lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def detection_label(frame: FrameResult, index: int) -> str:
    det = frame.result.detections[index]
    track = f" #{det.track_id}" if det.track_id is not None else ""
    return f"{det.class_name} {det.confidence:.2f}{track}"


def draw_detections(image: Image.Image, frame: FrameResult, video_width: int, video_height: int) -> None:
    """Draw `frame`'s detections (and its OCR lines' boxes) on `image`, scaled to its size."""
    draw = ImageDraw.Draw(image)
    width, height = image.size
    line = max(2, round(min(width, height) / 180))
    font = _font(max(9, round(height / 28)))
    sx, sy = width / max(1, video_width), height / max(1, video_height)
    for ocr in frame.result.ocr:
        b = ocr.box
        x1, y1 = round(b.x1 * sx), round(b.y1 * sy)
        draw.rectangle([x1, y1, max(x1, round(b.x2 * sx)), max(y1, round(b.y2 * sy))], outline=OCR_COLOUR, width=1)
    for k, det in enumerate(frame.result.detections):
        colour = class_colour(det.class_id)
        n = det.box_norm
        x1, y1, x2, y2 = round(n.x1 * width), round(n.y1 * height), round(n.x2 * width), round(n.y2 * height)
        draw.rectangle([x1, y1, max(x1, x2), max(y1, y2)], outline=colour, width=line)
        label = detection_label(frame, k)
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        label_w, label_h = right - left + 2 * line, bottom - top + 2 * line
        # Above the box when there is room, else just inside its top edge.
        ly = y1 - label_h if y1 - label_h >= 0 else y1
        lx = min(max(0.0, x1), max(0.0, width - label_w))
        draw.rectangle([lx, ly, lx + label_w, ly + label_h], fill=colour)
        ink = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
        draw.text((lx + line - left, ly + line - top), label, fill=ink, font=font)


def encode(image: Image.Image, content_type: str) -> bytes:
    out = io.BytesIO()
    if content_type == PNG:
        image.save(out, format="PNG")
    else:
        image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def spread(frames: Sequence[T], count: int) -> list[T]:
    """At most `count` items (frames, or their positions), evenly spread from the first to the last."""
    if len(frames) <= count:
        return list(frames)
    if count == 1:
        return [frames[0]]
    return [frames[round(i * (len(frames) - 1) / (count - 1))] for i in range(count)]


class FrameImages:
    """Use cases behind GetFrameImage and GetContactSheet."""

    def __init__(self, jobs: JobsService, store: FrameImageStore, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self._jobs = jobs
        self._store = store
        self._cache: ByteBudgetCache[RenderedImage] = ByteBudgetCache(cache_bytes, lambda image: len(image.data))

    def frame_image(self, caller: Caller, job_id: str, frame_index: int, annotated: bool = False) -> RenderedImage:
        """One analysed frame as the worker kept it (JPEG), with its detections drawn if `annotated`.

        The job is looked up for the caller first, so another tenant's job is JobNotFound
        whatever the cache holds."""
        job, results = self._jobs.stored_results(caller, job_id)
        frame = _find_frame(results, job.job_id, frame_index)
        key = ("frame", job.job_id, frame.frame_index, annotated)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        data = self._store.load(job.job_id, frame.frame_index)
        image = Image.open(io.BytesIO(data))
        if annotated:
            image = image.convert("RGB")
            draw_detections(image, frame, results.header.video.width, results.header.video.height)
            data = encode(image, JPEG)
        rendered = RenderedImage(JPEG, data, image.width, image.height, (frame.frame_index,))
        self._cache.put(key, rendered)
        return rendered

    def contact_sheet(self, caller: Caller, job_id: str, layout: SheetLayout = SheetLayout()) -> RenderedImage:
        """A PNG grid of annotated frames spread over the job, each captioned with its index, time and count."""
        layout = layout.resolved()
        job, results = self._jobs.stored_results(caller, job_id)
        key = ("sheet", job.job_id, layout)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        frames = [results.frame_at(position) for position in spread(range(len(results)), layout.max_frames)]
        rendered = _render_sheet(job.job_id, results, frames, layout, self._tile_source(job.job_id))
        self._cache.put(key, rendered)
        return rendered

    def _tile_source(self, job_id: str):
        def load(frame_index: int) -> Optional[bytes]:
            try:
                return self._store.load(job_id, frame_index)
            except FrameNotFound:
                return None  # drawn as a blank tile with the boxes: still shows where things were
        return load


def _find_frame(results: IndexedResults, job_id: str, frame_index: int) -> FrameResult:
    position = results.position_of(frame_index)
    if position is None:
        raise FrameNotFound(job_id, frame_index)
    return results.frame_at(position)


def _format_ms(ms: float) -> str:
    seconds = ms / 1000.0
    return f"{int(seconds // 60)}:{seconds % 60:05.2f}"


def _render_sheet(job_id: str, results: IndexedResults, frames: list[FrameResult], layout: SheetLayout,
                  load_tile) -> RenderedImage:
    document = results.header
    video = document.video
    tile_w = layout.tile_width
    tile_h = max(1, round(tile_w * video.height / max(1, video.width)))
    caption_font = _font(max(10, tile_w // 24))
    caption_h = caption_font.size + 8 if hasattr(caption_font, "size") else 18
    header_font = _font(14)
    header_h = 44
    gap = 6
    columns = min(layout.columns, max(1, len(frames)))
    rows = max(1, -(-len(frames) // columns))
    sheet_w = columns * tile_w + (columns + 1) * gap
    sheet_h = header_h + rows * (tile_h + caption_h + gap) + gap
    sheet = Image.new("RGB", (sheet_w, sheet_h), SHEET_BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    draw.text((gap + 2, 6), f"job {job_id} - pipeline {document.pipeline_id}", fill=(240, 240, 240),
              font=header_font)
    draw.text((gap + 2, 24), f"{video.width}x{video.height} at {video.fps:g} fps, {_format_ms(video.duration_ms)}; "
                             f"{len(frames)} of {len(results)} analysed frames shown; "
                             f"{results.detection_count} detections, {len(document.tracks)} tracks",
              fill=(190, 190, 190), font=header_font)
    for k, frame in enumerate(frames):
        row, col = divmod(k, columns)
        x = gap + col * (tile_w + gap)
        y = header_h + row * (tile_h + caption_h + gap)
        data = load_tile(frame.frame_index)
        if data is None:
            tile = Image.new("RGB", (tile_w, tile_h), MISSING_FRAME)
        else:
            tile = Image.open(io.BytesIO(data))
            tile.draft("RGB", (tile_w, tile_h))  # JPEG decodes straight at a reduced scale
            tile = tile.convert("RGB").resize((tile_w, tile_h), Image.Resampling.LANCZOS)
        draw_detections(tile, frame, video.width, video.height)
        sheet.paste(tile, (x, y))
        count = len(frame.result.detections)
        caption = (f"frame {frame.frame_index}  {_format_ms(frame.timestamp_ms)}  "
                   f"{count} object{'' if count == 1 else 's'}" + ("  text" if frame.result.ocr else ""))
        draw.text((x + 2, y + tile_h + 3), caption, fill=(220, 220, 220), font=caption_font)
    return RenderedImage(PNG, encode(sheet, PNG), sheet_w, sheet_h, tuple(f.frame_index for f in frames))
