#!/usr/bin/env python3
"""Jobs/s through submit -> queue -> worker -> COMPLETED on the production shape.

Starts the stack of scripts/stack.py (Postgres, NATS JetStream, S3 server, api,
gateway, N worker processes) once per worker count, submits tiny jobs
(`max_frames=1`, pipeline `yolo`) over gRPC, and times until every job is COMPLETED.
Each worker processes one warm-up job first, so model loading is not counted.
Prints a table and writes JSON (default bench-results/throughput.json).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from videojobs.v1 import jobs_pb2, jobs_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "media" / "bottle-detection.mp4"
_spec = importlib.util.spec_from_file_location("stack", ROOT / "scripts" / "stack.py")
stack_module = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = stack_module  # dataclasses look their module up
_spec.loader.exec_module(stack_module)

DONE = (jobs_pb2.JOB_STATUS_COMPLETED, jobs_pb2.JOB_STATUS_FAILED)


def submit(stub, data: bytes) -> str:
    def messages():
        yield jobs_pb2.SubmitRequest(spec=jobs_pb2.JobSpec(pipeline_id="yolo", options=jobs_pb2.AnalysisOptions(max_frames=1)))
        yield jobs_pb2.SubmitRequest(chunk=data)
    return stub.Submit(messages()).job_id


def wait_all(stub, ids: list[str], timeout: float) -> dict[str, int]:
    pending, outcome = set(ids), {}
    deadline = time.time() + timeout
    while pending and time.time() < deadline:
        for job_id in list(pending):
            status = stub.GetStatus(jobs_pb2.GetStatusRequest(job_id=job_id)).job.status
            if status in DONE:
                outcome[job_id] = status
                pending.discard(job_id)
        time.sleep(0.05)
    if pending:
        raise RuntimeError(f"{len(pending)} job(s) not finished in {timeout}s")
    return outcome


def run(workers: int, jobs: int, state_root: Path) -> dict:
    stack = stack_module.Stack(state_dir=state_root / f"w{workers}", name=f"bench_{workers}_{uuid.uuid4().hex[:6]}",
                               http_port=stack_module.free_port(), grpc_port=stack_module.free_port())
    stack.up(workers=workers)
    try:
        data = SAMPLE.read_bytes()
        with grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}") as channel:
            stub = jobs_pb2_grpc.JobServiceStub(channel)
            wait_all(stub, [submit(stub, data) for _ in range(workers * 2)], 300)  # warm-up: every model loaded
            start = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                ids = list(pool.map(lambda _: submit(stub, data), range(jobs)))
            submitted = time.perf_counter() - start
            outcome = wait_all(stub, ids, 600)
            elapsed = time.perf_counter() - start
        completed = sum(1 for s in outcome.values() if s == jobs_pb2.JOB_STATUS_COMPLETED)
        return {"workers": workers, "jobs": jobs, "completed": completed, "submit_s": round(submitted, 3),
                "elapsed_s": round(elapsed, 3), "jobs_per_s": round(jobs / elapsed, 3)}
    finally:
        stack.down()
        stack.purge()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeat", type=int, default=1, help="runs per worker count; the median is reported")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "throughput.json")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="vj-bench-") as tmp:
        for workers in args.workers:
            runs = [run(workers, args.jobs, Path(tmp) / f"r{i}") for i in range(args.repeat)]
            median = statistics.median(r["jobs_per_s"] for r in runs)
            results.append({"workers": workers, "median_jobs_per_s": median, "runs": runs})
            print(f"workers={workers:<2} jobs={args.jobs} median {median:.2f} jobs/s  runs={[r['jobs_per_s'] for r in runs]}", flush=True)
    base = results[0]["median_jobs_per_s"]
    for r in results:
        r["speedup_vs_first"] = round(r["median_jobs_per_s"] / base, 2) if base else None
    report = {"benchmark": "submit->queue->worker->COMPLETED, max_frames=1, pipeline yolo", "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
