"""Segments: the split (boundaries, max_frames, sampling steps), the entity, and the worker flow with fakes."""

import json
import threading
import time
from datetime import timedelta

import pytest

from tests.fakes import FakeAnalyzer, FakeJobRepository, fake_detections
from videojobs.common.adapters.memory_queue import InMemoryQueue
from videojobs.common.errors import IllegalTransition, PoisonInput, TemporaryFault
from videojobs.common.job import Job, JobStatus, output_key_for, utcnow
from videojobs.common.options import AnalysisOptions
from videojobs.common.retry import Backoff
from videojobs.common.segments import (
    Segment,
    SegmentStatus,
    build_segments,
    parse_message,
    segment_key,
    segment_message,
    split_samples,
)
from videojobs.storage.local import LocalFolderStorage
from videojobs.worker.pipeline.video import SamplingPlan
from videojobs.worker.worker import JobWorker, WorkerPolicy, hand_back_orphans, unfinished_messages

MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 100


# -- the split ---------------------------------------------------------------------------------
@pytest.mark.parametrize("samples,size,align", [(1, 300, 8), (300, 300, 8), (301, 300, 8), (1200, 300, 8),
                                                (1189, 100, 8), (37, 5, 1), (1000, 7, 3), (10_000, 304, 8)])
def test_split_covers_every_sample_once_in_aligned_near_equal_ranges(samples, size, align):
    ranges = split_samples(samples, size, align)
    assert ranges[0][0] == 0 and ranges[-1][1] == samples
    assert all(a < b for a, b in ranges)
    assert all(prev[1] == nxt[0] for prev, nxt in zip(ranges, ranges[1:]))  # contiguous, no overlap
    if samples <= size:
        assert ranges == [(0, samples)]
    else:
        assert len(ranges) <= -(-samples // size)  # no more segments than the bound needs
        assert all((b - a) % align == 0 for a, b in ranges[:-1])
        assert max(b - a for a, b in ranges) <= size + align - 1
        # near-equal: the last one is not a sliver when the sizes could be balanced
        assert ranges[-1][1] - ranges[-1][0] >= min(b - a for a, b in ranges[:-1]) - len(ranges) * align


def test_split_of_nothing_or_without_bound():
    assert split_samples(0, 300) == []
    assert split_samples(5000, 0) == [(0, 5000)]


@pytest.mark.parametrize("frame_count,fps,sample_fps,max_frames", [
    (36_000, 29.97, 1.0, 0),      # step 29.97: does not divide
    (36_000, 30.0, 7.0, 0),       # step 4.2857...
    (9_000, 23.976, 3.0, 500),    # max_frames cuts the plan
    (1189, 29.8333, 0.0, 0),      # every frame
    (1189, 29.8333, 240.0, 1000),  # above the video's rate: every frame, bounded
])
def test_segments_of_a_plan_are_exactly_the_plans_frames(frame_count, fps, sample_fps, max_frames):
    plan = SamplingPlan(frame_count, fps, sample_fps, max_frames)
    ranges = split_samples(len(plan), 128, 8)
    segments = build_segments("j", ranges, plan.index)
    frames = [plan.index(k) for s in segments for k in range(s.first_sample, s.end_sample)]
    assert frames == list(plan)
    if max_frames:
        assert len(frames) <= max_frames
    for s in segments:
        assert s.first_frame == plan.index(s.first_sample) and s.last_frame == plan.index(s.end_sample - 1)
    assert all(a.last_frame < b.first_frame for a, b in zip(segments, segments[1:]))


def test_messages_and_keys():
    assert parse_message(segment_message("abc", 7)).segment == 7
    assert parse_message(segment_message("abc", 7)).job_id == "abc"
    assert parse_message("abc").segment is None and parse_message("abc").message == "abc"
    assert segment_key("abc", 3) == "segments/abc/3.json"


def test_segment_entity_counts_crashes_and_recomputed_frames():
    seg = Segment("j", 0, 0, 10, 0, 270)
    lease = timedelta(seconds=30)
    seg.start("w1", lease)
    seg.report_progress(4, 10)
    with pytest.raises(IllegalTransition):
        seg.start("w2", lease)  # a live lease
    seg.lease_expires_at = utcnow() - timedelta(seconds=1)  # w1 was killed
    seg.start("w2", lease)
    assert (seg.attempt, seg.crashes, seg.frames_recomputed, seg.frames_done) == (2, 1, 4, 0)
    seg.report_progress(3, 10)
    seg.release()  # a stopping worker hands it back: not a crash, its frames will be redone
    assert seg.status is SegmentStatus.PENDING and seg.frames_recomputed == 7 and seg.crashes == 1
    seg.start("w3", lease)
    seg.finish()
    assert seg.status is SegmentStatus.DONE and seg.frames_done == 10
    with pytest.raises(IllegalTransition):
        seg.release()


def test_split_job_is_not_taken_whole_and_merges_once():
    job = Job.submit("yolo")
    job.start("w1", timedelta(seconds=30))
    job.split(3, 900)
    assert job.is_split and not job.can_be_taken() and job.lease_expires_at is None and job.can_merge()
    job.start_merge("w2", timedelta(seconds=30))
    assert job.attempt == 2 and not job.can_merge()
    job.lease_expires_at = utcnow() - timedelta(seconds=1)
    assert job.can_merge()
    job.start_merge("w3", timedelta(seconds=30))
    assert job.crashes == 1 and job.attempt == 3


# -- the worker flow ----------------------------------------------------------------------------
@pytest.fixture
def env(tmp_path):
    repo, queue = FakeJobRepository(), InMemoryQueue(ack_wait_seconds=30)
    storage = LocalFolderStorage(tmp_path / "store")
    analyzer = FakeAnalyzer(frames=20)
    analyzer.detections_for = fake_detections
    policy = WorkerPolicy(lease=timedelta(seconds=30), heartbeat_seconds=0.05, max_attempts=3,
                          progress_interval_seconds=0.0, backoff=Backoff(0.01, 0.02),
                          commit_backoff=Backoff(0.01, 0.02), fault_window=timedelta(seconds=0.5),
                          segment_frames=6)

    def worker(name="w1", stop=None):
        return JobWorker(queue, storage, repo, analyzer, policy, worker_id=name, stop_event=stop)

    def submit(**options):
        job = Job.submit("yolo", AnalysisOptions(**options))
        storage.save_bytes(MP4, job.input_key)
        repo.add(job)
        queue.enqueue(job.job_id)
        return job.job_id

    def drain(w, limit=50):
        for _ in range(limit):
            if not w.run_once():
                return

    return type("Env", (), dict(repo=repo, queue=queue, storage=storage, analyzer=analyzer, policy=policy,
                                worker=staticmethod(worker), submit=staticmethod(submit), drain=staticmethod(drain)))


def _results(env, job_id):
    job = env.repo.get(job_id)
    return job, json.loads(env.storage.read_bytes(job.output_key))


def test_long_job_is_split_each_segment_a_message_then_merged_once(env):
    job_id = env.submit()
    w = env.worker()
    assert w.run_once()  # the job message: split
    job = env.repo.get(job_id)
    assert job.status is JobStatus.RUNNING and job.segments_total == 4 and job.frames_total == 20
    assert env.queue.size() == 4 and env.analyzer.calls == []  # nothing analysed whole
    # 20 samples at most 6 a segment: 4 segments, balanced
    assert [(s.first_sample, s.end_sample) for s in env.repo.segments(job_id)] == [(0, 5), (5, 10), (10, 15),
                                                                                    (15, 20)]
    env.drain(w)
    job, doc = _results(env, job_id)
    assert job.status is JobStatus.COMPLETED and job.segments_done == 4 and job.frames_recomputed == 0
    assert job.progress == 1.0 and job.frames_done == 20
    assert [f["frame_index"] for f in doc["results"]] == [30 * k for k in range(20)]
    assert doc["sampling"]["segments"] == 4
    # the tracker ran over the whole job: one id per object across segment boundaries
    assert {d["track_id"] for f in doc["results"] for d in f["result"]["detections"]} == {1, 2}
    assert not any(env.storage.exists(segment_key(job_id, i)) for i in range(4))  # removed after the merge
    assert env.queue.size() == 0


def test_a_merge_whose_store_fails_part_way_stores_the_whole_document_on_the_next_try(env):
    job_id = env.submit()
    output_key = output_key_for(job_id)
    tries = []
    save_file = env.storage.save_file

    def flaky_save(src, dest_path):  # an upload that dies after reading some of the file, twice
        if dest_path == output_key and len(tries) < 2:
            tries.append(len(src.read(100)))
            raise TemporaryFault("storage unavailable")
        return save_file(src, dest_path)

    env.storage.save_file = flaky_save
    env.drain(env.worker())
    job, doc = _results(env, job_id)
    assert tries == [100, 100]
    assert job.status is JobStatus.COMPLETED and job.frames_done == 20
    assert [f["frame_index"] for f in doc["results"]] == [30 * k for k in range(20)]


def test_short_job_is_not_split(env):
    job_id = env.submit(max_frames=5)
    env.drain(env.worker())
    job = env.repo.get(job_id)
    assert job.status is JobStatus.COMPLETED and job.segments_total == 0 and len(env.analyzer.calls) == 1


def test_progress_counts_frames_over_all_segments(env):
    job_id = env.submit()
    w = env.worker()
    w.run_once()
    seen = []
    env.analyzer.on_frame = lambda k: seen.append(env.repo.get(job_id).frames_done)
    w.run_once()
    w.run_once()  # two segments done
    job = env.repo.get(job_id)
    assert job.frames_done == 10 and job.segments_done == 2 and job.progress == 0.5
    assert seen == sorted(seen) and seen[-1] == 9


def test_a_killed_worker_costs_one_segment_and_only_it_is_redone(env):
    job_id = env.submit()
    w = env.worker()
    w.run_once()
    w.run_once()  # segment 0 DONE
    # segment 1 taken by a worker that then dies after 4 frames (its lease runs out, nothing acked)
    seg = env.repo.get_segment(job_id, 1)
    message = env.queue.dequeue()
    assert parse_message(message).segment == 1
    attempt = seg.attempt
    seg.start("dead", env.policy.lease)
    seg.report_progress(4, 5)
    seg.lease_expires_at = utcnow() - timedelta(seconds=1)
    assert env.repo.save_segment(seg, SegmentStatus.PENDING, attempt)
    env.queue.nak(message)  # the queue redelivers it (AckWait ran out)
    env.drain(w)
    job, doc = _results(env, job_id)
    assert job.status is JobStatus.COMPLETED and job.frames_recomputed == 4
    segments = env.repo.segments(job_id)
    assert [s.attempt for s in segments] == [1, 2, 1, 1] and segments[1].crashes == 1
    assert env.analyzer.segment_calls.count((0, 5)) == 1  # the finished segment never ran again
    assert [f["frame_index"] for f in doc["results"]] == [30 * k for k in range(20)]


def test_stopping_worker_hands_its_segment_back_and_the_next_one_redoes_only_that(env):
    job_id = env.submit()
    stop = threading.Event()
    w = env.worker(stop=stop)
    w.run_once()
    w.run_once()  # segment 0 DONE
    env.analyzer.on_frame = lambda k: stop.set() if k == 9 else None  # SIGTERM in segment 1
    w.run_once()
    seg = env.repo.get_segment(job_id, 1)
    assert seg.status is SegmentStatus.PENDING and seg.frames_recomputed >= 2 and seg.crashes == 0
    env.analyzer.on_frame = None
    env.drain(env.worker("w2"))
    job = env.repo.get(job_id)
    assert job.status is JobStatus.COMPLETED
    assert [s.attempt for s in env.repo.segments(job_id)] == [1, 2, 1, 1]
    assert 0 < job.frames_recomputed <= 5


def test_poison_segment_fails_the_job_with_its_frame_range(env):
    job_id = env.submit()
    env.analyzer.raise_error = PoisonInput("frame cannot be decoded")
    env.analyzer.fail_sample = 8
    env.drain(env.worker())
    job = env.repo.get(job_id)
    assert job.status is JobStatus.FAILED
    assert "frames 150..270 (segment 1)" in job.error_message and "cannot be decoded" in job.error_message
    assert env.queue.size() == 0 and not env.storage.exists(segment_key(job_id, 0))
    # the other segments' messages were dropped without analysis once the job had failed
    assert (10, 15) not in env.analyzer.segment_calls


def test_a_segment_outage_is_retried_not_counted_and_fails_the_job_only_after_the_window(env):
    job_id = env.submit()
    w = env.worker()
    w.run_once()  # split
    w.run_once()  # segment 0 DONE
    env.analyzer.raise_error = TemporaryFault("storage at 10.0.0.7:9000 unavailable")
    env.analyzer.fail_sample = 7  # in segment 1
    started = time.monotonic()
    assert w.run_once(timeout=2)
    seg = env.repo.get_segment(job_id, 1)
    assert seg.status is SegmentStatus.PENDING and seg.faults == 1 and seg.crashes == 0 and seg.faulting_since
    while env.repo.get(job_id).status is not JobStatus.FAILED:
        assert w.run_once(timeout=2)  # redelivered after the (short) backoff
        assert time.monotonic() - started < 10
    job, seg = env.repo.get(job_id), env.repo.get_segment(job_id, 1)
    assert time.monotonic() - started >= 0.5  # not before the window
    assert seg.faults >= 2 and seg.crashes == 0
    assert "frames 150..270 (segment 1)" in job.error_message and "unavailable for more than" in job.error_message
    assert "10.0.0.7" not in job.error_message
    env.drain(w)
    assert env.queue.size() == 0 and not env.storage.exists(segment_key(job_id, 0))


def test_a_short_segment_outage_is_survived_and_the_job_completes(env):
    job_id = env.submit()
    w = env.worker()
    w.run_once()
    env.analyzer.raise_error = TemporaryFault("storage unavailable")
    env.analyzer.fail_sample = 2  # in segment 0
    assert w.run_once(timeout=2)
    env.analyzer.raise_error = None  # back
    while w.run_once(timeout=0.5):  # the handed-back segment returns after its backoff
        pass
    job = env.repo.get(job_id)
    assert job.status is JobStatus.COMPLETED and env.repo.get_segment(job_id, 0).faults == 1
    assert [s.crashes for s in env.repo.segments(job_id)] == [0, 0, 0, 0]


def test_with_on_bad_frames_skip_a_poison_segment_is_left_out_listed_and_the_job_completes(env):
    job_id = env.submit(on_bad_frames="skip")
    env.analyzer.raise_error = PoisonInput("frame 210 cannot be decoded")
    env.analyzer.fail_sample = 7  # in segment 1 (samples 5..9, frames 150..270)
    env.drain(env.worker())
    job, doc = _results(env, job_id)
    assert job.status is JobStatus.COMPLETED and job.segments_done == 4
    assert doc["sampling"]["skipped_ranges"] == [
        {"first_frame": 150, "last_frame": 270, "frames": 5, "reason": "frame 210 cannot be decoded"}]
    assert [f["frame_index"] for f in doc["results"]] == [30 * k for k in range(20) if not 5 <= k < 10]
    assert env.queue.size() == 0 and not any(env.storage.exists(segment_key(job_id, i)) for i in range(4))


def test_on_bad_frames_skip_does_not_hide_errors_that_are_not_the_videos(env):
    job_id = env.submit(on_bad_frames="skip")
    env.analyzer.raise_error = RuntimeError("bug")
    env.analyzer.fail_sample = 7
    env.drain(env.worker())
    job = env.repo.get(job_id)
    assert job.status is JobStatus.FAILED and "frames 150..270 (segment 1)" in job.error_message


def test_cancel_stops_every_segment(env):
    job_id = env.submit()
    w = env.worker()
    w.run_once()
    w.run_once()

    def cancel_at(k):
        if k == 8:
            job = env.repo.get(job_id)
            expected = (job.status, job.attempt)
            job.cancel()
            env.repo.save(job, *expected)

    env.analyzer.on_frame = cancel_at
    env.drain(w)
    job = env.repo.get(job_id)
    assert job.status is JobStatus.CANCELLED and job.output_key is None
    assert env.analyzer.segment_calls[-1] == (5, 10) and env.queue.size() == 0


def test_redelivered_job_message_of_a_split_job_is_acked_and_merge_happens_once(env):
    job_id = env.submit()
    w = env.worker()
    w.run_once()
    env.queue.enqueue(job_id)  # a duplicate job message (reconciler)
    env.drain(w)
    job = env.repo.get(job_id)
    assert job.status is JobStatus.COMPLETED and job.attempt == 2  # claim + one merge
    assert len(env.analyzer.segment_calls) == 4


def test_embedded_restart_rebuilds_segment_messages_and_hands_back_orphans(env):
    job_id = env.submit()
    w = env.worker()
    w.run_once()
    w.run_once()
    seg = env.repo.get_segment(job_id, 1)
    attempt = seg.attempt
    seg.start("dead", env.policy.lease)
    env.repo.save_segment(seg, SegmentStatus.PENDING, attempt)
    assert hand_back_orphans(env.repo) == 1
    assert env.repo.get_segment(job_id, 1).status is SegmentStatus.PENDING
    assert unfinished_messages(env.repo) == [job_id] + [segment_message(job_id, i) for i in (1, 2, 3)]


def test_status_shows_segments_over_rest_and_grpc_alike():
    from videojobs.common.resources import JobResource
    from videojobs.common.wire import job_from_pb, job_to_pb

    job = Job.submit("yolo")
    job.start("w1", timedelta(seconds=30))
    job.split(4, 1200)
    job.segments_done, job.frames_recomputed, job.frames_done = 2, 17, 650
    resource = JobResource.from_job(job)
    rest = json.loads(resource.model_dump_json())
    assert (rest["segments_total"], rest["segments_done"], rest["frames_recomputed"]) == (4, 2, 17)
    assert rest["progress"] == round(650 / 1200, 4)
    message = job_to_pb(resource)
    assert (message.segments_total, message.segments_done, message.frames_recomputed) == (4, 2, 17)
    assert job_from_pb(message) == resource


def test_reconciler_republishes_stranded_segments_under_fresh_message_ids(env):
    from videojobs.common.outbox import OutboxRelay

    job_id = env.submit()
    env.worker().run_once()  # split: 4 segment messages
    while env.queue.dequeue() is not None:  # ...which are lost (e.g. a queue rebuilt empty)
        pass
    env.queue = InMemoryQueue()
    relay = OutboxRelay(env.repo, env.queue, stranded_after=timedelta(0))
    assert relay.republish_stranded() == 4
    messages = [env.queue.dequeue() for _ in range(4)]
    assert sorted(parse_message(m).segment for m in messages) == [0, 1, 2, 3]
    assert all(parse_message(m).job_id == job_id for m in messages)
