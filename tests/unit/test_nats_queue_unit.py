"""JetStreamQueue without a server: configuration, lazy start, unreachable NATS."""

from __future__ import annotations

import threading
import time

import pytest

from tests.conftest import load_script
from videojobs.common.adapters.factory import make_queue
from videojobs.common.adapters.nats_queue import JetStreamQueue
from videojobs.common.config import Settings
from videojobs.common.errors import TemporaryFault


closed_port = load_script("servers").free_port  # a loopback port nothing listens on


def test_the_factory_maps_every_setting():
    q = make_queue(
        Settings(
            queue_url="nats://a:4222, nats://b:4222",
            nats_stream="S",
            nats_subject="s.jobs",
            nats_durable="d",
            ack_wait_seconds=12,
            nats_max_deliver=40,
        )
    )
    assert q.servers == ["nats://a:4222", "nats://b:4222"]
    assert (q.stream, q._subject, q._durable, q._ack_wait, q._max_deliver) == ("S", "s.jobs", "d", 12.0, 40)
    q.close()


def test_construction_connects_to_nothing_and_starts_no_thread():
    before = set(threading.enumerate())  # threads of earlier tests may end meanwhile: only new ones count
    q = JetStreamQueue(f"nats://127.0.0.1:{closed_port()}")
    assert set(threading.enumerate()) - before == set()
    q.close()
    assert set(threading.enumerate()) - before == set()


@pytest.mark.parametrize("kwargs", [{"servers": ""}, {"ack_wait": 0}, {"max_deliver": 0}])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        JetStreamQueue(**{"servers": "nats://127.0.0.1:4222", **kwargs})


def test_unreachable_nats_raises_temporary_fault_quickly():
    q = JetStreamQueue(f"nats://127.0.0.1:{closed_port()}", connect_timeout=2)
    try:
        for call in (lambda: q.enqueue("j"), lambda: q.dequeue(timeout=1), q.size, q.ping):
            started = time.monotonic()
            with pytest.raises(TemporaryFault, match="cannot connect to NATS"):
                call()
            assert time.monotonic() - started < 1.0  # refused: no need to wait for the timeout
        # Settling a job that is not in flight needs no connection.
        q.ack("j")
        q.heartbeat("j")
        assert q.delivery_count("j") == 0
    finally:
        q.close()
