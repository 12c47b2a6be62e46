"""JobRepository contract on SQLite (embedded) and real Postgres (each test in its own schema)."""

import uuid
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from tests.integration.conftest import POSTGRES_URL
from videojobs.common.adapters.sql.engine import make_engine
from videojobs.common.adapters.sql.migrate import head_revision, current_revision, downgrade, upgrade
from videojobs.common.adapters.sql.repository import SqlJobRepository
from videojobs.common.errors import JobNotFound, TemporaryFault
from videojobs.common.options import AnalysisOptions
from videojobs.common.job import Job, JobStatus



@pytest.fixture(params=["sqlite", "postgres"])
def engine(request, tmp_path):
    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
        yield eng
        eng.dispose()
    else:
        yield request.getfixturevalue("pg_engine")


@pytest.fixture
def repo(engine):
    upgrade(engine)
    return SqlJobRepository(engine)


def tables(engine):
    return set(sa.inspect(engine).get_table_names())


def test_migrations_go_up_and_down_repeatably(engine):
    for _ in range(2):
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        assert {"jobs", "job_outbox", "worker_capabilities"} <= tables(engine)
        downgrade(engine, "base")
        assert current_revision(engine) is None
        assert not {"jobs", "job_outbox", "worker_capabilities"} & tables(engine)


def test_add_get_round_trip(repo):
    job = Job.submit("yolo", AnalysisOptions(sample_fps=2.0, classes=("bottle",)))
    repo.add(job)
    got = repo.get(job.job_id)
    assert got == job
    with pytest.raises(JobNotFound):
        repo.get(str(uuid.uuid4()))


def test_guarded_save_lets_exactly_one_writer_win(repo):
    job = Job.submit("yolo")
    repo.add(job)
    a, b = repo.get(job.job_id), repo.get(job.job_id)
    a.start("w-a", timedelta(seconds=30))
    b.start("w-b", timedelta(seconds=30))
    assert repo.save(a, JobStatus.PENDING, 0) is True
    assert repo.save(b, JobStatus.PENDING, 0) is False
    assert repo.get(job.job_id).worker_id == "w-a"
    # a later attempt fences off the earlier one's final write
    stale = repo.get(job.job_id)
    newer = repo.get(job.job_id)
    newer.lease_expires_at = None
    newer.start("w-c", timedelta(seconds=30))
    assert repo.save(newer, JobStatus.RUNNING, 1)
    stale.complete("results/x.json")
    assert repo.save(stale, JobStatus.RUNNING, 1) is False
    assert repo.get(job.job_id).status is JobStatus.RUNNING and repo.get(job.job_id).attempt == 2


def test_outbox_and_unfinished(repo):
    jobs = [Job.submit("yolo") for _ in range(3)]
    for j in jobs:
        repo.add(j)
    assert repo.unpublished_job_ids() == [j.job_id for j in jobs]
    repo.mark_published([jobs[0].job_id])
    assert repo.unpublished_job_ids() == [j.job_id for j in jobs[1:]]
    done = repo.get(jobs[2].job_id)
    done.give_up("x")
    repo.save(done, JobStatus.PENDING, 0)
    assert repo.unfinished_job_ids() == [jobs[0].job_id, jobs[1].job_id]


def test_unreachable_database_is_a_temporary_fault():
    repo = SqlJobRepository(make_engine("postgresql+psycopg://postgres@127.0.0.1:1/test"))
    with pytest.raises(TemporaryFault, match="database unavailable"):
        repo.ping()


def test_a_primary_demoted_to_a_standby_is_a_temporary_fault_and_its_connections_are_dropped(pg_engine):
    """A failover leaves pooled connections on the old primary, now read-only: a write there is a temporary
    fault (not an internal error), and the pool connects afresh, reaching the new primary."""
    upgrade(pg_engine)
    repo = SqlJobRepository(pg_engine)
    standby = {"now": False}

    @sa.event.listens_for(pg_engine, "connect")
    def reach(dbapi_conn, _record):  # while `standby`, a new connection reaches a read-only server
        if standby["now"]:
            with dbapi_conn.cursor() as cur:
                cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            dbapi_conn.commit()

    repo.add(Job.submit("yolo"))
    with pg_engine.connect() as conn:  # the pooled connection's server is demoted
        conn.exec_driver_sql("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        conn.commit()
    standby["now"] = True
    job = Job.submit("yolo")
    for _ in range(2):  # the pooled connection, then a new one to the same standby
        with pytest.raises(TemporaryFault, match="read-only transaction"):
            repo.add(job)
    standby["now"] = False  # the address reaches the new primary
    repo.add(job)
    assert repo.get(job.job_id).status is JobStatus.PENDING
    assert len(repo.unfinished_job_ids()) == 2


def test_concurrent_migrator_processes_do_not_collide(pg_engine):
    """A migration Job and several api replicas may run `videojobs migrate` at once (Postgres)."""
    import os
    import subprocess
    import sys

    engine = pg_engine
    env = {**os.environ, "VIDEOJOBS_DATABASE_URL": POSTGRES_URL,
           "VIDEOJOBS_DATABASE_SCHEMA": _schema_of(engine)}
    procs = [subprocess.Popen([sys.executable, "-m", "videojobs.cli", "migrate"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert all(f"revision {head_revision()}" in out for out in outputs)
    assert current_revision(engine) == head_revision()


def _schema_of(engine):
    with engine.connect() as conn:
        return conn.execute(sa.text("select current_schema()")).scalar()


def test_stranded_jobs(repo):
    from datetime import datetime, timezone

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    waiting = Job.submit("yolo", now=t0)
    orphan = Job.submit("yolo", now=t0)
    alive = Job.submit("yolo", now=t0)
    for job in (waiting, orphan, alive):
        repo.add(job)
    for job, lease in ((orphan, timedelta(seconds=30)), (alive, timedelta(days=3650))):
        job.start("w", lease, now=t0)
        repo.save(job, JobStatus.PENDING, 0)
    cutoff = t0 + timedelta(minutes=10)
    assert set(repo.stranded_job_ids(cutoff)) == {waiting.job_id, orphan.job_id}
    assert repo.stranded_job_ids(t0 - timedelta(minutes=1)) == []


def test_capability_store_keeps_the_newest_entry_per_worker(repo):
    from datetime import datetime, timedelta, timezone

    from videojobs.common.adapters.sql.capabilities import SqlCapabilityStore
    from videojobs.common.resources import WorkerCapabilities

    store = SqlCapabilityStore(repo.engine)
    assert store.latest() is None
    t0 = datetime(2026, 11, 30, 12, tzinfo=timezone.utc)

    def entry(worker, classes, at):
        return WorkerCapabilities(worker_id=worker, model_file="m.pt", model_sha256="a" * 64, class_names=classes,
                                  ocr_languages=["eng", "deu"], published_at=at)

    store.publish(entry("w1", ["bottle"], t0))
    store.publish(entry("w2", ["bottle", "cup"], t0 + timedelta(seconds=5)))
    assert store.latest() == entry("w2", ["bottle", "cup"], t0 + timedelta(seconds=5))
    store.publish(entry("w1", ["person"], t0 + timedelta(seconds=9)))  # a worker re-publishes: replaced, not added
    assert store.latest().class_names == ["person"] and store.latest().worker_id == "w1"


def test_retry_counters_round_trip(repo):
    from datetime import datetime, timezone

    job = Job.submit("yolo")
    repo.add(job)
    job.start("w", timedelta(seconds=30))
    assert repo.save(job, JobStatus.PENDING, 0)
    job.release_after_fault(now=datetime(2026, 11, 30, 12, tzinfo=timezone.utc))
    assert repo.save(job, JobStatus.RUNNING, 1)
    back = repo.get(job.job_id)
    assert (back.faults, back.crashes, back.faulting_since) == (1, 0, datetime(2026, 11, 30, 12, tzinfo=timezone.utc))


def test_reads_on_behalf_of_a_client_are_filtered_by_tenant(repo):
    mine = Job.submit("yolo", tenant_id="alpha")
    theirs = Job.submit("yolo", tenant_id="beta")
    for job in (mine, theirs):
        repo.add(job)
    assert repo.get_owned("alpha", mine.job_id) == mine
    with pytest.raises(JobNotFound):
        repo.get_owned("alpha", theirs.job_id)
    assert [j.job_id for j in repo.list_owned("alpha", None, 10)] == [mine.job_id]
    assert repo.get(theirs.job_id).tenant_id == "beta"  # the system read (workers) sees every job


def test_final_write_records_a_webhook_notice_in_the_same_transaction(repo):
    from videojobs.common.adapters.sql.tenants import SqlWebhookOutbox

    job = Job.submit("yolo", tenant_id="alpha", callback_url="https://example.com/hook")
    repo.add(job)
    job.cancel()
    assert repo.save(job, JobStatus.PENDING, 0) and job.events == []
    rows = SqlWebhookOutbox(repo.engine).deliveries_of(job.job_id)
    assert len(rows) == 1 and rows[0]["state"] == "pending" and rows[0]["event"]["type"] == "job.cancelled"
    stale = Job.submit("yolo", callback_url="https://example.com/hook")
    repo.add(stale)
    copy = repo.get(stale.job_id)
    copy.cancel()
    assert repo.save(copy, JobStatus.RUNNING, 0) is False  # a lost write records no notice
    assert SqlWebhookOutbox(repo.engine).deliveries_of(stale.job_id) == []


def test_the_tenants_migration_keeps_existing_jobs_under_the_default_tenant(engine):
    upgrade(engine, "0002")
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO jobs (job_id, status, pipeline_id, options, input_key, frames_done, frames_total, attempt, "
            "created_at, updated_at) VALUES ('0b9f8a52-3f1e-4d5c-9a7b-1c2d3e4f5a6b', 'COMPLETED', 'yolo', '{}', "
            "'inputs/x.mp4', 0, 0, 1, '2026-01-01 00:00:00', '2026-01-01 00:05:00')"))
    upgrade(engine)
    job = SqlJobRepository(engine).get("0b9f8a52-3f1e-4d5c-9a7b-1c2d3e4f5a6b")
    assert job.tenant_id == "default" and job.finished_at == job.updated_at
    downgrade(engine, "0002")
    upgrade(engine)


def _two_engines(backend, request, tmp_path):
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
        return make_engine(url), make_engine(url)
    pg = request.getfixturevalue("pg_engine")
    with pg.connect() as conn:
        schema = conn.execute(sa.text("select current_schema()")).scalar()
    return pg, make_engine(POSTGRES_URL, schema)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_two_sweepers_at_once_remove_exactly_the_expired_jobs_once(backend, request, tmp_path):
    """Retention on tiny values: two api processes' sweepers race; each expired job goes exactly once."""
    import threading
    from datetime import datetime, timezone

    from videojobs.api.retention import RetentionSweeper
    from videojobs.storage.local import LocalFolderStorage

    first, second = _two_engines(backend, request, tmp_path)
    upgrade(first)
    repos = [SqlJobRepository(first), SqlJobRepository(second)]
    storage = LocalFolderStorage(tmp_path / "storage")
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    jobs = {}
    for name, finished_hours_ago in (("old", 10), ("input-only", 3), ("fresh", 0.5), ("running", None)):
        for i in range(30 if name == "old" else 3):
            job = Job.submit("yolo", now=t0)
            repos[0].add(job)
            storage.save_bytes(b"video", job.input_key)
            if finished_hours_ago is not None:
                job.start("w", timedelta(seconds=30), now=t0)
                job.complete(f"results/{job.job_id}.json", now=t0 + timedelta(hours=10 - finished_hours_ago))
                storage.save_bytes(b"{}", job.output_key)
                repos[0].save(job, JobStatus.PENDING, 0)
            jobs.setdefault(name, []).append(job)
    now = t0 + timedelta(hours=10)
    sweepers = [RetentionSweeper(r, storage, retention=timedelta(hours=5), input_retention=timedelta(hours=2),
                                 batch=4, max_batches=100) for r in repos]
    reports, errors = [], []

    def run(sweeper):
        try:
            for _ in range(3):
                reports.append(sweeper.sweep_once(now))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in sweepers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sum(r.jobs_removed for r in reports) == 30  # never twice
    assert sum(r.inputs_removed for r in reports) == 33  # inputs of the old jobs go first, then the rest of them
    for job in jobs["old"]:
        with pytest.raises(JobNotFound):
            repos[0].get(job.job_id)
        assert not storage.exists(job.input_key) and not storage.exists(job.output_key)
    for job in jobs["input-only"]:
        kept = repos[0].get(job.job_id)
        assert kept.input_deleted_at is not None and not storage.exists(job.input_key)
        assert storage.exists(job.output_key)
    for job in jobs["fresh"] + jobs["running"]:
        assert storage.exists(job.input_key) and repos[0].get(job.job_id)
    second.dispose()


@pytest.mark.parametrize("host_off_by", [-90, 90])
def test_a_host_whose_clock_is_off_writes_leases_on_the_database_clock(pg_engine, monkeypatch, host_off_by):
    """A host 90 s behind would write leases every other worker sees as run out at once (and take the job);
    one 90 s ahead, leases that outlive a lost worker by 90 s. Synced, its leases end where the database's
    clock (every other synced host's) says."""
    from videojobs.common import clock

    upgrade(pg_engine)
    repo = SqlJobRepository(pg_engine)
    monkeypatch.setattr(clock, "_offset", timedelta(0))
    monkeypatch.setattr(clock, "host_now", lambda: datetime.now(timezone.utc) + timedelta(seconds=host_off_by))
    lease = timedelta(seconds=60)
    unsynced = Job.submit("yolo")
    unsynced.start("w-off", lease)
    assert abs((unsynced.lease_expires_at - repo.database_time()) - lease) > timedelta(seconds=80)

    measured = clock.DatabaseClock(repo.database_time).sync()
    assert abs(measured.total_seconds() + host_off_by) < 1
    job = Job.submit("yolo")
    job.start("w-off", lease)
    repo.add(job)
    seen_by_others = repo.get(job.job_id)
    assert abs((seen_by_others.lease_expires_at - repo.database_time()) - lease) < timedelta(seconds=1)
    assert not seen_by_others.lease_expired(repo.database_time())
    assert seen_by_others.lease_expired(repo.database_time() + lease)


def test_an_embedded_database_has_no_clock_to_follow(tmp_path):
    repo = SqlJobRepository(make_engine(f"sqlite:///{tmp_path / 'jobs.db'}"))
    assert repo.database_time() is None


def test_the_migrations_build_exactly_the_tables_the_code_declares(engine):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from videojobs.common.adapters.sql.tables import metadata

    upgrade(engine)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
