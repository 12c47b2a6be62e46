import pytest

from tests.fakes import FakeJobRepository
from videojobs.common.adapters.memory_queue import InMemoryQueue
from videojobs.common.errors import BadRequest, TemporaryFault
from videojobs.common.job import Job
from videojobs.common.outbox import OutboxRelay
from videojobs.common.results import page_bounds


class DownQueue(InMemoryQueue):
    down = True

    def enqueue(self, job_id, dedupe_id=None, trace_context=None):
        if self.down:
            raise TemporaryFault("nats unreachable")
        super().enqueue(job_id, dedupe_id, trace_context)


def test_relay_publishes_committed_jobs_once():
    repo, queue = FakeJobRepository(), InMemoryQueue()
    jobs = [Job.submit("yolo") for _ in range(3)]
    for j in jobs:
        repo.add(j)
    relay = OutboxRelay(repo, queue)
    assert relay.publish_pending() == 3
    assert relay.publish_pending() == 0
    assert [queue.dequeue() for _ in range(3)] == [j.job_id for j in jobs]


def test_jobs_wait_in_the_outbox_while_the_queue_is_down():
    repo, queue = FakeJobRepository(), DownQueue()
    job = Job.submit("yolo")
    repo.add(job)
    relay = OutboxRelay(repo, queue)
    assert relay.publish_pending() == 0
    assert repo.unpublished_job_ids() == [job.job_id]
    queue.down = False
    assert relay.publish_pending() == 1
    assert queue.dequeue() == job.job_id


def test_paging_walks_every_frame_once_in_order():
    frames = list(range(25))
    seen, token = [], ""
    while True:
        start, end, token = page_bounds(len(frames), 10, token)
        seen.extend(frames[start:end])
        if not token:
            break
    assert seen == frames


@pytest.mark.parametrize("token", ["garbage!", "bzo5OQ", "o:-1", "x" * 100])
def test_bad_page_tokens_are_rejected(token):
    with pytest.raises(BadRequest) as err:
        page_bounds(5, 2, token)
    assert err.value.violations[0].field == "page_token"


def test_reconciler_republishes_stranded_jobs_only_when_the_queue_is_idle():
    from datetime import timedelta

    from videojobs.common.job import JobStatus

    repo, queue = FakeJobRepository(), InMemoryQueue()
    old = Job.submit("yolo")
    running = Job.submit("yolo")
    fresh = Job.submit("yolo")
    for job in (old, running, fresh):
        repo.add(job)
    repo.mark_published([old.job_id, running.job_id, fresh.job_id])
    hour = timedelta(hours=1)
    repo.rows[old.job_id].updated_at -= hour  # published long ago, message lost
    repo.rows[running.job_id].status = JobStatus.RUNNING
    repo.rows[running.job_id].lease_expires_at = running.created_at - hour  # its worker died long ago
    relay = OutboxRelay(repo, queue, stranded_after=timedelta(minutes=5))

    queue.enqueue(fresh.job_id)  # backlog: nothing is republished
    assert relay.republish_stranded() == 0
    assert queue.dequeue() == fresh.job_id
    assert relay.republish_stranded() == 2
    assert {queue.dequeue(), queue.dequeue()} == {old.job_id, running.job_id}
    assert queue.dequeue() is None


class RecordingQueue(InMemoryQueue):
    """An in-memory queue that also records message ids and can hand out 'dead' messages."""

    def __init__(self):
        super().__init__()
        self.published: list[tuple[str, str | None]] = []
        self.dead: list[str] = []
        self.messages_of: dict[str, int] = {}

    def enqueue(self, job_id, dedupe_id=None, trace_context=None):
        self.published.append((job_id, dedupe_id))
        return super().enqueue(job_id, dedupe_id, trace_context)

    def reclaim_dead(self):
        dead, self.dead = self.dead, []
        return dead

    def purge(self, is_final, limit=1000):
        final = [j for j in self.messages_of if is_final(j)]
        for j in final:
            del self.messages_of[j]
        return len(final)


def test_republishes_carry_fresh_message_ids():
    from datetime import timedelta

    repo, queue = FakeJobRepository(), RecordingQueue()
    job = Job.submit("yolo")
    repo.add(job)
    repo.mark_published([job.job_id])
    repo.rows[job.job_id].updated_at -= timedelta(hours=1)
    relay = OutboxRelay(repo, queue, stranded_after=timedelta(minutes=5))
    assert relay.republish_stranded() == 1
    (job_id, message_id), = queue.published
    assert job_id == job.job_id and message_id.startswith(job.job_id + ".") and message_id != job.job_id


def test_dead_messages_are_reclaimed_and_final_ones_purged():
    from videojobs.common.job import JobStatus

    repo, queue = FakeJobRepository(), RecordingQueue()
    alive, done = Job.submit("yolo"), Job.submit("yolo")
    for job in (alive, done):
        repo.add(job)
    repo.rows[done.job_id].status = JobStatus.COMPLETED
    queue.dead = [alive.job_id, done.job_id, "0b9f8a52-3f1e-4d5c-9a7b-1c2d3e4f5a6b"]  # the last: no such job
    queue.messages_of = {done.job_id: 7}
    relay = OutboxRelay(repo, queue)
    assert relay.reclaim_dead_messages() == 1
    assert [j for j, _ in queue.published] == [alive.job_id]  # only the unfinished job comes back
    assert queue.messages_of == {}  # the final job's leftover message is gone
    assert queue.dequeue() == alive.job_id
