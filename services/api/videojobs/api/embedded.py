"""Embedded composition root: `videojobs serve` runs api, gateway and worker(s) in one process.

Defaults need no servers: SQLite, a local folder, an in-process queue. The queue
is rebuilt from the job table at start, so a restart never strands a job.
"""

from __future__ import annotations

import argparse
import logging
import threading

from videojobs.api.bootstrap import build_api
from videojobs.common.config import load_settings
from videojobs.common import observability
from videojobs.common.observability import tracing
from videojobs.gateway import bootstrap as gateway
from videojobs.gateway.app import create_app
from videojobs.worker.bootstrap import build_workers, start_threads
from videojobs.worker.worker import hand_back_orphans, unfinished_messages

log = logging.getLogger(__name__)


def main(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="videojobs serve", description="Everything in one process.").parse_args(argv)
    settings = load_settings()
    observability.configure("serve", settings)
    # Both ports first: a taken one stops the process before anything starts or says it serves.
    http_socket = gateway.bind(settings)
    api = build_api(settings)
    try:
        api.bind()
    except BaseException:
        http_socket.close()
        raise
    if settings.is_embedded_queue:
        orphans = hand_back_orphans(api.repo)
        for message in unfinished_messages(api.repo):
            api.queue.enqueue(message)
        log.info("queue rebuilt: %d unfinished job(s), %d handed back", api.queue.size(), orphans)
    api.start()

    stop = threading.Event()
    workers = build_workers(settings, api.repo, api.queue, api.storage, stop)
    threads = start_threads(workers)

    app = create_app(settings, api_target=f"127.0.0.1:{api.port}")
    log.info("REST gateway on http://%s:%d  (gRPC on :%d, %d worker thread(s); metrics of all on /metrics)",
             settings.bind_host, settings.http_port, api.port, len(threads))
    gateway.serve_http(app, settings, http_socket)  # returns on SIGTERM/SIGINT; the rest then shuts down in order
    log.info("stopping: workers finish or hand back their jobs")
    stop.set()
    for t in threads:
        t.join(timeout=60)
    api.stop()
    tracing.shutdown_tracing()
    return 0
