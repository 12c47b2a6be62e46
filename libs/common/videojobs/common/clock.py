"""The service's clock: this host's UTC wall clock, corrected to the database server's where hosts share one.

Times written by one process are read by others on other hosts: a worker's ``lease_expires_at`` by every
other worker and by the api's reconciler, ``updated_at`` by the reconciler's "stranded since". Hosts whose
clocks disagree by more than a lease's margin take each other's jobs, or leave a lost worker's job alone too
long. So each process that shares a database reads the database server's clock now and then
(``DatabaseClock.sync``, on every readiness check) and keeps the offset; ``utcnow()`` is then the database's
time, give or take half a round trip, on every host, whatever their own clocks say.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Callable, Optional

log = logging.getLogger(__name__)

_offset = timedelta(0)  # the database's clock minus this host's, as last measured


def host_now() -> datetime:
    """This host's own clock (UTC)."""
    return datetime.now(timezone.utc)


def utcnow() -> datetime:
    """The service's time: this host's clock corrected by the last measured offset to the database's."""
    return host_now() + _offset


def offset() -> timedelta:
    return _offset


class DatabaseClock:
    """Measures this host's clock against the database server's and corrects ``utcnow`` by the difference.

    `read_database_time` returns the server's clock now, or None where there is nothing to follow (an
    embedded database on this host). Each ``sync`` takes the reading with the shortest round trip of
    `samples`, and assumes the server read its clock half-way through it; `on_measured` gets the offset
    in seconds (a metric's ``set``)."""

    def __init__(self, read_database_time: Callable[[], Optional[datetime]], samples: int = 3,
                 warn_beyond: timedelta = timedelta(seconds=1),
                 on_measured: Callable[[float], None] = lambda seconds: None) -> None:
        self._read = read_database_time
        self._on_measured = on_measured
        self._samples = samples
        self._warn_beyond = warn_beyond
        self._warned: Optional[timedelta] = None

    def sync(self) -> timedelta:
        """Measure and apply the offset (raises what reading the database's clock raises); the offset."""
        global _offset
        best: Optional[tuple[timedelta, timedelta]] = None  # (round trip, offset)
        for _ in range(self._samples):
            sent = host_now()
            server = self._read()
            received = host_now()
            if server is None:
                return _offset
            round_trip = received - sent
            if best is None or round_trip < best[0]:
                best = (round_trip, server - (sent + round_trip / 2))
        _offset = best[1]
        self._on_measured(_offset.total_seconds())
        self._report(_offset)
        return _offset

    def _report(self, measured: timedelta) -> None:
        beyond = abs(measured) > self._warn_beyond
        if beyond and (self._warned is None or abs(measured - self._warned) > self._warn_beyond):
            seconds = measured.total_seconds()
            log.warning("this host's clock is %.1f s %s the database server's: the service's times follow the "
                        "database's (fix this host's time synchronisation)", abs(seconds),
                        "behind" if seconds > 0 else "ahead of")
            self._warned = measured
        elif not beyond and self._warned is not None:
            log.info("this host's clock agrees with the database server's again (%.3f s)", measured.total_seconds())
            self._warned = None
