"""Settings: read once from VIDEOJOBS_* environment variables by a composition root."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting the services read. Defaults are the embedded, one-machine shape."""

    # The environment wins over `.env` in the working directory (`make install` writes one
    # naming the shared model, so every `videojobs` command run from the checkout finds it).
    model_config = SettingsConfigDict(env_prefix="VIDEOJOBS_", env_file=".env", extra="ignore", frozen=True)

    # -- network -----------------------------------------------------------------
    bind_host: str = "127.0.0.1"
    http_port: int = 8080
    grpc_port: int = 50051
    # A standalone worker serves grpc.health.v1 here (Kubernetes gRPC probes).
    worker_health_port: int = 50052
    # Where the REST gateway finds the gRPC JobService.
    api_target: str = "127.0.0.1:50051"
    # The gateway's calls to the api fail after this long (a timeout problem, 504) rather than wait
    # for ever on an api that stopped answering; forwarding an upload gets the upload total timeout.
    api_call_timeout_seconds: float = Field(default=30.0, gt=0)
    # The api ends each client connection this long after it opened (GOAWAY, +-10% jitter): RPCs in
    # flight finish (uploads get their total timeout and a minute), new ones go on a new connection.
    # A Kubernetes Service balances connections, not RPCs, so without it a client (the gateway)
    # stays on one api replica for ever, and replicas the autoscaler adds get none of its calls.
    # It also bounds how long an idle client holds a connection. 0 keeps connections for ever.
    grpc_max_connection_age_seconds: float = Field(default=300.0, ge=0)

    # -- adapters (chosen by URL scheme) --------------------------------------------
    data_dir: Path = Path("var")
    # Downloaded copies of inputs while a job runs (default: <data_dir>/scratch); each process
    # uses a folder of its own and empties it, and those of dead processes, at start.
    scratch_dir: str = ""
    # sqlite:///path.db (embedded) or postgresql+psycopg://user@host/db
    database_url: str = ""
    # Apply Alembic migrations when the api starts (Kubernetes runs them in a Job instead).
    migrate_on_start: bool = True
    # Postgres schema for the tables (tests give each run its own); empty = default.
    database_schema: str = ""
    # file:///abs/path or a relative folder (embedded), or s3://bucket (MinIO / S3)
    storage_url: str = ""
    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    # One S3 call gives up after about connect + read timeout times (retries + 1).
    s3_connect_timeout_seconds: float = 3.0
    s3_read_timeout_seconds: float = 20.0
    s3_retries: int = 1
    # memory:// (in-process, embedded) or nats://host:4222 (JetStream)
    queue_url: str = "memory://"
    nats_stream: str = "VIDEOJOBS"
    nats_subject: str = "videojobs.jobs"
    nats_durable: str = "workers"
    # Seconds a delivered job may go without a heartbeat before redelivery.
    ack_wait_seconds: float = 30.0
    # Analysis attempts lost to a crashed or killed worker before the job is FAILED.
    # Hand-backs (shutdown) and temporary faults of backing services do not count.
    max_attempts: int = 3
    # JetStream MaxDeliver: a safety net far above what retries use (the job store counts
    # attempts); messages that exhaust it are reclaimed by the api, never left behind.
    nats_max_deliver: int = 200
    # Temporary faults (storage, database) are retried with capped exponential backoff and
    # jitter for this long (not counted as attempts); after it the job is FAILED with the reason.
    fault_window_seconds: float = 600.0
    retry_backoff_base_seconds: float = 1.0
    retry_backoff_max_seconds: float = 30.0
    # An unfinished job untouched this long (PENDING not updated, RUNNING past its lease)
    # is published again by the api's reconciler when the queue has no backlog.
    stranded_after_seconds: float = 300.0
    # How often the api reclaims dead queue messages and republishes stranded jobs.
    reconcile_interval_seconds: float = 60.0

    # -- tenants and API keys -----------------------------------------------------------
    # "keys" (Authorization: Bearer KEY / gRPC `authorization` metadata) or "none". Empty:
    # "keys" whenever the service binds beyond loopback, "none" on 127.0.0.1 / ::1 / localhost.
    auth: str = Field(default="", pattern=r"^(|keys|none)$")
    # Server-side secret mixed into the stored hash of every API key (a Secret in Kubernetes).
    api_key_pepper: str = ""

    # -- job lifecycle ----------------------------------------------------------------------
    # Inputs of final jobs are removed this long after they finished; whole jobs (row,
    # input, results) after retention_hours. Status shows the job's `expires_at`.
    input_retention_hours: float = Field(default=24.0, gt=0)
    retention_hours: float = Field(default=168.0, gt=0)
    # How often the api's retention sweeper runs, and how many jobs one batch handles.
    sweep_interval_seconds: float = Field(default=60.0, gt=0)
    sweep_batch_size: int = Field(default=100, ge=1)
    # Admission: PENDING + RUNNING jobs per tenant, and PENDING jobs overall (0 = no bound).
    max_active_jobs_per_tenant: int = Field(default=100, ge=0)
    max_queued_jobs: int = Field(default=10000, ge=0)
    # Calls per tenant that each api process answers, as "N per M seconds" (a moving window: bursts of
    # up to N, N/M a second on average); over it, 429 / RESOURCE_EXHAUSTED. Empty: no limit.
    tenant_request_rate: str = ""

    # -- completion webhooks ----------------------------------------------------------------
    # Allow callback URLs on loopback and private networks (tests, trusted networks);
    # link-local addresses (cloud metadata) are refused regardless.
    webhook_allow_private: bool = False
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    # Retries back off exponentially from this delay; deliveries give up after give_up_after.
    webhook_retry_base_seconds: float = Field(default=5.0, gt=0)
    webhook_give_up_after_seconds: float = Field(default=3600.0, gt=0)
    # Public base URL of the REST gateway, prefixed to the URLs in notices (empty: relative).
    public_url: str = ""

    # The api keeps the results documents it answers from (their JSON, indexed) within this many bytes;
    # one document may take half of it.
    results_cache_bytes: int = Field(default=256 * 1024 * 1024, ge=0)

    # -- upload limits -------------------------------------------------------------
    max_upload_bytes: int = 1024 * 1024 * 1024
    upload_chunk_bytes: int = 1024 * 1024
    # Uploads received at once (gRPC Submit streams; the gateway's own bound is the same
    # setting); beyond it, 429 / RESOURCE_EXHAUSTED at once. Status reads never wait on them.
    max_concurrent_uploads: int = 8
    # Bytes the gateway's uploads may hold in its spool (its temp folder) at once; an upload that
    # would go past it gets 429 / TOO_MANY_UPLOADS, before it is read when it declares its length.
    # 0: no bound but the disk's. Kubernetes evicts a pod whose emptyDir outgrows its sizeLimit, so
    # set it below the gateway's /tmp sizeLimit there.
    upload_spool_bytes: int = Field(default=0, ge=0)
    # An upload that sends nothing for this long, or is still open after the total, is cut.
    upload_idle_timeout_seconds: float = 30.0
    upload_total_timeout_seconds: float = 3600.0
    # A REST connection must send a whole request line and headers within this long of opening,
    # or of its last answer; otherwise it gets a 408 and is closed (slow-header clients cannot
    # hold connections, and so file descriptors, for ever).
    http_header_timeout_seconds: float = Field(default=10.0, gt=0)
    # A REST client that takes none of an answer for this long (its socket full) is cut off.
    http_send_timeout_seconds: float = Field(default=60.0, gt=0)
    # SubmitFromStorage takes only keys under this prefix (written by clients, e.g. through
    # presigned URLs), never another job's inputs/ or results/.
    upload_prefix: str = "uploads/"

    # -- worker ----------------------------------------------------------------------
    # Ultralytics-loadable model: an Ultralytics checkpoint (yolov8n.pt: run at each video's
    # letterboxed shape), a fixed-shape .onnx file or an OpenVINO folder.
    model: str = "yolov8n.pt"
    # Where models exported per (model sha256, input shape, format) and auto's measured
    # choices are kept; shared safely by the worker processes of one machine or volume.
    model_cache_dir: Path = Path("var/models")
    # Bytes the exports in the model cache may take (0: no bound but the disk's). Past it, a new export
    # makes the least recently used go (not those used in the last 5 minutes). Each job may ask for its
    # own imgsz, and each (imgsz, frame shape) is an export of its own (about 12 MB for yolov8n).
    model_cache_bytes: int = Field(default=0, ge=0)
    # Detector runtime: "auto" (a short measured warm-up of those available, per input shape;
    # the choice and times go into provenance), "openvino", "onnxruntime" or "torch".
    detector_backend: str = Field(default="auto", pattern=r"^(auto|openvino|onnxruntime|torch)$")
    # Detector precision: "auto" keeps the runtime's CPU default (OpenVINO: bf16 on CPUs with AMX or AVX-512 BF16,
    # f32 elsewhere, as Ultralytics' own OpenVINO backend runs); "f32" everywhere gives the same
    # detections on every CPU kind, at about 2.7x the forward time on an AMX CPU.
    detector_precision: str = Field(default="auto", pattern=r"^(auto|f32)$")
    # Threads of the detector's runtime (OpenVINO: one-thread streams, a frame each); 0: the
    # usable cores (CPU affinity, cgroup quota, cpu_limit). When set, it also
    # bounds the FFmpeg decoder's threads (several worker processes sharing a machine, e.g.
    # 1 per process on 2 cores); unset, the decoder keeps FFmpeg's default.
    inference_threads: int = Field(default=0, ge=0)
    # CPU limit the orchestrator gives the process (Kubernetes: resourceFieldRef limits.cpu); 0 = none known.
    cpu_limit: float = Field(default=0.0, ge=0)
    worker_id: str = ""
    worker_threads: int = Field(default=1, ge=1)
    # Idle backoff between empty polls: starts at min, doubles up to max.
    idle_backoff_min_seconds: float = 0.05
    idle_backoff_max_seconds: float = 2.0
    heartbeat_seconds: float = 10.0
    # Lease of a RUNNING job in the database; re-taken by another worker once expired.
    lease_seconds: float = 60.0
    # Jobs with more sampled frames than this are split into segments that any worker takes
    # (0: never split). 304 = 38 batches of 8: at sample_fps=1 a segment is about 5 minutes of
    # video and 22-29 s of yolo work here (bench_segments, one worker), so a crash costs at most
    # that, while the per-segment overhead (download, open, seek from the keyframe before) stays
    # under 1% of it.
    segment_frames: int = Field(default=304, ge=0)
    # Bound on waiting for a video decode to make progress.
    decode_timeout_seconds: float = 30.0
    # Each analysed frame is kept as a JPEG (for the viewer and contact sheets), scaled
    # to at most this many pixels on its longest side; 0 keeps no frame images.
    frame_image_max_side: int = Field(default=1280, ge=0, le=8192)

    log_level: str = "INFO"
    # "json": one JSON object per line (the images' default); "text": readable lines for a terminal.
    log_format: Literal["json", "text"] = "text"
    # Prometheus /metrics of the api and of each worker process (the gateway serves it on http_port).
    metrics_port: int = 9464
    # How often the api samples the backlog gauges (queue depth, outbox, oldest pending job).
    metrics_sample_seconds: float = 5.0

    @field_validator("tenant_request_rate")
    @classmethod
    def _a_rate_limits_reads(cls, value: str) -> str:
        from videojobs.common.tenants import check_request_rate

        return check_request_rate(value)

    # -- derived ----------------------------------------------------------------------
    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'videojobs.db').resolve()}"

    @property
    def effective_scratch_dir(self) -> Path:
        return Path(self.scratch_dir) if self.scratch_dir else self.data_dir / "scratch"

    @property
    def effective_storage_url(self) -> str:
        return self.storage_url or f"file://{(self.data_dir / 'storage').resolve()}"

    @property
    def effective_auth(self) -> str:
        """`auth`, or its default: keys unless the service binds to loopback only."""
        return self.auth or ("none" if self.bind_host in ("127.0.0.1", "::1", "localhost") else "keys")

    @property
    def effective_inference_threads(self) -> int:
        """`inference_threads`, or the usable cores (see ``cpus.default_inference_threads``)."""
        if self.inference_threads:
            return self.inference_threads
        from videojobs.common.cpus import default_inference_threads, usable_cpus

        return default_inference_threads(usable_cpus(cpu_limit=self.cpu_limit))

    @property
    def is_embedded_queue(self) -> bool:
        return self.queue_url.startswith("memory:")


def load_settings(**overrides: object) -> Settings:
    """Read the environment once; composition roots call this and pass the result down."""
    return Settings(**overrides)  # type: ignore[arg-type]
