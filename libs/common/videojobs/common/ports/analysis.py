"""VideoAnalyzer: the worker's analysis engine (YOLO detection + Tesseract OCR)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from videojobs.common.options import AnalysisOptions
from videojobs.common.results import ResultsDocument

# on_progress(frames_done, frames_total) is called after every analysed batch.
ProgressCallback = Callable[[int, int], None]
# should_stop() is polled between batches; True makes run_on_file raise JobInterrupted.
StopCheck = Callable[[], bool]
# on_frame(frame_index, bgr_image) is called once per analysed frame, in order, with the
# decoded frame (a numpy uint8 array, height x width x 3) the analysis saw.
FrameCallback = Callable[[int, Any], None]


@dataclass(frozen=True)
class AnalyzerCapabilities:
    """What an analyzer can do: its detector model and the OCR languages installed beside it."""

    model_file: str
    model_sha256: str
    class_names: list[str]
    ocr_languages: list[str]


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

    @abstractmethod
    def describe(self) -> AnalyzerCapabilities:
        """Load what is needed and say what this analyzer can do (published for the api)."""
        raise NotImplementedError
