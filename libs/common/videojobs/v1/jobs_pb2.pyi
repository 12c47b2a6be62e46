import datetime

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
    JOB_STATUS_CANCELLED: _ClassVar[JobStatus]
JOB_STATUS_UNSPECIFIED: JobStatus
JOB_STATUS_PENDING: JobStatus
JOB_STATUS_RUNNING: JobStatus
JOB_STATUS_COMPLETED: JobStatus
JOB_STATUS_FAILED: JobStatus
JOB_STATUS_CANCELLED: JobStatus

class AnalysisOptions(_message.Message):
    __slots__ = ("sample_fps", "max_frames", "min_confidence", "classes", "ocr_lang", "imgsz", "min_text_confidence", "on_bad_frames")
    SAMPLE_FPS_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAMES_FIELD_NUMBER: _ClassVar[int]
    MIN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    OCR_LANG_FIELD_NUMBER: _ClassVar[int]
    IMGSZ_FIELD_NUMBER: _ClassVar[int]
    MIN_TEXT_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    ON_BAD_FRAMES_FIELD_NUMBER: _ClassVar[int]
    sample_fps: float
    max_frames: int
    min_confidence: float
    classes: _containers.RepeatedScalarFieldContainer[str]
    ocr_lang: str
    imgsz: int
    min_text_confidence: float
    on_bad_frames: str
    def __init__(self, sample_fps: _Optional[float] = ..., max_frames: _Optional[int] = ..., min_confidence: _Optional[float] = ..., classes: _Optional[_Iterable[str]] = ..., ocr_lang: _Optional[str] = ..., imgsz: _Optional[int] = ..., min_text_confidence: _Optional[float] = ..., on_bad_frames: _Optional[str] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("pipeline_id", "options", "filename", "request_id", "callback_url")
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_URL_FIELD_NUMBER: _ClassVar[int]
    pipeline_id: str
    options: AnalysisOptions
    filename: str
    request_id: str
    callback_url: str
    def __init__(self, pipeline_id: _Optional[str] = ..., options: _Optional[_Union[AnalysisOptions, _Mapping]] = ..., filename: _Optional[str] = ..., request_id: _Optional[str] = ..., callback_url: _Optional[str] = ...) -> None: ...

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

class Job(_message.Message):
    __slots__ = ("job_id", "status", "progress", "frames_done", "frames_total", "pipeline_id", "options", "error_message", "attempt", "created_at", "updated_at", "expires_at", "input_sha256", "queue_position", "eta_seconds", "callback_url", "segments_total", "segments_done", "frames_recomputed")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_DONE_FIELD_NUMBER: _ClassVar[int]
    FRAMES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHA256_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_URL_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_DONE_FIELD_NUMBER: _ClassVar[int]
    FRAMES_RECOMPUTED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    status: JobStatus
    progress: float
    frames_done: int
    frames_total: int
    pipeline_id: str
    options: AnalysisOptions
    error_message: str
    attempt: int
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    input_sha256: str
    queue_position: int
    eta_seconds: float
    callback_url: str
    segments_total: int
    segments_done: int
    frames_recomputed: int
    def __init__(self, job_id: _Optional[str] = ..., status: _Optional[_Union[JobStatus, str]] = ..., progress: _Optional[float] = ..., frames_done: _Optional[int] = ..., frames_total: _Optional[int] = ..., pipeline_id: _Optional[str] = ..., options: _Optional[_Union[AnalysisOptions, _Mapping]] = ..., error_message: _Optional[str] = ..., attempt: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., input_sha256: _Optional[str] = ..., queue_position: _Optional[int] = ..., eta_seconds: _Optional[float] = ..., callback_url: _Optional[str] = ..., segments_total: _Optional[int] = ..., segments_done: _Optional[int] = ..., frames_recomputed: _Optional[int] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "status")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    status: JobStatus
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., status: _Optional[_Union[JobStatus, str]] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class DeleteJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class DeleteJobResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

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

class FrameAnalysis(_message.Message):
    __slots__ = ("detections", "text", "ocr")
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    OCR_FIELD_NUMBER: _ClassVar[int]
    detections: _containers.RepeatedCompositeFieldContainer[Detection]
    text: str
    ocr: _containers.RepeatedCompositeFieldContainer[OcrLine]
    def __init__(self, detections: _Optional[_Iterable[_Union[Detection, _Mapping]]] = ..., text: _Optional[str] = ..., ocr: _Optional[_Iterable[_Union[OcrLine, _Mapping]]] = ...) -> None: ...

class FrameResult(_message.Message):
    __slots__ = ("frame_index", "timestamp_ms", "result")
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    frame_index: int
    timestamp_ms: float
    result: FrameAnalysis
    def __init__(self, frame_index: _Optional[int] = ..., timestamp_ms: _Optional[float] = ..., result: _Optional[_Union[FrameAnalysis, _Mapping]] = ...) -> None: ...

class VideoMetadata(_message.Message):
    __slots__ = ("width", "height", "fps", "frame_count", "duration_ms", "codec", "container")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    FRAME_COUNT_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    fps: float
    frame_count: int
    duration_ms: float
    codec: str
    container: str
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., fps: _Optional[float] = ..., frame_count: _Optional[int] = ..., duration_ms: _Optional[float] = ..., codec: _Optional[str] = ..., container: _Optional[str] = ...) -> None: ...

class Sampling(_message.Message):
    __slots__ = ("sample_fps", "frame_step", "max_frames", "frames_analysed", "requested_sample_fps", "every_frame", "first_frame_index", "last_frame_index", "segments", "segmentation_note")
    SAMPLE_FPS_FIELD_NUMBER: _ClassVar[int]
    FRAME_STEP_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAMES_FIELD_NUMBER: _ClassVar[int]
    FRAMES_ANALYSED_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_SAMPLE_FPS_FIELD_NUMBER: _ClassVar[int]
    EVERY_FRAME_FIELD_NUMBER: _ClassVar[int]
    FIRST_FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    SEGMENTATION_NOTE_FIELD_NUMBER: _ClassVar[int]
    sample_fps: float
    frame_step: float
    max_frames: int
    frames_analysed: int
    requested_sample_fps: float
    every_frame: bool
    first_frame_index: int
    last_frame_index: int
    segments: int
    segmentation_note: str
    def __init__(self, sample_fps: _Optional[float] = ..., frame_step: _Optional[float] = ..., max_frames: _Optional[int] = ..., frames_analysed: _Optional[int] = ..., requested_sample_fps: _Optional[float] = ..., every_frame: _Optional[bool] = ..., first_frame_index: _Optional[int] = ..., last_frame_index: _Optional[int] = ..., segments: _Optional[int] = ..., segmentation_note: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("file", "sha256", "backend", "input_size", "input_shape", "precision", "threads", "backend_choice")
    FILE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_CHOICE_FIELD_NUMBER: _ClassVar[int]
    file: str
    sha256: str
    backend: str
    input_size: int
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    precision: str
    threads: int
    backend_choice: BackendChoice
    def __init__(self, file: _Optional[str] = ..., sha256: _Optional[str] = ..., backend: _Optional[str] = ..., input_size: _Optional[int] = ..., input_shape: _Optional[_Iterable[int]] = ..., precision: _Optional[str] = ..., threads: _Optional[int] = ..., backend_choice: _Optional[_Union[BackendChoice, _Mapping]] = ...) -> None: ...

class BackendChoice(_message.Message):
    __slots__ = ("requested", "rule", "forward_ms")
    class ForwardMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    REQUESTED_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    FORWARD_MS_FIELD_NUMBER: _ClassVar[int]
    requested: str
    rule: str
    forward_ms: _containers.ScalarMap[str, float]
    def __init__(self, requested: _Optional[str] = ..., rule: _Optional[str] = ..., forward_ms: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Provenance(_message.Message):
    __slots__ = ("model", "libraries", "ocr_lang", "options")
    class LibrariesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LIBRARIES_FIELD_NUMBER: _ClassVar[int]
    OCR_LANG_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    libraries: _containers.ScalarMap[str, str]
    ocr_lang: str
    options: AnalysisOptions
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ..., libraries: _Optional[_Mapping[str, str]] = ..., ocr_lang: _Optional[str] = ..., options: _Optional[_Union[AnalysisOptions, _Mapping]] = ...) -> None: ...

class Track(_message.Message):
    __slots__ = ("track_id", "class_id", "class_name", "first_frame_index", "last_frame_index", "start_ms", "end_ms", "frames")
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    FIRST_FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    track_id: int
    class_id: int
    class_name: str
    first_frame_index: int
    last_frame_index: int
    start_ms: float
    end_ms: float
    frames: int
    def __init__(self, track_id: _Optional[int] = ..., class_id: _Optional[int] = ..., class_name: _Optional[str] = ..., first_frame_index: _Optional[int] = ..., last_frame_index: _Optional[int] = ..., start_ms: _Optional[float] = ..., end_ms: _Optional[float] = ..., frames: _Optional[int] = ...) -> None: ...

class GetResultsResponse(_message.Message):
    __slots__ = ("job_id", "status", "schema_version", "pipeline_id", "video", "sampling", "provenance", "results", "tracks", "next_page_token", "total_size")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    TRACKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    status: JobStatus
    schema_version: int
    pipeline_id: str
    video: VideoMetadata
    sampling: Sampling
    provenance: Provenance
    results: _containers.RepeatedCompositeFieldContainer[FrameResult]
    tracks: _containers.RepeatedCompositeFieldContainer[Track]
    next_page_token: str
    total_size: int
    def __init__(self, job_id: _Optional[str] = ..., status: _Optional[_Union[JobStatus, str]] = ..., schema_version: _Optional[int] = ..., pipeline_id: _Optional[str] = ..., video: _Optional[_Union[VideoMetadata, _Mapping]] = ..., sampling: _Optional[_Union[Sampling, _Mapping]] = ..., provenance: _Optional[_Union[Provenance, _Mapping]] = ..., results: _Optional[_Iterable[_Union[FrameResult, _Mapping]]] = ..., tracks: _Optional[_Iterable[_Union[Track, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class GetCapabilitiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PipelineInfo(_message.Message):
    __slots__ = ("pipeline_id", "description", "stages")
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    pipeline_id: str
    description: str
    stages: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, pipeline_id: _Optional[str] = ..., description: _Optional[str] = ..., stages: _Optional[_Iterable[str]] = ...) -> None: ...

class FormatInfo(_message.Message):
    __slots__ = ("format_id", "name", "extensions")
    FORMAT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    format_id: str
    name: str
    extensions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, format_id: _Optional[str] = ..., name: _Optional[str] = ..., extensions: _Optional[_Iterable[str]] = ...) -> None: ...

class DetectorInfo(_message.Message):
    __slots__ = ("model_file", "model_sha256", "class_names")
    MODEL_FILE_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    model_file: str
    model_sha256: str
    class_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model_file: _Optional[str] = ..., model_sha256: _Optional[str] = ..., class_names: _Optional[_Iterable[str]] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_upload_bytes", "sample_fps_min", "sample_fps_max", "max_frames_max", "imgsz_min", "imgsz_max", "imgsz_multiple", "page_size_max", "frame_side_min", "frame_side_max", "frame_pixels_max", "reference_bytes_max")
    MAX_UPLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FPS_MIN_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FPS_MAX_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAMES_MAX_FIELD_NUMBER: _ClassVar[int]
    IMGSZ_MIN_FIELD_NUMBER: _ClassVar[int]
    IMGSZ_MAX_FIELD_NUMBER: _ClassVar[int]
    IMGSZ_MULTIPLE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_MAX_FIELD_NUMBER: _ClassVar[int]
    FRAME_SIDE_MIN_FIELD_NUMBER: _ClassVar[int]
    FRAME_SIDE_MAX_FIELD_NUMBER: _ClassVar[int]
    FRAME_PIXELS_MAX_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_BYTES_MAX_FIELD_NUMBER: _ClassVar[int]
    max_upload_bytes: int
    sample_fps_min: float
    sample_fps_max: float
    max_frames_max: int
    imgsz_min: int
    imgsz_max: int
    imgsz_multiple: int
    page_size_max: int
    frame_side_min: int
    frame_side_max: int
    frame_pixels_max: int
    reference_bytes_max: int
    def __init__(self, max_upload_bytes: _Optional[int] = ..., sample_fps_min: _Optional[float] = ..., sample_fps_max: _Optional[float] = ..., max_frames_max: _Optional[int] = ..., imgsz_min: _Optional[int] = ..., imgsz_max: _Optional[int] = ..., imgsz_multiple: _Optional[int] = ..., page_size_max: _Optional[int] = ..., frame_side_min: _Optional[int] = ..., frame_side_max: _Optional[int] = ..., frame_pixels_max: _Optional[int] = ..., reference_bytes_max: _Optional[int] = ...) -> None: ...

class GetCapabilitiesResponse(_message.Message):
    __slots__ = ("pipelines", "default_pipeline", "default_options", "detector", "ocr_languages", "limits", "formats")
    PIPELINES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PIPELINE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    DETECTOR_FIELD_NUMBER: _ClassVar[int]
    OCR_LANGUAGES_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    FORMATS_FIELD_NUMBER: _ClassVar[int]
    pipelines: _containers.RepeatedCompositeFieldContainer[PipelineInfo]
    default_pipeline: str
    default_options: AnalysisOptions
    detector: DetectorInfo
    ocr_languages: _containers.RepeatedScalarFieldContainer[str]
    limits: Limits
    formats: _containers.RepeatedCompositeFieldContainer[FormatInfo]
    def __init__(self, pipelines: _Optional[_Iterable[_Union[PipelineInfo, _Mapping]]] = ..., default_pipeline: _Optional[str] = ..., default_options: _Optional[_Union[AnalysisOptions, _Mapping]] = ..., detector: _Optional[_Union[DetectorInfo, _Mapping]] = ..., ocr_languages: _Optional[_Iterable[str]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., formats: _Optional[_Iterable[_Union[FormatInfo, _Mapping]]] = ...) -> None: ...

class GetFrameImageRequest(_message.Message):
    __slots__ = ("job_id", "frame_index", "annotated")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FRAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    ANNOTATED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    frame_index: int
    annotated: bool
    def __init__(self, job_id: _Optional[str] = ..., frame_index: _Optional[int] = ..., annotated: _Optional[bool] = ...) -> None: ...

class GetFrameImageResponse(_message.Message):
    __slots__ = ("content_type", "data", "width", "height")
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    content_type: str
    data: bytes
    width: int
    height: int
    def __init__(self, content_type: _Optional[str] = ..., data: _Optional[bytes] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class GetContactSheetRequest(_message.Message):
    __slots__ = ("job_id", "columns", "tile_width", "max_frames")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    TILE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAMES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    columns: int
    tile_width: int
    max_frames: int
    def __init__(self, job_id: _Optional[str] = ..., columns: _Optional[int] = ..., tile_width: _Optional[int] = ..., max_frames: _Optional[int] = ...) -> None: ...

class GetContactSheetResponse(_message.Message):
    __slots__ = ("content_type", "data", "width", "height", "frame_indices")
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FRAME_INDICES_FIELD_NUMBER: _ClassVar[int]
    content_type: str
    data: bytes
    width: int
    height: int
    frame_indices: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, content_type: _Optional[str] = ..., data: _Optional[bytes] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., frame_indices: _Optional[_Iterable[int]] = ...) -> None: ...
