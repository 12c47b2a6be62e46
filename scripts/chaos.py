#!/usr/bin/env python3
"""Chaos runs against the production shape: private Postgres, NATS and S3 (SeaweedFS), each behind a
cuttable TCP proxy, with the api, the gateway and N workers as separate processes.

    .venv/bin/python scripts/chaos.py                  # every scenario, full size (make chaos)
    .venv/bin/python scripts/chaos.py --quick          # shorter faults, fewer jobs (the CI test)
    .venv/bin/python scripts/chaos.py --only s3_down --json var/chaos.json

Scenarios: SIGKILL a worker every few seconds while jobs run; NATS stopped; Postgres
cut at its proxy, killed (a crash) and restarted, and frozen (SIGSTOP); S3 stopped, and frozen;
stalled gRPC uploads plus slow REST uploads while status is polled; the api's and two workers' host
clocks far off (libfaketime) while the skewed workers are killed; and, full size and as root, the host of
Postgres, then of NATS, lost: every open connection silent for good, new ones answered. Each reports the
jobs accepted, completed, failed (with reasons), stuck, duplicate completions, results
objects per job, leftover scratch files, time to drain after the fault ends, and the
p99 of status reads during the scenario; `check()` says which promises broke.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import servers  # noqa: E402
from stack import Stack  # noqa: E402

SAMPLE = ROOT.parent / "shared" / "media" / "bottle-detection.mp4"
MODEL = ROOT.parent / "shared" / "models" / "yolov8n.pt"
FINAL = ("COMPLETED", "FAILED")
# The gateway's call timeout in the chaos stack: a status read the frozen database holds is answered by then.
API_CALL_TIMEOUT = 5


@dataclass(frozen=True)
class Size:
    fault_seconds: float
    jobs: int
    kill_jobs: int
    drain_timeout: float = 120.0
    slow_uploads: int = 300
    hosts_lost: bool = True  # the scenarios of a backend's host lost (root only: see Chaos.links)


FULL = Size(fault_seconds=30, jobs=12, kill_jobs=60)
QUICK = Size(fault_seconds=8, jobs=4, kill_jobs=10, slow_uploads=100, hosts_lost=False)


@dataclass
class Report:
    scenario: str
    accepted: int = 0
    completed: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    stuck: int = 0
    duplicates: int = 0
    results_objects: dict[str, int] = field(default_factory=dict)  # objects per completed job -> how many jobs
    leftover_scratch_files: int = 0
    drain_seconds: float | None = None
    status_p99_ms: float | None = None
    # Status reads that need the frozen backend cannot be quick; they must still be answered (a timeout
    # problem after the gateway's call timeout) rather than hang.
    status_p99_limit_ms: float = 500.0
    status_samples: int | None = None  # status reads the probe made, when the scenario ran one
    status_errors: int = 0
    # Connections silenced for good (a host lost) that a service still held open once the jobs drained: it
    # never gave up on them, and whatever waited on one waits for the kernel's ~15 minutes.
    silent_connections_kept: int | None = None
    notes: list[str] = field(default_factory=list)
    unmet: list[str] = field(default_factory=list)  # what a scenario checks of its own set-up or promises

    def problems(self) -> list[str]:
        out = list(self.unmet)
        if self.completed != self.accepted:
            out.append(f"{self.accepted - self.completed} accepted job(s) not COMPLETED")
        if self.stuck:
            out.append(f"{self.stuck} stuck")
        if self.duplicates:
            out.append(f"{self.duplicates} duplicate completion(s)")
        if set(self.results_objects) - {"1"}:
            out.append(f"results objects per job: {self.results_objects}")
        if self.leftover_scratch_files:
            out.append(f"{self.leftover_scratch_files} leftover scratch file(s)")
        if self.drain_seconds is None or self.drain_seconds > 120:
            out.append(f"drain took {self.drain_seconds} s")
        if self.status_samples is not None and self.status_samples < 10:
            out.append(f"only {self.status_samples} status read(s) during the scenario")
        if self.silent_connections_kept:
            out.append(f"{self.silent_connections_kept} silent connection(s) still held")
        if self.status_p99_ms is not None and self.status_p99_ms > self.status_p99_limit_ms:
            out.append(f"status p99 {self.status_p99_ms} ms (limit {self.status_p99_limit_ms:g})")
        return out


class Chaos:
    """The backends (each behind a proxy), the stack on top, and a client."""

    def __init__(self, state_dir: Path, workers: int = 3, links: bool = True) -> None:
        self.state_dir = state_dir
        self.workers = workers
        self._exit = ExitStack()
        self.pg = self._exit.enter_context(servers.PrivatePostgres())
        self.nats = self._exit.enter_context(servers.PrivateNats(state_dir / "nats"))
        self.s3 = self._exit.enter_context(servers.SeaweedS3(state_dir / "s3"))
        self.pg_proxy = self._exit.enter_context(servers.TcpProxy.in_front_of(self.pg))
        self.nats_proxy = self._exit.enter_context(servers.TcpProxy.in_front_of(self.nats))
        self.s3_proxy = self._exit.enter_context(servers.TcpProxy.in_front_of(self.s3))
        # With `links`, where a network namespace can be made (root), Postgres and NATS are reached through a
        # BlackHoleLink in front of their proxies, whose open connections can go silent for good: the host lost.
        self.links = links and not servers.black_holes_unavailable()
        pg_path, nats_path = self.pg_proxy, self.nats_proxy
        if self.links:
            self.pg_link = self._exit.enter_context(servers.BlackHoleLink(self.pg_proxy.host, self.pg_proxy.port))
            self.nats_link = self._exit.enter_context(servers.BlackHoleLink(self.nats_proxy.host,
                                                                            self.nats_proxy.port))
            pg_path, nats_path = self.pg_link, self.nats_link
        http_port, grpc_port = servers.free_ports(2)
        self.stack = Stack(
            state_dir / "stack", name="chaos", http_port=http_port, grpc_port=grpc_port, model=str(MODEL),
            database_url=self.pg.url_via(pg_path), nats_url=f"nats://{nats_path.endpoint}",
            s3_endpoint=self.s3_proxy.endpoint,
            extra_env={
                "VIDEOJOBS_LEASE_SECONDS": "10", "VIDEOJOBS_HEARTBEAT_SECONDS": "2",
                "VIDEOJOBS_ACK_WAIT_SECONDS": "10", "VIDEOJOBS_STRANDED_AFTER_SECONDS": "20",
                "VIDEOJOBS_RECONCILE_INTERVAL_SECONDS": "5", "VIDEOJOBS_RETRY_BACKOFF_MAX_SECONDS": "8",
                "VIDEOJOBS_S3_CONNECT_TIMEOUT_SECONDS": "1", "VIDEOJOBS_S3_READ_TIMEOUT_SECONDS": "4",
                "VIDEOJOBS_S3_RETRIES": "0", "VIDEOJOBS_IDLE_BACKOFF_MAX_SECONDS": "1",
                "VIDEOJOBS_UPLOAD_IDLE_TIMEOUT_SECONDS": "5",
                "VIDEOJOBS_API_CALL_TIMEOUT_SECONDS": str(API_CALL_TIMEOUT),
                # A worker is SIGKILLed every 3 s by the scenario itself, not by its input: more
                # lost attempts are allowed than the default 3, which guards against inputs that
                # crash every worker they reach.
                "VIDEOJOBS_MAX_ATTEMPTS": "8",
            },
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=30)
        self.accepted: list[str] = []

    def up(self) -> None:
        self.stack.state_dir.mkdir(parents=True, exist_ok=True)
        self.stack.up(workers=self.workers)

    def close(self) -> None:
        try:
            self.stack.down(timeout=30)
        finally:
            self.http.close()
            self._exit.close()

    # -- load ----------------------------------------------------------------------------------
    def submit(self, retry_for: float = 0.0, frames: int = 2) -> str | None:
        """One REST submit (yolo, `frames` consecutive frames); retried on 503 for up to `retry_for` seconds."""
        deadline = time.monotonic() + retry_for
        data = SAMPLE.read_bytes()
        while True:
            try:
                r = self.http.post("/video/submit", files={"file": ("s.mp4", data, "video/mp4")},
                                   data={"pipeline_id": "yolo", "max_frames": str(frames), "sample_fps": "0"})
                if r.status_code == 202:
                    job_id = r.json()["job_id"]
                    self.accepted.append(job_id)
                    return job_id
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                return None
            time.sleep(0.5)

    def submit_many(self, n: int, retry_for: float = 0.0, frames: int = 2) -> list[str]:
        with ThreadPoolExecutor(4) as pool:
            return [j for j in pool.map(lambda _: self.submit(retry_for, frames), range(n)) if j]

    def statuses(self, ids: list[str]) -> dict[str, dict]:
        out = {}
        for job_id in ids:
            try:
                r = self.http.get(f"/video/status/{job_id}", timeout=5)
                if r.status_code == 200:
                    out[job_id] = r.json()
            except httpx.TransportError:
                pass
        return out

    def drain(self, ids: list[str], timeout: float) -> tuple[float | None, dict[str, dict]]:
        started = time.monotonic()
        while True:
            states = self.statuses(ids)
            if len(states) == len(ids) and all(s["status"] in FINAL for s in states.values()):
                return time.monotonic() - started, states
            if time.monotonic() - started > timeout:
                return None, states
            time.sleep(0.5)

    # -- observation ----------------------------------------------------------------------------
    def worker_completions(self) -> Counter:
        counts: Counter = Counter()
        for log in self.stack.state_dir.glob("worker*.log"):
            for job_id in re.findall(r"job ([0-9a-f-]{36}): COMPLETED", log.read_text(errors="replace")):
                counts[job_id] += 1
        return counts

    def results_objects(self, ids: list[str]) -> Counter:
        client = self.s3.client()
        bucket = "videojobs-chaos"
        names = Counter(o.object_name for o in client.list_objects(bucket, prefix="results/", recursive=True))
        return Counter(names.get(f"results/{job_id}.json", 0) for job_id in ids)

    def restart(self, name: str, extra_env: dict[str, str] | None = None) -> None:
        """SIGTERM the api or a worker and start it again with `extra_env` (the api: until it serves)."""
        proc = self.stack.procs[name]
        proc.send_signal(signal.SIGTERM)
        proc.wait(90)
        if name == "api":
            self.stack.start_api(extra_env)
            self.stack.wait_ready("api", 120)
        else:
            self.stack.start_worker(int(name.removeprefix("worker")), extra_env)

    def running_on(self, name: str, ids: list[str], timeout: float) -> str | None:
        """The first of `ids` that process `name` logs RUNNING and not yet ended, within `timeout` s; or None."""
        deadline = time.monotonic() + timeout
        log = self.stack.state_dir / f"{name}.log"
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            for job_id in ids:
                if f"job {job_id}: RUNNING" in text and not re.search(f"job {job_id}: (COMPLETED|FAILED)", text):
                    return job_id
            time.sleep(0.1)
        return None

    def clock_offsets(self) -> dict[str, float | None]:
        """Each process's last measured offset of its host clock to the database's (its metrics)."""
        out: dict[str, float | None] = {}
        for name, url in self.stack.metrics_urls().items():
            if name == "gateway":
                continue
            deadline = time.monotonic() + 30
            out[name] = None
            while out[name] is None and time.monotonic() < deadline:
                try:
                    found = re.search(r"^videojobs_clock_offset_seconds ([-+0-9.e]+)$",
                                      httpx.get(url, timeout=5).text, re.M)
                except httpx.TransportError:
                    found = None
                out[name] = round(float(found.group(1)), 1) if found else None
                if out[name] is None:
                    time.sleep(0.5)
        return out

    def scratch_files(self) -> int:
        root = self.stack.state_dir / "data" / "scratch"
        return sum(1 for p in root.rglob("*") if p.is_file()) if root.exists() else 0


class StatusProbe:
    """Polls one job's status from `pollers` threads and records each answer's latency."""

    def __init__(self, chaos: Chaos, job_id: str, pollers: int = 1) -> None:
        self._chaos, self._job_id = chaos, job_id
        self.latencies: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(pollers)]

    def __enter__(self) -> "StatusProbe":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def _run(self) -> None:
        with httpx.Client(base_url=self._chaos.http.base_url, timeout=10) as http:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    ok = http.get(f"/video/status/{self._job_id}").status_code == 200
                except httpx.TransportError:
                    ok = False
                self.latencies.append(time.perf_counter() - t0)
                self.errors += not ok
                self._stop.wait(0.05)

    def p99_ms(self) -> float | None:
        if len(self.latencies) < 10:
            return None
        return round(statistics.quantiles(self.latencies, n=100)[98] * 1000, 1)


# -- scenarios --------------------------------------------------------------------------------------
def outage(chaos: Chaos, size: Size, name: str, fault: Callable[[], str | None], heal: Callable[[], None],
           status_p99_limit_ms: float = 500.0, pollers: int = 1) -> Report:
    """Jobs queued and running when a backend fails; the fault lasts `fault_seconds`; then all must drain.
    What `fault` returns, if anything, is noted in the report."""
    first = len(chaos.accepted)
    probe_job = chaos.submit(retry_for=30)
    before = chaos.submit_many(size.jobs, retry_for=30, frames=40)  # a few seconds of work each
    with StatusProbe(chaos, probe_job, pollers) as probe:
        unfinished = sum(1 for s in chaos.statuses(before).values() if s["status"] not in FINAL)
        said = fault()
        fault_started = time.monotonic()
        during = []
        while time.monotonic() - fault_started < size.fault_seconds:
            job_id = chaos.submit(retry_for=0)  # refused while a backend is down: a client retries later
            if job_id:
                during.append(job_id)
            time.sleep(1.0)
        heal()
    ids = chaos.accepted[first:]
    report = finish(chaos, name, ids, size, probe,
                    notes=[f"{len(before) + 1} submitted before the fault ({unfinished} of them unfinished when it "
                           f"began), {len(during)} accepted during it"] + ([said] if isinstance(said, str) else []))
    report.status_p99_limit_ms = status_p99_limit_ms
    return report


def finish(chaos: Chaos, name: str, ids: list[str], size: Size, probe: StatusProbe | None,
           notes: list[str] | None = None) -> Report:
    drain, states = chaos.drain(ids, size.drain_timeout)
    report = Report(name, accepted=len(ids), notes=notes or [])
    report.drain_seconds = round(drain, 1) if drain is not None else None
    report.completed = sum(1 for s in states.values() if s["status"] == "COMPLETED")
    report.failed = dict(Counter(s["error_message"] for s in states.values() if s["status"] == "FAILED"))
    report.stuck = len(ids) - sum(1 for s in states.values() if s["status"] in FINAL)
    completions = chaos.worker_completions()
    report.duplicates = sum(1 for job_id in ids if completions[job_id] > 1)
    completed = [j for j, s in states.items() if s["status"] == "COMPLETED"]
    report.results_objects = {str(k): v for k, v in chaos.results_objects(completed).items()}
    report.leftover_scratch_files = chaos.scratch_files()
    if probe is not None:
        report.status_p99_ms = probe.p99_ms()
        report.status_samples = len(probe.latencies)
        report.status_errors = probe.errors
    return report


class WorkerKiller:
    """While in use: SIGKILLs one of the workers `indexes` every `every` seconds and starts it again, with
    the extra environment `env_of` gives it."""

    def __init__(self, chaos: Chaos, indexes: list[int], every: float = 3.0,
                 env_of: Callable[[int], dict[str, str] | None] = lambda index: None) -> None:
        self._chaos, self._indexes, self._every, self._env_of = chaos, indexes, every, env_of
        self.kills = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "WorkerKiller":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        rng = random.Random(7)
        while not self._stop.wait(self._every):
            index = rng.choice(self._indexes)
            proc = self._chaos.stack.procs[f"worker{index}"]
            try:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
            except ProcessLookupError:
                pass
            self.kills += 1
            self._chaos.stack.start_worker(index, self._env_of(index))


def kill_workers(chaos: Chaos, size: Size) -> Report:
    first = len(chaos.accepted)
    probe_job = chaos.submit(retry_for=30)
    with StatusProbe(chaos, probe_job) as probe:
        with WorkerKiller(chaos, list(range(chaos.workers))) as killer:
            chaos.submit_many(size.kill_jobs - 1, retry_for=30, frames=10)  # long enough to be killed mid-job
            ids = chaos.accepted[first:]
            chaos.drain(ids, size.drain_timeout)
    chaos.stack.wait_workers_ready(120)
    return finish(chaos, "worker_sigkill_every_3s", ids, size, probe, notes=[f"{killer.kills} workers killed"])


# The clock_skew scenario's hosts: the api's clock 20 minutes ahead, worker0's 20 minutes behind, worker1's an
# hour ahead, worker2's right. S3 servers refuse signatures 15 minutes off their clock; a lease is 10 s here.
SKEWED_CLOCKS = {"api": 1200, "worker0": -1200, "worker1": 3600}  # seconds


def clock_skew(chaos: Chaos, size: Size) -> Report:
    """The api and two workers restarted on hosts whose clocks are far off (libfaketime) while jobs run and
    the skewed workers are killed now and then; then every process back on the true clock. Leases, stranded
    jobs and S3 signatures must follow the servers' clocks, not the hosts'."""
    first = len(chaos.accepted)
    skewed = {name: servers.host_clock_off(seconds) for name, seconds in SKEWED_CLOCKS.items()}
    chaos.restart("api", skewed["api"])
    for name in SKEWED_CLOCKS:
        if name.startswith("worker"):
            chaos.restart(name, skewed[name])
    chaos.stack.wait_workers_ready(120)
    offsets = chaos.clock_offsets()
    probe_job = chaos.submit(retry_for=30)
    with StatusProbe(chaos, probe_job) as probe:
        with WorkerKiller(chaos, [0, 1], env_of=lambda index: skewed[f"worker{index}"]) as killer:
            batch = chaos.submit_many(2 * size.jobs, retry_for=30, frames=40)  # a few seconds of work each
            chaos.drain(batch, size.drain_timeout)
        # worker1's host is lost mid-job and its pod comes back on a host whose clock is right: the job it held
        # must be taken again once its lease ends by the database's clock (10 s), not an hour later.
        late = chaos.submit_many(size.jobs, retry_for=30, frames=40)
        held = chaos.running_on("worker1", late, timeout=60)
        chaos.stack.procs["worker1"].send_signal(signal.SIGKILL)
        chaos.stack.procs["worker1"].wait(10)
        chaos.stack.start_worker(1)
        ids = chaos.accepted[first:]
    report = finish(chaos, "clock_skew", ids, size, probe,
                    notes=[f"host clocks off by (s): {SKEWED_CLOCKS}", f"offsets to the database's measured (s): {offsets}",
                           f"{killer.kills} skewed workers killed",
                           f"worker1's host lost while it ran job {held}; back on a true clock"])
    if held is None:
        report.unmet.append("worker1 ran none of the last jobs: its loss was not tested")
    for name, seconds in SKEWED_CLOCKS.items():  # the fake took: each process measured its own skew
        expected = -seconds
        if offsets.get(name) is None or abs(offsets[name] - expected) > 5:
            report.unmet.append(f"{name}: offset {offsets.get(name)} s measured, {expected:g} s expected")
    for name in SKEWED_CLOCKS:  # back on the true clock for the scenarios after
        chaos.restart(name)
    chaos.stack.wait_workers_ready(120)
    return report


def stalled_uploads(chaos: Chaos, size: Size) -> Report:
    """16 gRPC Submit streams that stop sending and `slow_uploads` REST uploads that dribble, while status is polled."""
    import grpc

    from videojobs.v1 import jobs_pb2, jobs_pb2_grpc

    first = len(chaos.accepted)
    probe_job = chaos.submit(retry_for=30)
    release = threading.Event()
    channel = grpc.insecure_channel(f"127.0.0.1:{chaos.stack.grpc_port}")
    stub = jobs_pb2_grpc.JobServiceStub(channel)

    def stalled():
        yield jobs_pb2.SubmitRequest(spec=jobs_pb2.JobSpec(pipeline_id="yolo"))
        yield jobs_pb2.SubmitRequest(chunk=SAMPLE.read_bytes()[:4096])
        release.wait(120)

    def grpc_upload() -> str:
        try:
            stub.Submit(stalled(), timeout=120)
            return "accepted"
        except grpc.RpcError as err:
            return err.code().name

    def slow_rest() -> None:
        head = (b"POST /video/submit HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\n"
                b"Content-Length: 1000000\r\n\r\n--B\r\n")
        try:
            with socket.create_connection(("127.0.0.1", chaos.stack.http_port), timeout=30) as sock:
                sock.sendall(head)
                sock.recv(1024)  # whatever the gateway answers (408 or 429), or the close
        except OSError:
            pass

    with StatusProbe(chaos, probe_job) as probe, ThreadPoolExecutor(16 + 64) as pool:
        grpc_results = [pool.submit(grpc_upload) for _ in range(16)]
        rest = [pool.submit(slow_rest) for _ in range(size.slow_uploads)]
        time.sleep(size.fault_seconds)
        release.set()
        outcomes = Counter(f.result(timeout=180) for f in grpc_results)
        for f in rest:
            f.result(timeout=180)
        good = chaos.submit(retry_for=30)  # a normal upload gets through afterwards
    channel.close()
    ids = chaos.accepted[first:]
    report = finish(chaos, "stalled_uploads", ids, size, probe,
                    notes=[f"gRPC stalled streams: {dict(outcomes)}", f"{size.slow_uploads} slow REST uploads",
                           f"normal upload afterwards: {'accepted' if good else 'REFUSED'}"])
    if not good:
        report.notes.append("a normal upload was refused after the stall")
        report.stuck += 1
    return report


def scenarios(chaos: Chaos, size: Size) -> dict[str, Callable[[], Report]]:
    def restart_pg() -> None:
        chaos.pg.kill()
        time.sleep(size.fault_seconds)
        chaos.pg.start()

    table = {
        "worker_kills": lambda: kill_workers(chaos, size),
        "nats_down": lambda: outage(chaos, size, "nats_stopped", chaos.nats.stop, chaos.nats.start),
        "postgres_down": lambda: outage(chaos, size, "postgres_cut", chaos.pg_proxy.cut, chaos.pg_proxy.restore),
        "postgres_crash": lambda: outage(chaos, size, "postgres_killed_and_restarted", chaos.pg.kill, chaos.pg.start),
        "s3_down": lambda: outage(chaos, size, "s3_stopped", chaos.s3.stop, chaos.s3.start),
        "s3_frozen": lambda: outage(chaos, size, "s3_frozen", chaos.s3.freeze, chaos.s3.thaw),
        # SIGSTOP: connections stay open and nothing answers. Status reads need the database: each is answered
        # within the gateway's call timeout (a timeout problem while frozen), none hangs. A read takes that long
        # while frozen, so 8 pollers make enough of them.
        "postgres_frozen": lambda: outage(chaos, size, "postgres_frozen", chaos.pg.freeze, chaos.pg.thaw,
                                          status_p99_limit_ms=(API_CALL_TIMEOUT + 1) * 1000, pollers=8),
        "stalled_uploads": lambda: stalled_uploads(chaos, size),
        "clock_skew": lambda: clock_skew(chaos, size),
    }
    if chaos.links:
        # Every open connection to the server goes silent for good (no reset), and new ones reach it: its host
        # died and its address leads to another. The clients must give up on the silent ones themselves.
        def host_lost(name: str, link: "servers.BlackHoleLink") -> Callable[[], Report]:
            def fault() -> str:
                return f"{len(link.drop_open())} open connection(s) silenced"

            def scenario() -> Report:
                report = outage(chaos, size, name, fault, lambda: None,  # they stay silent
                                status_p99_limit_ms=(API_CALL_TIMEOUT + 1) * 1000, pollers=8)
                report.silent_connections_kept = len(link.silenced_still_open())
                return report

            return scenario

        table["postgres_host_lost"] = host_lost("postgres_host_lost", chaos.pg_link)
        table["nats_host_lost"] = host_lost("nats_host_lost", chaos.nats_link)
    return table


def run(size: Size, only: list[str] | None = None, workers: int = 3, state_dir: Path | None = None) -> list[Report]:
    state_dir = state_dir or Path(tempfile.mkdtemp(prefix="videojobs-chaos-"))
    chaos = Chaos(state_dir, workers=workers, links=size.hosts_lost)
    if size.hosts_lost and not chaos.links:
        print(f"chaos: no host-lost scenarios here: {servers.black_holes_unavailable()}", flush=True)
    reports: list[Report] = []
    try:
        chaos.up()
        table = scenarios(chaos, size)
        for name in only or list(table):
            print(f"chaos: {name} ...", flush=True)
            report = table[name]()
            reports.append(report)
            print(format_report(report), flush=True)
    finally:
        chaos.close()
    return reports


def format_report(r: Report) -> str:
    verdict = "ok" if not r.problems() else "BROKEN: " + "; ".join(r.problems())
    return (f"  {r.scenario:32s} accepted={r.accepted:3d} completed={r.completed:3d} failed={sum(r.failed.values())} "
            f"stuck={r.stuck} duplicates={r.duplicates} objects/job={r.results_objects} "
            f"scratch_files={r.leftover_scratch_files} drain={r.drain_seconds}s status_p99={r.status_p99_ms}ms "
            f"status_reads={r.status_samples} status_errors={r.status_errors} "
            + (f"silent_kept={r.silent_connections_kept} " if r.silent_connections_kept is not None else "")
            + f"-> {verdict}" + (f"\n      {'; '.join(r.notes)}" if r.notes else "")
            + (f"\n      failed: {r.failed}" if r.failed else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter faults and fewer jobs (CI)")
    parser.add_argument("--only", action="append", help="run only this scenario (repeatable)")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the reports here")
    args = parser.parse_args(argv)
    reports = run(QUICK if args.quick else FULL, args.only, args.workers)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([r.__dict__ | {"problems": r.problems()} for r in reports], indent=2))
    broken = [r for r in reports if r.problems()]
    print(f"chaos: {len(reports) - len(broken)}/{len(reports)} scenario(s) kept every promise")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
