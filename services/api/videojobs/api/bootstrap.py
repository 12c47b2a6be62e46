"""API composition root: `videojobs api` serves the gRPC JobService."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from datetime import timedelta

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from videojobs.api.auth import Authenticator
from videojobs.api.frames import FrameImages
from videojobs.api.grpc_service import JobServiceServicer, LenientRequests
from videojobs.api.metrics import BacklogSampler, GrpcMetricsInterceptor
from videojobs.api.retention import RetentionSweeper
from videojobs.api.service import JobsService, Lifecycle
from videojobs.api.uploads import UploadLimiter
from videojobs.api.quotas import TenantQuotas, service_defaults
from videojobs.api.rates import TenantRequestRate
from videojobs.api.webhooks import WebhookDispatcher, WebhookPolicy
from videojobs.common.adapters.factory import (
    make_capability_store,
    make_queue,
    make_rate_counters,
    make_repository,
    make_tenant_store,
    make_webhook_outbox,
)
from videojobs.common.config import Settings, load_settings
from videojobs.common.frames import FrameImageStore
from videojobs.common.clock import DatabaseClock
from videojobs.common.health import ReadinessMonitor
from videojobs.common import observability
from videojobs.common.observability import tracing
from videojobs.common.observability.metrics import CLOCK_OFFSET, MetricsServer
from videojobs.common.outbox import OutboxRelay
from videojobs.common.ports.jobs import AdmissionLimits, JobRepository
from videojobs.common.ports.queue import QueueService
from videojobs.common.ports.storage import StorageService
from videojobs.common.serving import bind_grpc, connection_age_options, grpc_server, stop_on_signals, wait_until_stopped
from videojobs.common.scratch import prepare_scratch
from videojobs.storage.factory import make_storage
from videojobs.v1 import jobs_pb2, jobs_pb2_grpc

log = logging.getLogger(__name__)

JOB_SERVICE = jobs_pb2.DESCRIPTOR.services_by_name["JobService"].full_name


@dataclass
class Api:
    settings: Settings
    repo: JobRepository
    storage: StorageService
    queue: QueueService
    relay: OutboxRelay
    jobs: JobsService
    frames: FrameImages
    readiness: ReadinessMonitor
    uploads: UploadLimiter
    auth: Authenticator
    sweeper: RetentionSweeper
    webhooks: WebhookDispatcher
    backlog: BacklogSampler
    rates: TenantRequestRate
    server: grpc.Server | None = None
    port: int = 0

    def bind(self) -> int:
        """Create the server and bind its port (PortInUse if taken); nothing runs yet."""
        # Uploads take at most their own slots; the other RPCs always keep these threads.
        # Connections end after their max age so clients spread over the replicas; an upload in flight on one
        # is cut by its own total timeout first.
        options = connection_age_options(self.settings.grpc_max_connection_age_seconds,
                                         self.settings.upload_total_timeout_seconds + 60)
        self.server = grpc_server(max_workers=self.uploads.max_concurrent + 16,
                                  interceptors=[*tracing.grpc_server_interceptors(), GrpcMetricsInterceptor(),
                                                LenientRequests(JOB_SERVICE)], options=options)
        jobs_pb2_grpc.add_JobServiceServicer_to_server(JobServiceServicer(self.jobs, self.auth, self.uploads,
                                                                          self.frames, self.rates),
                                                       self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.readiness.servicer, self.server)
        reflection.enable_server_reflection(
            (JOB_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server,
        )
        self.port = bind_grpc(self.server, self.settings.bind_host, self.settings.grpc_port, "gRPC (JobService)")
        return self.port

    def start(self) -> None:
        if self.server is None:
            self.bind()
        assert self.server is not None
        self.readiness.start()  # first: its checks set the clock (clock.DatabaseClock) the others write times by
        self.uploads.start()
        self.relay.start()
        self.sweeper.start()
        self.webhooks.start()
        self.backlog.start()
        self.server.start()
        log.info("gRPC JobService on %s:%d", self.settings.bind_host, self.port)
        if self.auth.mode == "none":
            log.warning("authentication is OFF (VIDEOJOBS_AUTH=none): anyone who reaches %s:%d may use the "
                        "service; every job belongs to tenant 'default'", self.settings.bind_host, self.port)
        else:
            log.info("authentication: API keys (create one with `videojobs keys create --tenant NAME`)")

    def stop(self, grace: float = 5.0) -> None:
        self.backlog.stop()
        self.readiness.stop()
        self.uploads.stop()
        if self.server:
            self.server.stop(grace).wait()
        self.relay.stop()
        self.sweeper.stop()
        self.webhooks.stop()


def build_api(settings: Settings, queue: QueueService | None = None) -> Api:
    repo = make_repository(settings)
    storage = make_storage(settings, prepare_scratch(settings.effective_scratch_dir))
    queue = queue or make_queue(settings)
    relay = OutboxRelay(repo, queue, stranded_after=timedelta(seconds=settings.stranded_after_seconds),
                        reconcile_every_seconds=settings.reconcile_interval_seconds)
    tenants = make_tenant_store(repo)
    quotas = TenantQuotas(tenants, service_defaults(settings))
    lifecycle = Lifecycle(
        retention=timedelta(hours=settings.retention_hours),
        input_retention=timedelta(hours=settings.input_retention_hours),
        limits=AdmissionLimits(settings.max_active_jobs_per_tenant, settings.max_queued_jobs),
        webhook_allow_private=settings.webhook_allow_private,
    )
    jobs = JobsService(repo, storage, relay, make_capability_store(repo), max_upload_bytes=settings.max_upload_bytes,
                       results_cache_bytes=settings.results_cache_bytes,
                       tenants=tenants, lifecycle=lifecycle, upload_prefix=settings.upload_prefix, quotas=quotas)
    frames = FrameImages(jobs, FrameImageStore(storage))
    clock = DatabaseClock(repo.database_time, on_measured=CLOCK_OFFSET.set)  # times follow the database's
    readiness = ReadinessMonitor(
        {"database": repo.ping, "clock": clock.sync, "queue": queue.ping, "storage": storage.ping}, services=[JOB_SERVICE]
    )
    uploads = UploadLimiter(settings.max_concurrent_uploads, settings.upload_idle_timeout_seconds,
                            settings.upload_total_timeout_seconds)
    auth = Authenticator(settings.effective_auth, tenants, settings.api_key_pepper)
    sweeper = RetentionSweeper(repo, storage, lifecycle.retention, lifecycle.input_retention,
                               interval_seconds=settings.sweep_interval_seconds, batch=settings.sweep_batch_size)
    webhooks = WebhookDispatcher(make_webhook_outbox(repo), tenants, WebhookPolicy(
        allow_private=settings.webhook_allow_private, timeout_seconds=settings.webhook_timeout_seconds,
        retry_base_seconds=settings.webhook_retry_base_seconds,
        give_up_after_seconds=settings.webhook_give_up_after_seconds, public_url=settings.public_url))
    backlog = BacklogSampler(repo, queue, settings.metrics_sample_seconds)
    return Api(settings, repo, storage, queue, relay, jobs, frames, readiness, uploads, auth, sweeper, webhooks,
               backlog, TenantRequestRate(quotas, make_rate_counters(repo)))


def main(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="videojobs api", description="Serve the gRPC JobService.").parse_args(argv)
    settings = load_settings()
    observability.configure("api", settings)
    api = build_api(settings)
    api.bind()
    metrics = MetricsServer(settings.bind_host, settings.metrics_port)
    metrics.start()
    log.info("metrics on %s", metrics.url)
    stop = stop_on_signals()
    api.start()
    wait_until_stopped(stop)
    api.stop()
    api.queue.close()
    metrics.stop()
    tracing.shutdown_tracing()
    return 0
