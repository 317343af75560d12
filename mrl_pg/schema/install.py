"""Everything that installs or removes an MRL table: the statement lists and the psql script."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from mrl_pg.config import TableConfig
from mrl_pg.errors import DatabaseError
from mrl_pg.schema.search_function import drop_search_function_ddl, search_function_ddl
from mrl_pg.schema.tables import (
    extension_ddl,
    forget_tuning_ddl,
    index_ddl,
    pgvector_check_ddl,
    render,
    table_ddl,
    tuning_table_ddl,
)

__all__ = ["create_ddl", "drop_ddl", "install", "install_script"]


def create_ddl(config: TableConfig, *, with_search_function: bool = True) -> list[sql.Composed]:
    """Every statement that creates the table, its indexes, the schema's ``mrl_pg_tuning``
    (if missing) and the table's search function."""
    statements = [extension_ddl(), pgvector_check_ddl(), table_ddl(config), *index_ddl(config),
                  *tuning_table_ddl(config)]
    if with_search_function:
        statements.append(search_function_ddl(config))
    return statements


def drop_ddl(config: TableConfig, *, with_search_function: bool = True) -> list[sql.Composed]:
    """Statements that remove what :func:`create_ddl` made; the extension stays."""
    statements = [drop_search_function_ddl(config)] if with_search_function else []
    statements += [sql.SQL("DROP TABLE {}").format(config.table), forget_tuning_ddl(config)]
    return statements


def install_script(config: TableConfig | None = None) -> str:
    """The text of ``sql/install.sql``: a psql script for the default table and function."""
    config = config or TableConfig()
    header = (
        "-- mrl_pg install script: table, indexes and search function for\n"
        f"-- {config.qualified_name} (vector({config.full_dim}) embedding, "
        f"halfvec({config.prefix_dim}) prefix).\n"
        "-- Generated from mrl_pg/ddl/ by `mrl-pg sql > sql/install.sql`;\n"
        "-- tests/test_sql_script.py fails if this file and the generator differ.\n"
        '-- Run with: psql "$DATABASE_URL" -f sql/install.sql\n'
        "-- Needs pgvector >= 0.8 (iterative index scans); it stops with an error\n"
        "-- naming the installed version otherwise.\n"
    )
    body = ";\n\n".join(render(s) for s in create_ddl(config)) + ";\n"
    return header + "\\set ON_ERROR_STOP on\n\nBEGIN;\n\n" + body + "\nCOMMIT;\n"


def install(
    conn: psycopg.Connection[Any],
    config: TableConfig | None = None,
    *,
    with_search_function: bool = True,
) -> None:
    """Create the table, indexes and search function in one transaction (all or nothing).

    For schema managed by migrations use ``mrl-pg migrate`` or
    :mod:`mrl_pg.alembic` instead; this is for scripts and tests.
    """
    config = config or TableConfig()
    try:
        with conn.transaction():
            for statement in create_ddl(config, with_search_function=with_search_function):
                conn.execute(statement)
    except psycopg.Error as exc:
        raise DatabaseError(f"could not create {config.qualified_name}: {exc}") from exc
