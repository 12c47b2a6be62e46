"""Alembic migrations, run programmatically: `videojobs migrate [upgrade [REV] | downgrade REV | current]`."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext

from videojobs.common.adapters.sql.engine import make_engine

MIGRATIONS = Path(__file__).with_name("migrations")


def _config(connection: sa.Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


# Any fixed 64-bit number: the Postgres advisory lock that serialises concurrent migrators
# (a migration Job and several api replicas starting at once).
_MIGRATION_LOCK_ID = 0x76696465_6F6A6F62


# Alembic's `context` and `op` are module-level proxies: one migration at a time per process.
_PROCESS_LOCK = threading.Lock()


def _serialise(conn: sa.Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    with _PROCESS_LOCK, engine.begin() as conn:
        _serialise(conn)
        command.upgrade(_config(conn), revision)


def downgrade(engine: sa.Engine, revision: str) -> None:
    with _PROCESS_LOCK, engine.begin() as conn:
        _serialise(conn)
        command.downgrade(_config(conn), revision)


def head_revision() -> str:
    """The newest migration's revision id."""
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def main(argv: list[str]) -> int:
    from videojobs.common.config import load_settings

    parser = argparse.ArgumentParser(prog="videojobs migrate")
    parser.add_argument("action", nargs="?", default="upgrade", choices=["upgrade", "downgrade", "current"])
    parser.add_argument("revision", nargs="?", default=None)
    args = parser.parse_args(argv)
    settings = load_settings()
    engine = make_engine(settings.effective_database_url, settings.database_schema)
    if args.action == "upgrade":
        upgrade(engine, args.revision or "head")
    elif args.action == "downgrade":
        if not args.revision:
            parser.error("downgrade needs a revision (e.g. base or 0001)")
        downgrade(engine, args.revision)
    print(f"database at revision {current_revision(engine) or 'base'}")
    return 0
