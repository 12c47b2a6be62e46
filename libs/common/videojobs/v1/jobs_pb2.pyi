import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATUS_UNSPECIFIED: _ClassVar[JobStatus]
    JOB_STATUS_PENDING: _ClassVar[JobStatus]
    JOB_STATUS_RUNNING: _ClassVar[JobStatus]
    JOB_STATUS_COMPLETED: _ClassVar[JobStatus]
    JOB_STATUS_FAILED: _ClassVar[JobStatus]
JOB_STATUS_UNSPECIFIED: JobStatus
JOB_STATUS_PENDING: JobStatus
JOB_STATUS_RUNNING: JobStatus
JOB_STATUS_COMPLETED: JobStatus
JOB_STATUS_FAILED: JobStatus

class AnalysisOptions(_message.Message):
    __slots__ = ("sample_fps", "max_frames", "min_confidence", "classes", "ocr_lang", "imgsz")
    SAMPLE_FPS_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAMES_FIELD_NUMBER: _ClassVar[int]
    MIN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    OCR_LANG_FIELD_NUMBER: _ClassVar[int]
    IMGSZ_FIELD_NUMBER: _ClassVar[int]
    sample_fps: float
    max_frames: int
    min_confidence: float
    classes: _containers.RepeatedScalarFieldContainer[str]
    ocr_lang: str
    imgsz: int
    def __init__(self, sample_fps: _Optional[float] = ..., max_frames: _Optional[int] = ..., min_confidence: _Optional[float] = ..., classes: _Optional[_Iterable[str]] = ..., ocr_lang: _Optional[str] = ..., imgsz: _Optional[int] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("pipeline_id", "options", "filename")
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    pipeline_id: str
    options: AnalysisOptions
    filename: str
    def __init__(self, pipeline_id: _Optional[str] = ..., options: _Optional[_Union[AnalysisOptions, _Mapping]] = ..., filename: _Optional[str] = ...) -> None: ...

class SubmitRequest(_message.Message):
    __slots__ = ("spec", "chunk")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    chunk: bytes
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class SubmitResponse(_message.Message):
    __slots__ = ("job_id", "status")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    status: JobStatus
    def __init__(self, job_id: _Optional[str] = ..., status: _Optional[_Union[JobStatus, str]] = ...) -> None: ...

class SubmitFromStorageRequest(_message.Message):
    __slots__ = ("spec", "input_key")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    INPUT_KEY_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    input_key: str
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ..., input_key: _Optional[str] = ...) -> None: ...

class SubmitFromStorageResponse(_message.Message):
    __slots__ = ("job_id", "status")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    status: JobStatus
    def __init__(self, job_id: _Optional[str] = ..., status: _Optional[_Union[JobStatus, str]] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("job_id", "status", "progress", "frames_done", "frames_total", "pipeline_id", "error_message", "attempt", "created_at", "updated_at")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_DONE_FIELD_NUMBER: _ClassVar[int]
    FRAMES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    status: JobStatus
    progress: float
    frames_done: int
    frames_total: int
    pipeline_id: str
    error_message: str
    attempt: int
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[str] = ..., status: _Optional[_Union[JobStatus, str]] = ..., progress: _Optional[float] = ..., frames_done: _Optional[int] = ..., frames_total: _Optional[int] = ..., pipeline_id: _Optional[str] = ..., error_message: _Optional[str] = ..., attempt: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetResultsRequest(_message.Message):
    __slots__ = ("job_id", "page_size", "page_token")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    page_size: int
    page_token: str
    def __init__(self, job_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("x1", "y1", "x2", "y2")
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    X2_FIELD_NUMBER: _ClassVar[int]
    Y2_FIELD_NUMBER: _ClassVar[int]
    x1: float
    y1: float
    x2: float
    y2: float
    def __init__(self, x1: _Optional[float] = ..., y1: _Optional[float] = ..., x2: _Optional[float] = ..., y2: _Optional[float] = ...) -> None: ...

class Detection(_message.Message):
    __slots__ = ("class_id", "class_name", "confidence", "box", "box_norm", "track_id")
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    BOX_NORM_FIELD_NUMBER: _ClassVar[int]
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    class_id: int
    class_name: str
    confidence: float
    box: Box
    box_norm: Box
    track_id: int
    def __init__(self, class_id: _Optional[int] = ..., class_name: _Optional[str] = ..., confidence: _Optional[float] = ..., box: _Optional[_Union[Box, _Mapping]] = ..., box_norm: _Optional[_Union[Box, _Mapping]] = ..., track_id: _Optional[int] = ...) -> None: ...

class OcrLine(_message.Message):
    __slots__ = ("text", "confidence", "box", "detection_index")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    DETECTION_INDEX_FIELD_NUMBER: _ClassVar[int]
    text: str
    confidence: float
    box: Box
    detection_index: int
    def __init__(self, text: _Optional[str] = ..., confidence: _Optional[float] = ..., box: _Optional[_Union[Box, _Mapping]] = ..., detection_index: _Optional[int] = ...) -> None: ...

class FrameResult(_message.Message):
    __slots__ = ("frame_index", "timestamp_ms", "detections", "text", "ocr")
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    OCR_FIELD_NUMBER: _ClassVar[int]
    frame_index: int
    timestamp_ms: float
    detections: _containers.RepeatedCompositeFieldContainer[Detection]
    text: str
    ocr: _containers.RepeatedCompositeFieldContainer[OcrLine]
    def __init__(self, frame_index: _Optional[int] = ..., timestamp_ms: _Optional[float] = ..., detections: _Optional[_Iterable[_Union[Detection, _Mapping]]] = ..., text: _Optional[str] = ..., ocr: _Optional[_Iterable[_Union[OcrLine, _Mapping]]] = ...) -> None: ...

class VideoMetadata(_message.Message):
    __slots__ = ("width", "height", "fps", "frame_count", "duration_ms", "codec")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    FRAME_COUNT_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    fps: float
    frame_count: int
    duration_ms: float
    codec: str
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., fps: _Optional[float] = ..., frame_count: _Optional[int] = ..., duration_ms: _Optional[float] = ..., codec: _Optional[str] = ...) -> None: ...

class GetResultsResponse(_message.Message):
    __slots__ = ("job_id", "status", "frames", "next_page_token", "total_frames", "video", "sampling", "provenance", "tracks", "pipeline_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FRAMES_FIELD_NUMBER: _ClassVar[int]
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    TRACKS_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    status: JobStatus
    frames: _containers.RepeatedCompositeFieldContainer[FrameResult]
    next_page_token: str
    total_frames: int
    video: VideoMetadata
    sampling: _struct_pb2.Struct
    provenance: _struct_pb2.Struct
    tracks: _struct_pb2.ListValue
    pipeline_id: str
    def __init__(self, job_id: _Optional[str] = ..., status: _Optional[_Union[JobStatus, str]] = ..., frames: _Optional[_Iterable[_Union[FrameResult, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_frames: _Optional[int] = ..., video: _Optional[_Union[VideoMetadata, _Mapping]] = ..., sampling: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., provenance: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., tracks: _Optional[_Union[_struct_pb2.ListValue, _Mapping]] = ..., pipeline_id: _Optional[str] = ...) -> None: ...
