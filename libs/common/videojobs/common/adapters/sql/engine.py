"""Engine construction for SQLite (embedded) and Postgres (production)."""

from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# read_only_sql_transaction: the server this connection reaches is a standby now (a failover demoted it,
# or the address still resolved to the old primary). A pre-ping cannot tell: it only reads.
_NOT_THE_PRIMARY = {"25006"}
# A server that vanished without a word (its host died, a partition dropping everything) is noticed in
# about 10 s, not after the kernel's ~15 minutes of retransmissions: data it leaves unacknowledged for
# tcp_user_timeout (ms), or an idle connection's keepalive probes (after 5 s, 3 probes 2 s apart), end
# the connection with an error. Until then a query on it hangs, and so does the pool's pre-ping of it.
# A busy or paused server still acknowledges (its kernel does), so neither cuts a slow query short.
# Any of these given in the database URL is kept.
DEAD_SERVER_DETECTION = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
                         "keepalives_count": 3, "tcp_user_timeout": 10_000}


def make_engine(url: str, schema: str = "") -> sa.Engine:
    """An engine for `url`. On Postgres, `schema` (created if missing) becomes the search_path."""
    if url.startswith("sqlite"):
        db_path = sa.engine.make_url(url).database
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    given = sa.engine.make_url(url).query
    connect_args: dict[str, object] = {
        key: value for key, value in {"connect_timeout": 5, **DEAD_SERVER_DETECTION}.items() if key not in given}
    if schema:
        if not _SCHEMA_RE.match(schema):
            raise ValueError(f"database schema {schema!r} is not a plain identifier")
        connect_args["options"] = f"-csearch_path={schema}"
    engine = sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    sa.event.listen(engine, "handle_error", _drop_connections_to_a_standby)
    if schema:
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    return engine


def _drop_connections_to_a_standby(context: sa.engine.ExceptionContext) -> None:
    """Take a write refused as read-only for a lost connection: SQLAlchemy then drops it and the pool's
    others (all reach the same server), so the next call connects afresh, to whichever server the address
    names by then. The caller sees the error with ``connection_invalidated`` set: a temporary fault."""
    if getattr(context.original_exception, "sqlstate", None) in _NOT_THE_PRIMARY:
        context.is_disconnect = True
