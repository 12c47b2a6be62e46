#!/usr/bin/env python
"""What the tenant request-rate check costs each call, per process and shared over api processes.

Times ``TenantRequestRate.admit`` (the check every gRPC call makes first) in one process against a
Postgres job database, in a schema of its own that is dropped afterwards:

- process: the api process's own moving window in memory (SQLite deployments; every deployment's
  first gate);
- shared: that window, then the sliding window counter every api process shares in Postgres
  (``rate_counters``: one conditional upsert per call);
- own limits: the process window, each of the 20 tenants with a rate of its own (``videojobs tenants
  set``) read through ``TenantQuotas`` as the api reads it (the store asked at most every 2 s per
  tenant), and with that cache off (the store asked on every call: the bound of what a change costs);

each single-threaded (median and p99 of `--calls` calls over 20 tenants, under a rate no call
reaches), then with `--threads` threads over two limiter instances (two api processes' worth)
racing for one tenant's rate of `--race-limit` calls: admitted must equal the limit exactly.
Prints a summary and writes JSON (default var/bench-rates.json).

    python scripts/bench_rates.py
    python scripts/bench_rates.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test --calls 5000
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from videojobs.api.quotas import TenantQuotas
from videojobs.api.rates import TenantRequestRate
from videojobs.common.adapters.sql.engine import make_engine
from videojobs.common.adapters.sql.migrate import upgrade
from videojobs.common.adapters.sql.rates import SqlRateCounters
from videojobs.common.adapters.sql.tenants import SqlTenantStore
from videojobs.common.cpus import cpu_model, usable_cpus
from videojobs.common.errors import TooManyRequests
from videojobs.common.tenants import Caller, TenantLimits

REPO = Path(__file__).resolve().parents[1]
UNREACHED = "1000000000 per 1 hour"
TENANTS = 20


def latency(rate: TenantRequestRate, calls: int) -> dict:
    """Median and p99 of `admit` in ms, after a warm-up of a tenth of the calls."""
    warm = max(1, calls // 10)
    times = []
    for k in range(warm + calls):
        t0 = time.perf_counter()
        rate.admit(Caller(f"tenant-{k % TENANTS}"))
        if k >= warm:
            times.append(time.perf_counter() - t0)
    times.sort()
    return {"calls": calls, "median_ms": round(statistics.median(times) * 1000, 4),
            "p99_ms": round(times[int(len(times) * 0.99)] * 1000, 4)}


def race(shared: SqlRateCounters, threads: int, limit: int, calls_each: int) -> dict:
    """Threads over two api processes' limiters, all for one tenant: how many calls got through."""
    replicas = [TenantRequestRate(TenantQuotas.uniform(f"{limit} per 1 hour"), shared) for _ in range(2)]
    admitted = refused = 0
    lock, start = threading.Lock(), threading.Barrier(threads)

    def hammer(rate: TenantRequestRate) -> None:
        nonlocal admitted, refused
        start.wait()
        for _ in range(calls_each):
            try:
                rate.admit(Caller("racing"))
                outcome = "admitted"
            except TooManyRequests:
                outcome = "refused"
            with lock:
                admitted, refused = (admitted + 1, refused) if outcome == "admitted" else (admitted, refused + 1)

    workers = [threading.Thread(target=hammer, args=(replicas[k % 2],)) for k in range(threads)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    seconds = time.perf_counter() - t0
    return {"threads": threads, "limit": limit, "calls": threads * calls_each, "admitted": admitted,
            "refused": refused, "calls_per_second": round(threads * calls_each / seconds, 1)}


def own_limits(engine: sa.Engine, cache_seconds: float | None = None) -> TenantQuotas:
    """Every benchmarked tenant with a rate of its own in the store, read as the api reads it."""
    store = SqlTenantStore(engine)
    for k in range(TENANTS):
        store.ensure_tenant(f"tenant-{k}")
        store.set_limits(f"tenant-{k}", TenantLimits(request_rate="999999999 per 1 hour"))
    defaults = TenantLimits(0, UNREACHED)
    return TenantQuotas(store, defaults) if cache_seconds is None else TenantQuotas(store, defaults, cache_seconds)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    p.add_argument("--calls", type=int, default=3000)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--race-limit", type=int, default=200)
    p.add_argument("--out", type=Path, default=REPO / "var" / "bench-rates.json")
    args = p.parse_args(argv)

    schema = f"bench_rates_{uuid.uuid4().hex[:8]}"
    engine = make_engine(args.database_url, schema)
    try:
        upgrade(engine)
        shared = SqlRateCounters(engine)
        report = {
            "cpu": cpu_model(), "cores": usable_cpus(),
            "process": latency(TenantRequestRate(TenantQuotas.uniform(UNREACHED)), args.calls),
            "shared": latency(TenantRequestRate(TenantQuotas.uniform(UNREACHED), shared), args.calls),
            "own_limits": latency(TenantRequestRate(own_limits(engine)), args.calls),
            "own_limits_uncached": latency(TenantRequestRate(own_limits(engine, cache_seconds=0)), args.calls),
            "race": race(shared, args.threads, args.race_limit, calls_each=max(1, args.race_limit // 2)),
        }
    finally:
        engine.dispose()
        admin = sa.create_engine(args.database_url)
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()
    print(f"admit, process window only: median {report['process']['median_ms']} ms, p99 {report['process']['p99_ms']} ms")
    print(f"admit, + shared counters:   median {report['shared']['median_ms']} ms, p99 {report['shared']['p99_ms']} ms")
    for key, what in (("own_limits", "own rates, 2 s cache:"), ("own_limits_uncached", "own rates, each read:")):
        print(f"admit, {what:<21} median {report[key]['median_ms']} ms, p99 {report[key]['p99_ms']} ms")
    r = report["race"]
    print(f"race: {r['threads']} threads on 2 limiters, {r['calls']} calls for a rate of {r['limit']}: "
          f"{r['admitted']} admitted, {r['refused']} refused, {r['calls_per_second']} calls/s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {args.out}")
    return 0 if r["admitted"] == r["limit"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
