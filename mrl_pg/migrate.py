"""Running mrl_pg's own migrations from code: a thin layer over ``alembic.command``."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import psycopg
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from mrl_pg.config import TableConfig
from mrl_pg.errors import InvalidIdentifierError
from mrl_pg.server import resolve_dsn
from mrl_pg.statement.tuning import TUNING_TABLE

__all__ = [
    "VERSION_TABLE", "OWN_TABLES", "include_name", "include_object", "alembic_config", "upgrade",
    "downgrade", "current", "migration_engine",
]

VERSION_TABLE = "mrl_pg_alembic_version"
OWN_TABLES = frozenset({VERSION_TABLE, TUNING_TABLE})
"""Tables mrl_pg keeps for itself, which a host project's models never declare."""


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """For a host project's ``context.configure(include_name=...)``: every name but
    :data:`OWN_TABLES`, so ``alembic check`` never proposes dropping them."""
    return not (type_ == "table" and name in OWN_TABLES)


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """For a host project's ``context.configure(include_object=...)``: leaves out
    :data:`OWN_TABLES` and an adopted table's prefix index when the model does not
    declare it, so ``alembic check`` never proposes dropping them.

    ``include_name`` cannot do this: it sees only the database's names, and
    skipping ``<table>_embedding_prefix_hnsw`` there would make Alembic propose
    creating it wherever a model declares it (every ``MrlMixin`` model does).
    Here only an index the model leaves out is skipped; a declared one is compared.

    >>> context.configure(..., include_name=include_name,  # doctest: +SKIP
    ...                   include_object=include_object)
    """
    if type_ == "table":
        return name not in OWN_TABLES
    if type_ == "index" and reflected and compare_to is None and name is not None:
        return name != _prefix_index_name(obj.table.name)
    return True


def _prefix_index_name(table: str) -> str | None:
    try:
        return TableConfig(table, full_dim=2, prefix_dim=1).hnsw_index_name
    except InvalidIdentifierError:
        return None  # a name mrl_pg refuses was never adopted


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
