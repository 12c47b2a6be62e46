#!/usr/bin/env python3
"""Run the production shape on this machine as separate processes (`make up` / `make down`).

    scripts/stack.py up --workers 3        # S3 server (SeaweedFS), api, gateway, N workers
    scripts/stack.py down                  # SIGTERM everything, wait, clean pid files
    scripts/stack.py status                # each process: alive, pid, metrics URL

Uses the machine's Postgres (database `test`, its own schema) and NATS JetStream
(its own stream/subject/consumer), and SeaweedFS's S3 gateway in MinIO's role (its
objects kept in STATE/s3 across `down` and `up`). Process ids, JSON logs
(STATE/<process>.log), metrics URLs (STATE/<process>.metrics) and the environment
live in the state folder (default var/stack).
The `Stack` class is also what the stack e2e tests and the throughput benchmark use.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import urllib.error
import urllib.request

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def _load_sibling(name: str):
    """``scripts/<name>.py``, once, whether this file runs as a script or is loaded by path."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


servers = _load_sibling("servers")


free_port = servers.free_port


@dataclass
class Stack:
    state_dir: Path
    name: str = "stack"
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    nats_url: str = "nats://127.0.0.1:4222"
    model: str = str(ROOT.parent / "shared" / "models" / "yolov8n.pt")
    http_port: int = 8080
    grpc_port: int = 50051
    extra_env: dict[str, str] = field(default_factory=dict)
    # An S3 server run by the caller (host:port); None starts SeaweedFS in STATE/s3.
    s3_endpoint: str | None = None
    s3_access_key: str = "testing"
    s3_secret_key: str = "testing"
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    # -- configuration ----------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        ident = "".join(c if c.isalnum() else "_" for c in self.name.lower())
        s3_endpoint = self.s3_endpoint or self._read("s3.endpoint")
        return {
            **os.environ,
            "YOLO_OFFLINE": "1",
            "YOLO_AUTOINSTALL": "0",
            "OMP_THREAD_LIMIT": "1",
            "VIDEOJOBS_DATA_DIR": str(self.state_dir / "data"),
            "VIDEOJOBS_DATABASE_URL": self.database_url,
            "VIDEOJOBS_DATABASE_SCHEMA": f"vj_{ident}",
            "VIDEOJOBS_QUEUE_URL": self.nats_url,
            "VIDEOJOBS_NATS_STREAM": f"VJ_{ident.upper()}",
            "VIDEOJOBS_NATS_SUBJECT": f"videojobs.{ident}.jobs",
            "VIDEOJOBS_NATS_DURABLE": f"workers_{ident}",
            "VIDEOJOBS_STORAGE_URL": f"s3://videojobs-{ident.replace('_', '-')}",
            "VIDEOJOBS_S3_ENDPOINT": s3_endpoint or "",
            "VIDEOJOBS_S3_ACCESS_KEY": self.s3_access_key,
            "VIDEOJOBS_S3_SECRET_KEY": self.s3_secret_key,
            "VIDEOJOBS_MODEL": self.model,
            "VIDEOJOBS_MODEL_CACHE_DIR": str(self.state_dir / "models"),
            "VIDEOJOBS_HTTP_PORT": str(self.http_port),
            "VIDEOJOBS_GRPC_PORT": str(self.grpc_port),
            "VIDEOJOBS_API_TARGET": f"127.0.0.1:{self.grpc_port}",
            "VIDEOJOBS_LOG_FORMAT": "json",
            **self.extra_env,
        }

    def _read(self, name: str) -> str | None:
        path = self.state_dir / name
        return path.read_text().strip() if path.exists() else None

    # -- processes -------------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.state_dir / f"{name}.log", "ab")
        proc = subprocess.Popen(args, env=env or self.env(), stdout=log, stderr=subprocess.STDOUT,
                                cwd=self.state_dir, start_new_session=True)
        self.procs[name] = proc
        (self.state_dir / f"{name}.pid").write_text(str(proc.pid))
        return proc

    def s3_server(self) -> "servers.SeaweedS3":
        """SeaweedFS on STATE/s3 (its process outlives this object: `down` stops it by pid)."""
        return servers.SeaweedS3(self.state_dir / "s3", log_path=self.state_dir / "s3.log",
                                 access_key=self.s3_access_key, secret_key=self.s3_secret_key)

    def start_s3(self) -> str:
        endpoint_file = self.state_dir / "s3.endpoint"
        endpoint_file.unlink(missing_ok=True)
        s3 = self.s3_server()
        try:
            s3.start()
        except servers.ServerError as exc:
            raise RuntimeError(f"S3 server did not start: {exc}") from exc
        s3.detach()  # `make up` returns; the server stays up until `make down`
        self.procs["s3"] = s3.proc
        (self.state_dir / "s3.pid").write_text(str(s3.pid))
        endpoint_file.write_text(s3.endpoint + "\n")
        return s3.endpoint

    def start_api(self, extra_env: dict[str, str] | None = None) -> None:
        port = free_port()
        self._spawn("api", [PYTHON, "-m", "videojobs.cli", "api"],
                    env={**self.env(), "VIDEOJOBS_METRICS_PORT": str(port), **(extra_env or {})})
        self._write_metrics_url("api", port)

    def start_gateway(self) -> None:
        self._spawn("gateway", [PYTHON, "-m", "videojobs.cli", "gateway"])
        self._write_metrics_url("gateway", self.http_port)  # /metrics on its REST port

    def start_worker(self, index: int, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        port = free_port()
        env = {**self.env(), "VIDEOJOBS_WORKER_HEALTH_PORT": str(free_port()), "VIDEOJOBS_WORKER_ID": f"worker{index}",
               "VIDEOJOBS_METRICS_PORT": str(port), **(extra_env or {})}
        proc = self._spawn(f"worker{index}", [PYTHON, "-m", "videojobs.cli", "worker"], env=env)
        self._write_metrics_url(f"worker{index}", port)
        return proc

    def _write_metrics_url(self, name: str, port: int) -> None:
        (self.state_dir / f"{name}.metrics").write_text(f"http://127.0.0.1:{port}/metrics\n")

    def metrics_urls(self) -> dict[str, str]:
        """Process name -> its Prometheus /metrics URL (api, gateway, each worker)."""
        return {p.stem: p.read_text().strip() for p in sorted(self.state_dir.glob("*.metrics"))}

    def up(self, workers: int, timeout: float = 180) -> None:
        """Start the stack and wait until it serves; if any part fails to come up, what did start is
        stopped before the error goes on (no server outlives a stack that never came up)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            if self.s3_endpoint is None:
                self.start_s3()
            self.start_api()
            self.wait_ready("api", timeout)
            self.start_gateway()
            for i in range(workers):
                self.start_worker(i)
            self.wait_http_ready(timeout)
            self.wait_workers_ready(timeout)
        except BaseException:
            self.down()
            raise

    def wait_ready(self, name: str, timeout: float) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.time() + timeout
        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.time() < deadline:
                self._check_alive(name)
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        raise RuntimeError(f"{name} not ready in {timeout}s: {self.tail(name)}")

    def wait_http_ready(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            self._check_alive("gateway")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/readyz", timeout=1):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        raise RuntimeError(f"gateway not ready in {timeout}s: {self.tail('gateway')}")

    def wait_workers_ready(self, timeout: float) -> None:
        """A worker is ready once it logged that it started (model loaded lazily on the first job)."""
        deadline = time.time() + timeout
        for name in [n for n in self.procs if n.startswith("worker")]:
            while "worker started" not in self.tail(name, 400):
                self._check_alive(name)
                if time.time() > deadline:
                    raise RuntimeError(f"{name} not started in {timeout}s: {self.tail(name)}")
                time.sleep(0.2)

    def _check_alive(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}: {self.tail(name)}")

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.state_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def down(self, timeout: float = 60) -> None:
        pids = {}
        for pid_file in self.state_dir.glob("*.pid"):
            pids[pid_file.stem] = int(pid_file.read_text())
        order = sorted(pids, key=lambda n: (n != "gateway", n.startswith("worker") is False, n == "api", n == "s3"))
        for name in order:
            _signal(pids[name], signal.SIGTERM)
        deadline = time.time() + timeout
        for name in order:
            while _alive(pids[name]) and time.time() < deadline:
                proc = self.procs.get(name)
                if proc is not None:
                    proc.poll()
                time.sleep(0.1)
            if _alive(pids[name]):
                _signal(pids[name], signal.SIGKILL)
            (self.state_dir / f"{name}.pid").unlink(missing_ok=True)
            (self.state_dir / f"{name}.metrics").unlink(missing_ok=True)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if "s3" in pids:
            ports = self.s3_server().saved_ports()
            servers.remove_weed_sockets(ports.values())

    def purge(self, delete_stream: bool = True) -> None:
        """Drop this stack's database schema and (optionally) its JetStream stream: tests, benchmarks."""
        import asyncio

        import sqlalchemy as sa

        env = self.env()
        engine = sa.create_engine(self.database_url)
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{env["VIDEOJOBS_DATABASE_SCHEMA"]}" CASCADE'))
        engine.dispose()
        if not delete_stream:
            return

        async def drop_stream() -> None:
            import nats
            from nats.js.errors import NotFoundError

            nc = await nats.connect(self.nats_url, connect_timeout=2)
            try:
                await nc.jetstream().delete_stream(env["VIDEOJOBS_NATS_STREAM"])
            except NotFoundError:
                pass
            finally:
                await nc.close()

        asyncio.run(drop_stream())

    def status(self) -> dict[str, bool]:
        return {p.stem: _alive(int(p.read_text())) for p in sorted(self.state_dir.glob("*.pid"))}

    def processes(self) -> list[dict[str, object]]:
        """Each process of the stack: name, pid, alive, metrics URL (None for the S3 server), log file."""
        urls = self.metrics_urls()
        out = []
        for pid_file in sorted(self.state_dir.glob("*.pid")):
            pid = int(pid_file.read_text())
            out.append({"name": pid_file.stem, "pid": pid, "alive": _alive(pid),
                        "metrics": urls.get(pid_file.stem), "log": str(self.state_dir / f"{pid_file.stem}.log")})
        return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", "2")))
    parser.add_argument("--state-dir", type=Path, default=ROOT / "var" / "stack")
    parser.add_argument("--model", default=os.environ.get("VIDEOJOBS_MODEL") or Stack.model)
    parser.add_argument("--http-port", type=int, default=int(os.environ.get("VIDEOJOBS_HTTP_PORT", "8080")))
    parser.add_argument("--grpc-port", type=int, default=int(os.environ.get("VIDEOJOBS_GRPC_PORT", "50051")))
    args = parser.parse_args(argv)
    stack = Stack(args.state_dir.resolve(), model=args.model, http_port=args.http_port, grpc_port=args.grpc_port)
    if args.action == "up":
        if any(stack.status().values()) if args.state_dir.exists() else False:
            print("stack already running; `make down` first", file=sys.stderr)
            return 1
        stack.up(args.workers)  # a stack that fails to come up is taken down again
        print(json.dumps({"rest": f"http://127.0.0.1:{stack.http_port}", "grpc": f"127.0.0.1:{stack.grpc_port}",
                          "workers": args.workers, "s3": stack._read("s3.endpoint"), "logs": str(stack.state_dir),
                          "metrics": stack.metrics_urls()}))
    elif args.action == "down":
        stack.down()
        print("stack stopped")
    else:
        processes = stack.processes()
        if not processes:
            print("no stack running (`make up` starts one)")
        for p in processes:
            print(f"{p['name']:<10} pid {p['pid']:<8} {'alive' if p['alive'] else 'DEAD ':<6} "
                  f"metrics {p['metrics'] or '-':<40} log {p['log']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
