"""VideoAnalyzer: the worker's analysis engine (YOLO detection + Tesseract OCR)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Optional

from videojobs.common.options import AnalysisOptions

# on_progress(frames_done, frames_total) is called after every analysed batch.
ProgressCallback = Callable[[int, int], None]
# should_stop() is polled between batches; True makes run_on_file raise JobInterrupted.
StopCheck = Callable[[], bool]


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
    ) -> dict[str, Any]:
        """Analyse the sampled frames of `file_path`.

        Returns the results document (see ``videojobs.common.results``). Raises
        InvalidOptions for an unknown pipeline (before any work), BadVideo (a
        PoisonInput) for inputs that can never be analysed, JobInterrupted when
        `should_stop` turns True.
        """
        raise NotImplementedError
