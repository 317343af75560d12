"""Running mrl_pg's own migrations from code: a thin layer over ``alembic.command``."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import psycopg
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from .server import resolve_dsn
from .tuning import TUNING_TABLE

__all__ = [
    "VERSION_TABLE", "OWN_TABLES", "include_name", "alembic_config", "upgrade", "downgrade",
    "current", "migration_engine",
]

VERSION_TABLE = "mrl_pg_alembic_version"
OWN_TABLES = frozenset({VERSION_TABLE, TUNING_TABLE})
"""Tables mrl_pg keeps for itself, which a host project's models never declare."""


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """For a host project's ``context.configure(include_name=...)``: every name but
    :data:`OWN_TABLES`, so ``alembic check`` never proposes dropping them."""
    return not (type_ == "table" and name in OWN_TABLES)


def alembic_config(dsn: str | None = None, *, connection: Any = None) -> Config:
    """An Alembic ``Config`` for mrl_pg's migrations, no ini file needed.

    ``connection`` (a SQLAlchemy ``Connection``) is used as is when given.
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(files("mrl_pg.migrations")))
    if connection is not None:
        cfg.attributes["connection"] = connection
    if dsn is not None:
        cfg.attributes["dsn"] = dsn
    return cfg


def upgrade(dsn: str | None = None, revision: str = "head") -> None:
    """Upgrade the database (default: :func:`resolve_dsn`) to ``revision``."""
    command.upgrade(alembic_config(dsn or resolve_dsn()), revision)


def downgrade(dsn: str | None = None, revision: str = "base") -> None:
    """Downgrade the database to ``revision`` (default: remove everything mrl_pg created)."""
    command.downgrade(alembic_config(dsn or resolve_dsn()), revision)


def migration_engine(dsn: str) -> sa.Engine:
    """A one-connection-at-a-time engine on ``dsn`` for migrations.

    Plain psycopg connections: pgvector may not be installed yet (the first
    revision creates it), so its types are not registered.
    """
    return sa.create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(dsn), poolclass=sa.pool.NullPool
    )


def current(dsn: str | None = None) -> str | None:
    """The revision the database is at, or None before the first migration."""
    from alembic.runtime.migration import MigrationContext


    engine = migration_engine(dsn or resolve_dsn())
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            return context.get_current_revision()
    finally:
        engine.dispose()
