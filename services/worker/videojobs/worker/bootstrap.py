"""Worker composition root: `videojobs worker` pulls jobs from the configured queue."""

from __future__ import annotations

import argparse
import logging
import threading
from datetime import timedelta
from typing import TYPE_CHECKING

from grpc_health.v1 import health_pb2_grpc

from videojobs.common.adapters.factory import make_capability_store, make_queue, make_repository
from videojobs.common.config import Settings, load_settings
from videojobs.common.frames import FrameImageStore
from videojobs.common.clock import DatabaseClock
from videojobs.common.health import ReadinessMonitor
from videojobs.common import observability
from videojobs.common.observability import tracing
from videojobs.common.observability.metrics import CLOCK_OFFSET, MetricsServer
from videojobs.common.adapters.sql.repository import SqlJobRepository
from videojobs.common.ports.queue import QueueService
from videojobs.common.ports.storage import StorageService
from videojobs.common.scratch import prepare_scratch
from videojobs.storage.factory import make_storage
from videojobs.common.retry import Backoff
from videojobs.common.serving import bind_grpc, grpc_server, stop_on_signals, wait_until_stopped
from videojobs.worker.worker import JobWorker, WorkerPolicy

if TYPE_CHECKING:
    from videojobs.worker.frames import FrameImageWriter
    from videojobs.worker.pipeline.service import VideoFilePipelineService

log = logging.getLogger(__name__)


def policy_from_settings(settings: Settings) -> WorkerPolicy:
    return WorkerPolicy(
        lease=timedelta(seconds=settings.lease_seconds),
        heartbeat_seconds=settings.heartbeat_seconds,
        max_attempts=settings.max_attempts,
        idle_backoff_min=settings.idle_backoff_min_seconds,
        idle_backoff_max=settings.idle_backoff_max_seconds,
        backoff=Backoff(settings.retry_backoff_base_seconds, settings.retry_backoff_max_seconds),
        fault_window=timedelta(seconds=settings.fault_window_seconds),
        segment_frames=settings.segment_frames,
    )


MAX_OCR_THREADS = 4


def build_analyzer(settings: Settings) -> "VideoFilePipelineService":
    """The analysis pipeline with the worker's settings (model, cache, backend, decode bound)."""
    from videojobs.worker.pipeline.service import VideoFilePipelineService

    # Worker threads of one process share its cores.
    threads = max(1, settings.effective_inference_threads // settings.worker_threads)
    return VideoFilePipelineService(
        model=settings.model,
        model_cache_dir=settings.model_cache_dir,
        model_cache_bytes=settings.model_cache_bytes,
        detector_backend=settings.detector_backend,
        detector_precision=settings.detector_precision,
        inference_threads=threads,
        decode_timeout_seconds=settings.decode_timeout_seconds,
        decode_threads=settings.inference_threads,
        # OCR threads on the same cores (a Tesseract engine each, so at most MAX_OCR_THREADS).
        ocr_threads=min(threads, MAX_OCR_THREADS),
        scratch_dir=settings.effective_scratch_dir,
    )


def build_workers(
    settings: Settings,
    repo: SqlJobRepository,
    queue: QueueService,
    storage: StorageService,
    stop_event: threading.Event,
) -> list[JobWorker]:
    """One JobWorker (with its own analyzer and model) per worker thread.

    Ids are `VIDEOJOBS_WORKER_ID-<thread>` (the pod's name on Kubernetes), or host-pid-thread
    when unset: unique per process and thread either way.
    """
    policy = policy_from_settings(settings)
    capabilities = make_capability_store(repo)
    frame_images = build_frame_image_writer(settings, storage)
    workers = []
    for i in range(settings.worker_threads):
        worker_id = f"{settings.worker_id}-{i}" if settings.worker_id else None
        workers.append(
            JobWorker(
                queue=queue,
                storage=storage,
                repo=repo,
                analyzer=build_analyzer(settings),
                policy=policy,
                worker_id=worker_id,
                stop_event=stop_event,
                capabilities=capabilities,
                frame_images=frame_images,
            )
        )
    return workers


def build_frame_image_writer(settings: Settings, storage: StorageService) -> "FrameImageWriter":
    """What keeps the analysed frames' images (the viewer shows them)."""
    from videojobs.worker.frames import FrameImageWriter

    return FrameImageWriter(FrameImageStore(storage), settings.frame_image_max_side)


def start_threads(workers: list[JobWorker]) -> list[threading.Thread]:
    threads = [threading.Thread(target=w.run_forever, name=w.worker_id, daemon=True) for w in workers]
    for t in threads:
        t.start()
    return threads


def main(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="videojobs worker", description="Run a worker on the configured queue.").parse_args(argv)
    settings = load_settings()
    observability.configure("worker", settings)
    repo = make_repository(settings, migrate=False)
    queue = make_queue(settings)
    storage = make_storage(settings, prepare_scratch(settings.effective_scratch_dir))
    if settings.is_embedded_queue:
        log.warning("VIDEOJOBS_QUEUE_URL is memory://: a standalone worker sees no jobs; use `videojobs serve` or nats://")

    clock = DatabaseClock(repo.database_time, on_measured=CLOCK_OFFSET.set)  # times follow the database's
    readiness = ReadinessMonitor(
        {"database": repo.ping, "clock": clock.sync, "queue": queue.ping, "storage": storage.ping}, services=["videojobs.worker"]
    )
    health_server = grpc_server(max_workers=2, thread_name_prefix="health")
    health_pb2_grpc.add_HealthServicer_to_server(readiness.servicer, health_server)
    bind_grpc(health_server, settings.bind_host, settings.worker_health_port, "the worker's gRPC health")
    health_server.start()
    readiness.start()
    metrics = MetricsServer(settings.bind_host, settings.metrics_port)
    metrics.start()

    stop = stop_on_signals()
    workers = build_workers(settings, repo, queue, storage, stop)
    threads = start_threads(workers)
    log.info("worker started: %d thread(s) (%s), queue %s, metrics on %s", len(threads),
             ", ".join(w.worker_id for w in workers), settings.queue_url, metrics.url)
    wait_until_stopped(stop)
    log.info("stopping: finishing or handing back current jobs")
    for t in threads:
        t.join(timeout=60)
    readiness.stop()
    health_server.stop(grace=2)
    queue.close()
    metrics.stop()
    tracing.shutdown_tracing()
    return 0
