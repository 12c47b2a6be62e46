"""VideoAnalyzer: the worker's analysis engine (YOLO detection + Tesseract OCR)."""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Optional

from videojobs.common.options import AnalysisOptions
from videojobs.common.results import ResultsDocument

# on_progress(frames_done, frames_total) is called after every analysed batch.
ProgressCallback = Callable[[int, int], None]
# should_stop() is polled between batches; True makes run_on_file raise JobInterrupted.
StopCheck = Callable[[], bool]
# on_frame(frame_index, bgr_image) is called once per analysed frame, in order, with the
# decoded frame (a numpy uint8 array, height x width x 3) the analysis saw.
FrameCallback = Callable[[int, Any], None]


@dataclass
class ResultsFile:
    """A results document written out (a job's, analysed in one pass or merged from segments): `file` holds
    its JSON (a temporary file, gone once closed) and `frames` counts its analysed frames. Close it (or use
    it as a context manager) once stored."""

    file: BinaryIO
    frames: int

    @classmethod
    def of(cls, document: ResultsDocument) -> "ResultsFile":
        return cls(io.BytesIO(document.to_bytes()), len(document.results))

    def rewound(self) -> BinaryIO:
        """The file, from its start (to store it, again if a first try failed)."""
        self.file.seek(0)
        return self.file

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "ResultsFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class AnalyzerCapabilities:
    """What an analyzer can do: its detector model and the OCR languages installed beside it."""

    model_file: str
    model_sha256: str
    class_names: list[str]
    ocr_languages: list[str]


@dataclass(frozen=True)
class SegmentRange:
    """Sample positions [first_sample, end_sample) of a job's sampling plan and their video frames."""

    first_sample: int
    end_sample: int
    first_frame: int
    last_frame: int


@dataclass(frozen=True)
class SplitPlan:
    """How a job would be split: its sampled frames, the segments (one: not split) and, when a long
    job stays in one piece, why (e.g. the container cannot be seeked exactly)."""

    samples: int
    ranges: list[SegmentRange]
    note: str | None = None


class VideoAnalyzer(ABC):
    """Runs one pipeline over one local video file and returns the results document."""

    @abstractmethod
    def run_on_file(
        self,
        pipeline_id: str,
        file_path: Path,
        options: Optional[AnalysisOptions] = None,
        on_progress: Optional[ProgressCallback] = None,
        should_stop: Optional[StopCheck] = None,
        on_frame: Optional[FrameCallback] = None,
    ) -> ResultsDocument:
        """Analyse the sampled frames of `file_path`.

        Raises InvalidOptions for an unknown pipeline (before any work), BadVideo (a
        PoisonInput) for inputs that can never be analysed, JobInterrupted when
        `should_stop` turns True.
        """
        raise NotImplementedError

    def run_to_file(self, pipeline_id: str, file_path: Path, options: Optional[AnalysisOptions] = None, *,
                    segmentation_note: Optional[str] = None, **callbacks: Any) -> ResultsFile:
        """``run_on_file``'s document (`callbacks`: its on_progress, should_stop, on_frame) written to a file,
        with `segmentation_note` (why the job was not split) in its sampling. Analyzers that can override
        this to write frames as they come, so a long video analysed in one pass is never held whole."""
        document = self.run_on_file(pipeline_id, file_path, options, **callbacks)
        return ResultsFile.of(document.with_segmentation_note(segmentation_note))

    # -- segments (long jobs across workers) ------------------------------------------------
    def plan_split(self, pipeline_id: str, file_path: Path, options: AnalysisOptions,
                   segment_frames: int) -> SplitPlan | None:
        """How the job on `file_path` splits into segments of about `segment_frames` sampled frames;
        None if this analyzer cannot split (the job runs in one piece)."""
        return None

    def run_segment(
        self,
        pipeline_id: str,
        file_path: Path,
        options: AnalysisOptions,
        first_sample: int,
        end_sample: int,
        on_progress: Optional[ProgressCallback] = None,
        should_stop: Optional[StopCheck] = None,
        on_frame: Optional[FrameCallback] = None,
    ) -> bytes:
        """Analyse samples [first_sample, end_sample) of the job's plan; the segment's output
        (per-frame results and what the merge needs) as bytes to store."""
        raise NotImplementedError

    def merge_segments(self, pipeline_id: str, options: AnalysisOptions, parts: Iterable[bytes]) -> "ResultsFile":
        """The results document of the whole job from its segments' outputs, given in segment order
        (a part given twice counts once): the bytes one pass would write, `results` and `tracks`
        included. Parts are read one at a time, so a long job is never held whole."""
        raise NotImplementedError

    @abstractmethod
    def describe(self) -> AnalyzerCapabilities:
        """Load what is needed and say what this analyzer can do (published for the api)."""
        raise NotImplementedError
