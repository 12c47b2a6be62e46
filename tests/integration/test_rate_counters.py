"""Request rates counted over every api process: `limits`' sliding window counter on the job database
(real Postgres, each test in its own schema; SQLite for the storage's own contract)."""

from __future__ import annotations

import logging
import time

import pytest
import sqlalchemy as sa
from limits import parse, strategies
from prometheus_client import REGISTRY

from scripts.servers import free_port
from tests.integration.conftest import POSTGRES_URL
from videojobs.api.quotas import TenantQuotas
from videojobs.api.rates import TenantRequestRate
from videojobs.common.adapters.factory import make_rate_counters
from videojobs.common.adapters.sql.engine import make_engine
from videojobs.common.adapters.sql.migrate import upgrade
from videojobs.common.adapters.sql.rates import SqlRateCounters
from videojobs.common.adapters.sql.repository import SqlJobRepository
from videojobs.common.adapters.sql.tables import rate_counters
from videojobs.common.errors import TooManyRequests
from videojobs.common.tenants import Caller

@pytest.fixture
def migrated(pg_engine):
    upgrade(pg_engine)
    return pg_engine


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request, tmp_path):
    if request.param == "postgres":
        yield request.getfixturevalue("migrated")
        return
    engine = make_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def refusals(gate: str) -> float:
    return sample("videojobs_request_rate_refusals_total", gate=gate)


def away_from_a_window_edge(seconds: int) -> None:
    """Windows start at multiples of their length: a test counting N calls in one waits out an edge close by."""
    if time.time() % seconds > seconds - 5:
        time.sleep(6)


def test_the_counters_keep_limits_sliding_window_contract(engine):
    counters = SqlRateCounters(engine)
    assert counters.check()
    limiter = strategies.SlidingWindowCounterRateLimiter(counters)
    rate = parse("3 per 1 hour")
    away_from_a_window_edge(3600)
    assert [limiter.hit(rate, "alpha") for _ in range(4)] == [True, True, True, False]
    assert limiter.hit(rate, "beta")  # a window of its own
    stats = limiter.get_window_stats(rate, "alpha")
    assert stats.remaining == 0 and time.time() < stats.reset_time <= time.time() + 3600
    assert limiter.get_window_stats(rate, "beta").remaining == 2
    assert not limiter.hit(rate, "gamma", cost=4)  # more than the whole limit at once
    limiter.clear(rate, "alpha")
    assert limiter.hit(rate, "alpha")
    # plain counters, as `limits` uses them: they start afresh once expired
    assert [counters.incr("k", 60), counters.incr("k", 60, amount=2), counters.get("k")] == [1, 3, 3]
    assert time.time() + 50 < counters.get_expiry("k") <= time.time() + 61
    assert counters.incr("gone", -1) == 1 and counters.get("gone") == 0 and counters.incr("gone", 60) == 1
    counters.clear("k")
    assert counters.get("k") == 0
    assert counters.reset() >= 3


def test_the_previous_window_weighs_by_how_much_of_it_the_sliding_window_covers(engine):
    counters = SqlRateCounters(engine)
    limiter = strategies.SlidingWindowCounterRateLimiter(counters)
    rate = parse("4 per 2 seconds")
    while time.time() % 2 > 0.2:  # at the start of a window
        time.sleep(0.01)
    window = int(time.time() // 2)
    assert [limiter.hit(rate, "alpha") for _ in range(5)] == [True] * 4 + [False]
    # 0.8-1.0 s into the next window the sliding window still covers 60-50% of this one: 2 of its 4 calls
    while not (int(time.time() // 2) == window + 1 and 0.8 <= time.time() % 2 < 0.95):
        time.sleep(0.01)
    previous, previous_ttl, current, _ = counters.get_sliding_window(rate.key_for("alpha"), 2)
    assert (previous, current) == (4, 0) and 0.95 < previous_ttl <= 1.25
    assert [limiter.hit(rate, "alpha") for _ in range(3)] == [True, True, False]


def test_a_tenants_calls_over_two_api_processes_stay_within_its_rate(migrated):
    shared = make_rate_counters(SqlJobRepository(migrated))
    assert isinstance(shared, SqlRateCounters)
    first, second = (TenantRequestRate(TenantQuotas.uniform("5 per 1 hour"), shared) for _ in range(2))
    assert first.shared and second.shared
    alpha = Caller("alpha")
    away_from_a_window_edge(3600)
    shared_refusals = refusals("shared")
    admitted, refused = 0, []
    for k in range(10):  # alternately on each replica: 5 each would pass their own gates
        try:
            (first, second)[k % 2].admit(alpha)
            admitted += 1
        except TooManyRequests as exc:
            refused.append(exc.retry_after_seconds)
    assert admitted == 5 and len(refused) == 5
    assert refusals("shared") - shared_refusals == 5
    assert all(1 <= s <= 3600 for s in refused), refused
    first.admit(Caller("beta"))  # other tenants are counted apart
    second.admit(Caller("beta"))


def test_replicas_racing_for_the_last_calls_of_a_window_admit_exactly_the_rate(migrated):
    from tests.conftest import load_script

    away_from_a_window_edge(3600)
    # 8 threads over two api processes' limiters, 15 calls each: 40 pass the processes' own gates
    raced = load_script("bench_rates").race(SqlRateCounters(migrated), threads=8, limit=20, calls_each=15)
    assert (raced["admitted"], raced["refused"]) == (20, 100)
    with migrated.connect() as conn:
        assert conn.execute(sa.select(sa.func.sum(rate_counters.c.count))).scalar() == 20


def test_past_windows_leave_the_table(migrated):
    limiter = strategies.SlidingWindowCounterRateLimiter(SqlRateCounters(migrated))
    rate = parse("5 per 1 second")
    for _ in range(4):  # a new window each time: its first call removes what expired
        limiter.hit(rate, "alpha")
        time.sleep(1.05)
    limiter.hit(rate, "alpha")
    with migrated.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(rate_counters)).scalar() <= 3


def test_sqlite_has_no_shared_counters_one_process_uses_it(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    assert make_rate_counters(SqlJobRepository(engine)) is None
    engine.dispose()


def test_while_the_shared_counters_are_unreachable_each_process_limits_on_its_own(caplog):
    down = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test?connect_timeout=2")
    rate = TenantRequestRate(TenantQuotas.uniform("3 per 1 hour"), SqlRateCounters(down))
    away_from_a_window_edge(3600)
    unreachable, process_refusals = sample("videojobs_request_rate_shared_unreachable_total"), refusals("process")
    with caplog.at_level(logging.WARNING, logger="videojobs.api.rates"):
        for _ in range(3):
            rate.admit(Caller("alpha"))
        with pytest.raises(TooManyRequests):
            rate.admit(Caller("alpha"))
    warnings = [r for r in caplog.records if "shared counters cannot be reached" in r.getMessage()]
    assert len(warnings) == 1  # once, not per call
    assert sample("videojobs_request_rate_shared_unreachable_total") - unreachable == 3  # each, in the metric
    assert refusals("process") - process_refusals == 1
    down.dispose()


def test_two_api_replicas_on_one_database_answer_a_tenant_within_its_rate_together(migrated, tmp_path):
    """The composition root wires the shared counters: two api servers on one Postgres schema."""
    import grpc

    from videojobs.api.bootstrap import build_api
    from videojobs.api.keys import create_key
    from videojobs.common.adapters.factory import make_tenant_store
    from videojobs.common.config import Settings
    from videojobs.v1 import jobs_pb2, jobs_pb2_grpc

    with migrated.connect() as conn:
        schema = conn.execute(sa.text("select current_schema()")).scalar()
    replicas = []
    try:
        for k in range(2):
            replicas.append(build_api(Settings(
                data_dir=tmp_path / f"api{k}", database_url=POSTGRES_URL, database_schema=schema, grpc_port=0,
                auth="keys", api_key_pepper="pepper", tenant_request_rate="4 per 1 hour")))
            replicas[-1].start()
        assert all(api.rates.shared for api in replicas)
        key = create_key(make_tenant_store(replicas[0].repo), "alpha", "", "pepper")["key"]
        away_from_a_window_edge(3600)
        codes = []
        for k in range(8):
            with grpc.insecure_channel(f"127.0.0.1:{replicas[k % 2].port}") as channel:
                try:
                    jobs_pb2_grpc.JobServiceStub(channel).ListJobs(
                        jobs_pb2.ListJobsRequest(), metadata=[("authorization", f"Bearer {key}")], timeout=30)
                    codes.append("OK")
                except grpc.RpcError as exc:
                    codes.append(exc.code().name)
        assert codes == ["OK"] * 4 + ["RESOURCE_EXHAUSTED"] * 4  # each replica alone would have answered 4
    finally:
        for api in replicas:
            api.stop(grace=0)


def test_the_rates_benchmark_measures_both_gates_and_a_race_that_admits_exactly_the_rate(tmp_path, capsys):
    from tests.conftest import load_script

    out = tmp_path / "bench-rates.json"
    assert load_script("bench_rates").main(["--calls", "200", "--threads", "4", "--race-limit", "30",
                                            "--out", str(out)]) == 0
    report = __import__("json").loads(out.read_text())
    assert report["process"]["calls"] == report["shared"]["calls"] == 200
    assert report["shared"]["median_ms"] > report["process"]["median_ms"] > 0  # a database round trip more
    assert report["own_limits_uncached"]["median_ms"] > report["own_limits"]["median_ms"] > 0  # a read per call
    assert (report["race"]["admitted"], report["race"]["refused"]) == (30, 30)
    assert "admitted" in capsys.readouterr().out
