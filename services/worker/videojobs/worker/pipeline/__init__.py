"""The worker's analysis engine: decode, sample, detect, track, read text, serialise.

Public API: :class:`VideoFilePipelineService` (a ``VideoAnalyzer``) and the
``BadVideo`` family of errors.
"""

from videojobs.worker.pipeline.errors import (
    AbsurdDimensions,
    BadVideo,
    DecodeStalled,
    DetectorUnavailable,
    EmptyVideo,
    NoVideoStream,
    NotAVideo,
    TooManyFrames,
    TruncatedVideo,
)
from videojobs.worker.pipeline.service import VideoFilePipelineService

__all__ = [
    "AbsurdDimensions",
    "BadVideo",
    "DecodeStalled",
    "DetectorUnavailable",
    "EmptyVideo",
    "NoVideoStream",
    "NotAVideo",
    "TooManyFrames",
    "TruncatedVideo",
    "VideoFilePipelineService",
]
