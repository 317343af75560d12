"""Alembic environment for mrl_pg's own schema.

A connection handed over in ``config.attributes["connection"]`` is used as
is (programs and tests); otherwise the DSN comes from
``config.attributes["dsn"]``, ``-x dsn=...`` or
:func:`mrl_pg.server.resolve_dsn`. The version table is
``mrl_pg_alembic_version`` so it never collides with the host application's.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from mrl_pg.db import sqlalchemy_url
from mrl_pg.migrate import VERSION_TABLE
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
        url=sqlalchemy_url(_dsn()),
        literal_binds=True,
        version_table=VERSION_TABLE,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(
            connection=connection, version_table=VERSION_TABLE, transaction_per_migration=True
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(sqlalchemy_url(_dsn()), poolclass=pool.NullPool)
    with engine.connect() as conn:
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
