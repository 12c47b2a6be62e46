"""The worker's analysis engine: decode, sample, detect, track, read text, serialise.

Public API: :class:`VideoFilePipelineService` (a ``VideoAnalyzer``) and the
``BadVideo`` family of errors.
"""

from videojobs.worker.pipeline.offline import keep_offline

keep_offline()  # before anything here imports openvino or ultralytics

from videojobs.worker.pipeline.errors import (  # noqa: E402
    AbsurdDimensions,
    BadVideo,
    DecodeStalled,
    DetectorUnavailable,
    EmptyVideo,
    NoVideoStream,
    NotAVideo,
    OversizedPictureBuffer,
    TooManyFrames,
    TruncatedVideo,
)
from videojobs.worker.pipeline.service import VideoFilePipelineService  # noqa: E402

__all__ = [
    "AbsurdDimensions",
    "BadVideo",
    "DecodeStalled",
    "DetectorUnavailable",
    "EmptyVideo",
    "NoVideoStream",
    "NotAVideo",
    "OversizedPictureBuffer",
    "TooManyFrames",
    "TruncatedVideo",
    "VideoFilePipelineService",
]
