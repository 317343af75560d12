"""Alembic environment for mrl_pg's own schema.

A connection handed over in ``config.attributes["connection"]`` is used as
is (programs and tests); otherwise the DSN comes from
``config.attributes["dsn"]``, ``-x dsn=...`` or
:func:`mrl_pg.server.resolve_dsn`. The version table is
``mrl_pg_alembic_version`` so it never collides with the host application's.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from mrl_pg.migrate import VERSION_TABLE, migration_engine
from mrl_pg.schema.compat import PGVECTOR_INSTALLABLE_SQL, require_pgvector
from mrl_pg.server import resolve_dsn

config = context.config


def _dsn() -> str:
    return (
        config.attributes.get("dsn")
        or context.get_x_argument(as_dictionary=True).get("dsn")
        or resolve_dsn()
    )


def run_offline() -> None:
    context.configure(
        dialect_name="postgresql",
        dialect_opts={"paramstyle": "named"},  # so "%" in function bodies is not doubled
        literal_binds=True,
        version_table=VERSION_TABLE,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _check_pgvector(connection: Connection) -> None:
    """Stop before the first revision when pgvector is, or would be installed as, < 0.8.

    Leaves a connection that was outside a transaction outside one, so Alembic
    still runs each revision in a transaction of its own.
    """
    outside = not connection.in_transaction()
    version = connection.execute(text(PGVECTOR_INSTALLABLE_SQL)).scalar()
    database = connection.execute(text("SELECT current_database()")).scalar()
    if outside:
        connection.rollback()
    require_pgvector(version, database=database)


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _check_pgvector(connection)
        context.configure(
            connection=connection, version_table=VERSION_TABLE, transaction_per_migration=True
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = migration_engine(_dsn())
    with engine.connect() as conn:
        _check_pgvector(conn)
        context.configure(
            connection=conn, version_table=VERSION_TABLE, transaction_per_migration=True
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
