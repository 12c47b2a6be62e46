"""Errors of the analysis pipeline.

Every ``BadVideo`` is a ``PoisonInput``: the same bytes will fail the same way on
every attempt, so the job is failed with the message instead of being retried.
"""

from __future__ import annotations

from videojobs.common.errors import PoisonInput, VideoJobsError


class BadVideo(PoisonInput):
    """The input file cannot be analysed as a video."""


class NotAVideo(BadVideo):
    """The file is not a container OpenCV can decode (random bytes, a text file, a cut-off header...)."""


class NoVideoStream(BadVideo):
    """The container holds no video track (e.g. an audio-only MP4)."""


class EmptyVideo(BadVideo):
    """The video track holds no decodable frame."""


class TruncatedVideo(BadVideo):
    """The file ends (or its data breaks off) well before the frames its header announces."""


class AbsurdDimensions(BadVideo):
    """The frame size is outside what the service accepts (``FRAME_SIDE_*``, ``FRAME_PIXELS_MAX`` in common/formats.py)."""


class OversizedPictureBuffer(BadVideo):
    """The stream asks its decoder to keep more reference pictures than the service decodes: more than
    ``REFERENCE_BYTES_MAX`` (255 MiB, common/formats.py) of them (pipeline/picture_buffer.py)."""


class TooManyFrames(BadVideo):
    """The video announces more frames than results can index (2^31 - 1)."""


class DecodeStalled(BadVideo):
    """Opening or decoding made no progress within the decode timeout."""


class DetectorUnavailable(VideoJobsError):
    """The configured detector model cannot be loaded (missing file, unsupported format) or run
    on the configured backend. ``public`` is the part clients may read (no paths, no library text)."""

    def __init__(self, message: str, public: str = "") -> None:
        super().__init__(message)
        self._public = public or message

    @property
    def public_detail(self) -> str:
        return self._public
