"""Text reading with Tesseract through the in-process ``tesserocr`` binding.

Measured here on a 1280x720 frame with ``OMP_THREAD_LIMIT=1``: ~190 ms per frame
through ``pytesseract`` (a process start and a PNG round trip per call) against
~70 ms with one long-lived ``tesserocr`` API, same engine settings (PSM 3, the
default LSTM engine); on 640x360 footage ~150 ms against ~10 ms.

tesserocr is built from source against the system libtesseract (``pip install
--no-binary tesserocr``, as the Makefile does), so it runs the same Tesseract as
the ``tesseract`` CLI; PyPI's binary wheel bundles its own, newer Tesseract,
which reads real footage differently.
"""

from __future__ import annotations

import os

# Tesseract's OpenMP threads cost far more than they give on a few cores (1.1 s
# instead of 0.19 s per frame here); OpenMP reads this when the library first runs.
os.environ.setdefault("OMP_THREAD_LIMIT", "1")

import hashlib  # noqa: E402
from concurrent.futures import Future, ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Optional, Sequence  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from videojobs.common.errors import InvalidOptions, UnknownLanguage  # noqa: E402

TESSDATA_CANDIDATES = (
    "/usr/share/tesseract-ocr/5/tessdata",
    "/usr/share/tesseract-ocr/4.00/tessdata",
    "/usr/share/tessdata",
    "/usr/local/share/tessdata",
)
# Share of an OCR line's area that must lie inside a detection box for the line to be linked to it.
LINK_MIN_INSIDE = 0.9
# Language settings (``ocr_lang``) each OCR thread keeps an engine for: the ones its last jobs used. An engine
# takes 30-150 MiB and loads in about 0.1 s; "eng", "eng+deu", "deu+eng"... are each a setting of their own,
# so without a bound a tenant cycling through them grew every worker by an engine a thread per setting.
ENGINES_PER_THREAD = 3


def find_tessdata(explicit: Optional[str] = None) -> Path:
    """The tessdata folder: `explicit`, $TESSDATA_PREFIX, or the first system location that exists."""
    for candidate in (explicit, os.environ.get("TESSDATA_PREFIX"), *TESSDATA_CANDIDATES):
        if candidate and Path(candidate).is_dir() and any(Path(candidate).glob("*.traineddata")):
            return Path(candidate)
    raise InvalidOptions("no Tesseract language data found (install tesseract-ocr-eng or set TESSDATA_PREFIX)")


def tesseract_version() -> str:
    """Version of the Tesseract library the binding runs, e.g. "5.3.0"."""
    import tesserocr

    first = tesserocr.tesseract_version().splitlines()[0]
    return first.split()[-1]


@dataclass(frozen=True)
class OcrWord:
    text: str
    confidence: float  # 0..1
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels


@dataclass(frozen=True)
class OcrLine:
    """One line of text: its words joined by single spaces."""

    text: str
    confidence: float  # mean word confidence, 0..1
    box: tuple[int, int, int, int]
    words: tuple[OcrWord, ...]


def group_lines(words: Sequence[tuple[OcrWord, bool]]) -> list[OcrLine]:
    """Group words (each with "starts a new line") into lines; empty words are dropped."""
    lines: list[list[OcrWord]] = []
    for word, starts_line in words:
        if starts_line or not lines:
            lines.append([])
        if word.text:
            lines[-1].append(word)
    out = []
    for group in lines:
        if not group:
            continue
        out.append(
            OcrLine(
                text=" ".join(w.text for w in group),
                confidence=sum(w.confidence for w in group) / len(group),
                box=(
                    min(w.box[0] for w in group),
                    min(w.box[1] for w in group),
                    max(w.box[2] for w in group),
                    max(w.box[3] for w in group),
                ),
                words=tuple(group),
            )
        )
    return out


def is_worth_reading(line: OcrLine, min_confidence: float) -> bool:
    """Keep a line a reader would call text: a letter or digit in it, confident enough."""
    return line.confidence >= min_confidence and any(ch.isalnum() for ch in line.text)


def installed_languages(tessdata: Optional[str] = None) -> list[str]:
    """Tesseract languages with data in the tessdata folder ('osd' is a script detector, not a language)."""
    folder = find_tessdata(tessdata)
    return sorted(p.stem for p in folder.glob("*.traineddata") if p.stem != "osd")


def link_line(box: Sequence[float], detection_boxes: Sequence[Sequence[float]]) -> Optional[int]:
    """Index of the smallest detection box containing the line box, or None.

    "Containing" means at least LINK_MIN_INSIDE of the line's area lies inside the
    box (OCR and detector boxes are both a few pixels loose). Ties on area go to the
    lower index.
    """
    x1, y1, x2, y2 = box
    area = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    best: Optional[int] = None
    best_area = float("inf")
    for i, (dx1, dy1, dx2, dy2) in enumerate(detection_boxes):
        iw = min(x2, dx2) - max(x1, dx1)
        ih = min(y2, dy2) - max(y1, dy1)
        inside = max(0.0, iw) * max(0.0, ih)
        if area > 0:
            ok = inside >= LINK_MIN_INSIDE * area
        else:  # a degenerate line box: contained if its corner is
            ok = dx1 <= x1 <= dx2 and dy1 <= y1 <= dy2
        if ok:
            d_area = (dx2 - dx1) * (dy2 - dy1)
            if d_area < best_area:
                best, best_area = i, d_area
    return best


def frame_key(frame: np.ndarray) -> tuple[tuple[int, ...], bytes]:
    """What tells two frames apart: their shape and the SHA-256 of their pixels.

    A digest rather than the frame itself: an engine keeps no frame alive (95 MiB at 7680x4320).
    Hashing takes 48 ms there with the GIL released, against ``np.array_equal``'s 230 ms and
    frame-sized temporary; at 1280x720 it takes 1.3 ms against 0.13, about 1.5% of a frame's OCR."""
    return frame.shape, hashlib.sha256(np.ascontiguousarray(frame).data).digest()


class OcrEngine:
    """One Tesseract instance for one language setting; not thread-safe (use one per thread).

    Frames identical (pixel for pixel: ``frame_key``) to the last frame read reuse its answer:
    Tesseract is deterministic, so the output is exactly what a new run would give.
    """

    def __init__(self, lang: str, tessdata: Optional[str] = None) -> None:
        import tesserocr

        self.lang = lang
        self.tessdata = find_tessdata(tessdata)
        missing = [part for part in lang.split("+") if not (self.tessdata / f"{part}.traineddata").is_file()]
        if missing:
            raise UnknownLanguage(missing, installed_languages(tessdata))
        self._api = tesserocr.PyTessBaseAPI(
            path=str(self.tessdata) + os.sep, lang=lang, psm=tesserocr.PSM.AUTO, oem=tesserocr.OEM.DEFAULT
        )
        self._last_key: Optional[tuple[tuple[int, ...], bytes]] = None
        self._last_lines: list[OcrLine] = []
        self.frames_read = 0
        self.frames_reused = 0

    def reset(self) -> None:
        """Forget the last frame and the counts (start of a job)."""
        self.forget_frame()
        self.frames_read = 0
        self.frames_reused = 0

    def forget_frame(self) -> None:
        """Forget the last frame read and its answer (end of a job)."""
        self._last_key = None
        self._last_lines = []

    def close(self) -> None:
        self._api.End()

    def read(self, frame_bgr: np.ndarray) -> list[OcrLine]:
        """The text lines of one BGR frame."""
        key = frame_key(frame_bgr)
        if key == self._last_key:
            self.frames_reused += 1
            return self._last_lines
        lines = self._recognize(frame_bgr)
        self._last_key, self._last_lines = key, lines
        self.frames_read += 1
        return lines

    def _recognize(self, frame_bgr: np.ndarray) -> list[OcrLine]:
        import tesserocr

        h, w = frame_bgr.shape[:2]
        api = self._api
        # Tesseract copies the pixels into an image of its own: the RGB copies go before it reads
        # (each is as large as the frame: 95 MiB at 7680x4320).
        api.SetImageBytes(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB).tobytes(), w, h, 3, 3 * w)
        words: list[tuple[OcrWord, bool]] = []
        level = tesserocr.RIL.WORD
        try:
            api.Recognize()
            it = api.GetIterator()
            for r in tesserocr.iterate_level(it, level) if it is not None else ():
                try:
                    text = r.GetUTF8Text(level)
                except RuntimeError:  # an empty word region; it may still start a line
                    text = ""
                bbox = r.BoundingBox(level)
                if bbox is None:
                    continue
                words.append((
                    OcrWord(text.strip(), max(0.0, min(1.0, r.Confidence(level) / 100.0)), tuple(int(v) for v in bbox)),
                    bool(r.IsAtBeginningOf(tesserocr.RIL.TEXTLINE)),
                ))
        finally:
            # The image and what Recognize made of it (214 MiB at 7680x4320) go, however reading ended.
            api.Clear()
        return group_lines(words)


class OcrPool:
    """Tesseract on ``threads`` threads, each with its own engine per language (an engine is not
    thread-safe and is only used from the thread that made it).

    A batch is cut into consecutive runs of frames, one run per thread, so a video whose OCR
    costs more than its detection (text-dense 720p and larger) keeps every core busy; runs go
    round the threads, so batches of one large frame do too. Each run
    is read in order by its thread's engine, which reuses its answer for a frame identical to
    the one it read before; Tesseract holds no state from frame to frame, so the lines are the
    same whichever engine reads a frame (tested).
    """

    def __init__(self, threads: int, tessdata: Optional[str] = None,
                 engine_factory: Callable[[str, Optional[str]], Any] = OcrEngine) -> None:
        self.threads = max(1, int(threads))
        self._tessdata = tessdata
        self._factory = engine_factory
        self._lanes = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ocr-{i}") for i in range(self.threads)]
        self._engines: list[dict[str, Any]] = [{} for _ in self._lanes]
        self._next = 0  # the thread the next run goes to

    def start(self, lang: str) -> None:
        """Make (once) and reset each thread's engine for `lang`, on its own thread (start of a job); a thread
        keeps the engines of its ``ENGINES_PER_THREAD`` most recently started settings and closes the rest."""

        def ready(engines: dict[str, Any]) -> None:
            engine = engines.pop(lang, None)
            if engine is None:
                engine = self._factory(lang, self._tessdata)
            engines[lang] = engine  # last: the most recently used
            while len(engines) > ENGINES_PER_THREAD:
                engines.pop(next(iter(engines))).close()
            engine.reset()

        for future in [lane.submit(ready, engines) for lane, engines in zip(self._lanes, self._engines)]:
            future.result()
        self._next = 0

    def submit(self, lang: str, frames: list[np.ndarray],
               reader: Callable[[], Callable[[Any, list[np.ndarray]], Any]]) -> list[Future]:
        """``reader()(engine, run)`` for consecutive runs of `frames`, at most one per thread, each on the
        thread after the last run's (a callable of its own each, e.g. one carrying a copy of the caller's
        context); the futures in frame order."""
        size = -(-len(frames) // self.threads)
        futures = []
        for i in range(0, len(frames), size):
            # Runs go round the threads, so batches shorter than the thread count (large frames) still
            # keep every thread reading: batch k+1 starts on the next thread while batch k is read.
            lane, engines = self._lanes[self._next], self._engines[self._next]
            self._next = (self._next + 1) % self.threads
            futures.append(lane.submit(reader(), engines[lang], frames[i:i + size]))
        return futures

    def forget_frames(self) -> None:
        """Each engine lets go of the last frame it read, on its own thread (end of a job)."""
        def forget(engines: dict[str, Any]) -> None:
            for engine in engines.values():
                engine.forget_frame()

        for future in [lane.submit(forget, engines) for lane, engines in zip(self._lanes, self._engines)]:
            future.result()

    def counts(self, lang: str) -> tuple[int, int]:
        """Frames read and frames reused since `start`, over every thread."""
        engines = [e[lang] for e in self._engines if lang in e]
        return sum(e.frames_read for e in engines), sum(e.frames_reused for e in engines)

    def close(self) -> None:
        for lane, engines in zip(self._lanes, self._engines):
            for engine in engines.values():
                lane.submit(engine.close).result()
            engines.clear()
            lane.shutdown(wait=True)
