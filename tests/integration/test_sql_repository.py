"""JobRepository contract on SQLite (embedded) and real Postgres (each test in its own schema)."""

import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa

from videojobs.common.adapters.sql.engine import make_engine
from videojobs.common.adapters.sql.migrate import head_revision, current_revision, downgrade, upgrade
from videojobs.common.adapters.sql.repository import SqlJobRepository
from videojobs.common.errors import JobNotFound, TemporaryFault
from videojobs.common.options import AnalysisOptions
from videojobs.common.job import Job, JobStatus

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_engine():
    """A Postgres engine on a schema of its own, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    eng = make_engine(POSTGRES_URL, schema)
    yield eng
    eng.dispose()
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()


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
