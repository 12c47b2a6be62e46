"""Request-rate counters on the job database, shared by every api process.

A ``limits`` storage (the package's own ``SlidingWindowCounterRateLimiter`` runs on it): counters
with an expiry in the ``rate_counters`` table, one row per tenant and window. Taking a call is
one conditional upsert, so api processes racing for the last call of a window cannot both get
it. Times are ``utcnow()``: the database's clock, whatever each host's says.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from limits.storage import Storage
from limits.storage.base import SlidingWindowCounterSupport, TimestampedSlidingWindow
from sqlalchemy.dialects import postgresql, sqlite

from videojobs.common.adapters.sql.repository import database_unavailable_is_temporary
from videojobs.common.adapters.sql.tables import rate_counters
from videojobs.common.errors import TemporaryFault
from videojobs.common.job import as_utc, utcnow

c = rate_counters.c


class SqlRateCounters(Storage, SlidingWindowCounterSupport, TimestampedSlidingWindow):
    """``limits`` counters (``incr``/``get``/``get_expiry``/``clear``) and sliding windows in SQL."""

    STORAGE_SCHEME = None  # made from an engine, not from a storage URI

    def __init__(self, engine: sa.Engine) -> None:
        super().__init__()
        self._engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._take = self._taking()

    @staticmethod
    def _taking() -> sa.TextClause:
        """Add `amount` to counter `key` (new: expiring at `expires_at`) where it stays within the room
        the previous window (`previous_key`, weighing `share` of its count) leaves of `limit`; the new
        count, or no row. The condition is checked on the row as locked. Text, as SQLAlchemy compiles
        an ON CONFLICT DO UPDATE construct anew for every call (about 1 ms of the api's CPU)."""
        return sa.text("""
            INSERT INTO rate_counters (key, count, expires_at)
            SELECT :key, :amount, :expires_at WHERE :amount <= :limit - floor(:share * (
                SELECT coalesce(max(count), 0) FROM rate_counters WHERE key = :previous_key AND expires_at > :now))
            ON CONFLICT (key) DO UPDATE SET count = rate_counters.count + excluded.count
            WHERE rate_counters.count + excluded.count <= :limit - floor(:share * (
                SELECT coalesce(max(count), 0) FROM rate_counters WHERE key = :previous_key AND expires_at > :now))
            RETURNING count
        """).bindparams(sa.bindparam("expires_at", type_=sa.DateTime(timezone=True)),
                        sa.bindparam("now", type_=sa.DateTime(timezone=True)))

    @property
    def base_exceptions(self) -> tuple[type[Exception], ...]:
        return (sa.exc.SQLAlchemyError, TemporaryFault)

    # -- counters ------------------------------------------------------------------------------------
    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        """Add `amount` to `key`'s counter, which starts afresh (expiring in `expiry` s) if it had expired.
        (``limits``' fixed windows count with it; the sliding windows take calls with ``_take``.)"""
        now = utcnow()
        stmt = self._insert(rate_counters).values(key=key, count=amount, expires_at=now + timedelta(seconds=expiry))
        expired = c.expires_at <= now
        stmt = stmt.on_conflict_do_update(index_elements=[c.key], set_={
            "count": sa.case((expired, stmt.excluded["count"]), else_=c.count + stmt.excluded["count"]),
            "expires_at": sa.case((expired, stmt.excluded.expires_at), else_=c.expires_at),
        }).returning(c.count)
        with database_unavailable_is_temporary(), self._engine.begin() as conn:
            return int(conn.execute(stmt).scalar_one())

    def get(self, key: str) -> int:
        return self._counts([key], utcnow())[0]

    def get_expiry(self, key: str) -> float:
        with database_unavailable_is_temporary(), self._engine.connect() as conn:
            expires = conn.execute(sa.select(c.expires_at).where(c.key == key)).scalar()
        now = utcnow()
        return as_utc(expires).timestamp() if expires is not None and as_utc(expires) > now else now.timestamp()

    def check(self) -> bool:
        try:
            with self._engine.connect() as conn:
                conn.execute(sa.select(1))
            return True
        except sa.exc.SQLAlchemyError:
            return False

    def reset(self) -> int | None:
        with database_unavailable_is_temporary(), self._engine.begin() as conn:
            return conn.execute(sa.delete(rate_counters)).rowcount

    def clear(self, key: str) -> None:
        with database_unavailable_is_temporary(), self._engine.begin() as conn:
            conn.execute(sa.delete(rate_counters).where(c.key == key))

    # -- sliding windows -----------------------------------------------------------------------------
    def acquire_sliding_window_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """Count `amount` in the current window if the previous window's count, weighted by how much of
        it the sliding window still covers, plus the current one's stays within `limit`: one statement
        (``_take``), so racing processes cannot both take the last call."""
        if amount > limit:
            return False
        now = utcnow()
        previous_key, current_key = self.sliding_window_keys(key, expiry, now.timestamp())
        with database_unavailable_is_temporary(), self._engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")  # one statement: nothing to commit
            counted = conn.execute(self._take, {
                "key": current_key, "amount": amount, "expires_at": now + timedelta(seconds=2 * expiry),
                "previous_key": previous_key, "now": now, "limit": limit,
                "share": _previous_share(now.timestamp(), expiry)}).scalar()
            if counted == amount:  # the window's first call: counters of past windows go
                conn.execute(sa.delete(rate_counters).where(c.expires_at <= now))
        return counted is not None

    def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        """(previous count, seconds it still weighs, current count, seconds until it is gone)."""
        now = utcnow()
        at = now.timestamp()
        previous, current = self._counts(list(self.sliding_window_keys(key, expiry, at)), now)
        previous_ttl = _previous_share(at, expiry) * expiry if previous else 0.0
        return previous, previous_ttl, current, _previous_share(at, expiry) * expiry + expiry

    def clear_sliding_window(self, key: str, expiry: int) -> None:
        previous_key, current_key = self.sliding_window_keys(key, expiry, utcnow().timestamp())
        with database_unavailable_is_temporary(), self._engine.begin() as conn:
            conn.execute(sa.delete(rate_counters).where(c.key.in_([previous_key, current_key])))

    def _counts(self, keys: list[str], now: datetime) -> list[int]:
        """The counts of `keys` at `now` (0 for a counter missing or expired)."""
        with database_unavailable_is_temporary(), self._engine.connect() as conn:
            found = dict(conn.execute(sa.select(c.key, c.count).where(c.key.in_(keys), c.expires_at > now)).all())
        return [int(found.get(k, 0)) for k in keys]


def _previous_share(at: float, expiry: int) -> float:
    """How much of the previous window the sliding window ending at `at` still covers (1 down to 0)."""
    return 1 - (at / expiry) % 1

