"""The service's clock follows the database server's: offset measured by the shortest round trip."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest

from videojobs.common import clock

T0 = datetime(2026, 12, 7, 12, 0, 0, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def fresh_offset(monkeypatch):
    monkeypatch.setattr(clock, "_offset", timedelta(0))


class Host:
    """This host's clock, advanced by each database reading's round trip."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def database(host: Host, server_ahead: timedelta, trips: list[tuple[float, float]]):
    """A reader answering with the server's clock (`server_ahead` of the host's) read `there` s into each
    round trip of `total` s."""
    trips = list(trips)

    def read() -> datetime:
        there, total = trips.pop(0)
        sent = host.now
        host.now = sent + timedelta(seconds=total)
        return sent + timedelta(seconds=there) + server_ahead

    return read


def test_the_offset_is_taken_from_the_shortest_round_trip_and_corrects_utcnow(monkeypatch):
    host = Host(T0)
    monkeypatch.setattr(clock, "host_now", host)
    # 0.4 s and 0.3 s round trips read late (skewed by queueing); the 0.02 s one is read at its middle
    read = database(host, timedelta(seconds=-90), [(0.35, 0.4), (0.01, 0.02), (0.29, 0.3)])
    measured = clock.DatabaseClock(read).sync()
    assert measured == timedelta(seconds=-90)
    assert clock.utcnow() == host.now - timedelta(seconds=90)


def test_nothing_to_follow_leaves_the_clock_alone(monkeypatch):
    monkeypatch.setattr(clock, "_offset", timedelta(seconds=5))
    assert clock.DatabaseClock(lambda: None).sync() == timedelta(seconds=5)


def test_a_failed_reading_keeps_the_last_offset(monkeypatch):
    monkeypatch.setattr(clock, "_offset", timedelta(seconds=5))

    def unreachable():
        raise ConnectionError("database unavailable")

    with pytest.raises(ConnectionError):
        clock.DatabaseClock(unreachable).sync()
    assert clock.offset() == timedelta(seconds=5)


def test_a_host_clock_far_off_is_reported_once_until_it_moves(monkeypatch, caplog):
    host = Host(T0)
    monkeypatch.setattr(clock, "host_now", host)
    synced = clock.DatabaseClock(lambda: host.now + ahead, samples=1)
    caplog.set_level(logging.INFO, logger="videojobs.common.clock")
    for ahead in (timedelta(seconds=30), timedelta(seconds=30.2), timedelta(seconds=0.1)):
        synced.sync()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["this host's clock is 30.0 s behind the database server's: the service's times follow "
                        "the database's (fix this host's time synchronisation)",
                        "this host's clock agrees with the database server's again (0.100 s)"]


def test_each_measured_offset_is_handed_on_in_seconds(monkeypatch):
    host = Host(T0)
    monkeypatch.setattr(clock, "host_now", host)
    seen: list[float] = []
    synced = clock.DatabaseClock(lambda: host.now - timedelta(seconds=2.5), samples=1, on_measured=seen.append)
    synced.sync()
    assert seen == [-2.5]
