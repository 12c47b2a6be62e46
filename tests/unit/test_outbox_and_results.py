import pytest

from tests.fakes import FakeJobRepository
from videojobs.common.adapters.memory_queue import InMemoryQueue
from videojobs.common.errors import BadRequest, TemporaryFault
from videojobs.common.job import Job
from videojobs.common.outbox import OutboxRelay
from videojobs.common.results import page_bounds


class DownQueue(InMemoryQueue):
    down = True

    def enqueue(self, job_id):
        if self.down:
            raise TemporaryFault("nats unreachable")
        super().enqueue(job_id)


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
