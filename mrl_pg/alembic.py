"""Alembic operations, so a project's own migrations can add an MRL table in one call.

Inside one of your revisions::

    from mrl_pg import TableConfig
    from mrl_pg.alembic import create_mrl_table, drop_mrl_table

    DOCS = TableConfig("docs", full_dim=3072, prefix_dim=256)

    def upgrade() -> None:
        create_mrl_table(DOCS)        # table, indexes, mrl_search_docs(...)

    def downgrade() -> None:
        drop_mrl_table(DOCS)

The statements are the ones :mod:`mrl_pg.schema.tables` generates, so a table made
this way is identical to one made by ``mrl-pg migrate`` or ``sql/install.sql``.
Works online and in offline (``--sql``) mode.

A table you already have is adopted instead (:mod:`mrl_pg.index.adopt`: an HNSW
index on the prefix expression, built concurrently, and its search function)::

    from mrl_pg.alembic import adopt_table, release_table

    def upgrade() -> None:
        adopt_table("articles", embedding="embedding", prefix_dim=256)

    def downgrade() -> None:
        release_table("articles")

The index is not in your models, so pass ``include_object=mrl_pg.migrate.include_object``
to ``context.configure(...)`` or ``alembic check`` proposes dropping it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import psycopg
import sqlalchemy as sa
from alembic import op
from psycopg import sql

from mrl_pg.config import DEFAULT_HNSW_EF_CONSTRUCTION, DEFAULT_HNSW_M, TableConfig
from mrl_pg.errors import InvalidConfigError
from mrl_pg.schema.adoption import (
    ADOPTION_REFUSED,
    adopt_ddl,
    indexed_expression,
    rebuild_ddl,
    release_ddl,
)
from mrl_pg.schema.catalog import table_config
from mrl_pg.schema.install import create_ddl, drop_ddl
from mrl_pg.schema.search_function import drop_search_function_ddl, search_function_ddl
from mrl_pg.schema.tables import render, tuning_table_ddl

__all__ = [
    "create_mrl_table",
    "drop_mrl_table",
    "create_search_function",
    "drop_search_function",
    "adopt_table",
    "release_table",
]

# What text() reads as a bind parameter (":name") or as an escaped colon ("\:name"):
# an adopted table's column names are the user's and may hold either.
_TEXT_COLON = re.compile(r"(?<![:\w\\]):\w+(?!:)|\\:[\w$]*(?![:\w$])")


def _text(statement: sql.Composable) -> sa.TextClause:
    return sa.text(_TEXT_COLON.sub(lambda m: "\\" + m.group(0), render(statement)))


def _execute(statements: Iterable[sql.Composable]) -> None:
    for statement in statements:
        op.execute(_text(statement))


def create_mrl_table(config: TableConfig, *, with_search_function: bool = True) -> None:
    """Create the extension (if missing), the table, its indexes and its search function."""
    _execute(create_ddl(config, with_search_function=with_search_function))


def drop_mrl_table(config: TableConfig, *, with_search_function: bool = True) -> None:
    """Drop the search function and the table; the ``vector`` extension stays."""
    _execute(drop_ddl(config, with_search_function=with_search_function))


def create_search_function(config: TableConfig) -> None:
    """Create (or replace) the table's search function, and the ``mrl_pg_tuning`` it reads."""
    _execute([*tuning_table_ddl(config), search_function_ddl(config)])


def drop_search_function(config: TableConfig) -> None:
    """Drop only the table's search function."""
    _execute([drop_search_function_ddl(config)])


def adopt_table(
    table: TableConfig | str,
    *,
    embedding: str | None = None,
    prefix_dim: int | None = None,
    schema: str | None = None,
    key: tuple[str, ...] | list[str] | None = None,
    columns: tuple[str, ...] | list[str] | None = None,
    metadata: str | None = None,
    tenant: str | None = None,
    hnsw_m: int = DEFAULT_HNSW_M,
    hnsw_ef_construction: int = DEFAULT_HNSW_EF_CONSTRUCTION,
    rebuild: bool = False,
) -> TableConfig:
    """Adopt an existing table as a migration step (see :func:`mrl_pg.index.adopt.adopt_table`):
    the prefix HNSW index, built without blocking readers or writers, then the search function.

    ``table`` is a name, described online with :func:`mrl_pg.table_config`'s
    keyword arguments, or a full :class:`TableConfig`, which offline (``--sql``)
    mode needs (its ``repr()`` is Python to paste into the revision). The
    revision's transaction is committed before ``CREATE INDEX CONCURRENTLY`` and
    a new one begun after it (Alembic's ``autocommit_block``; use
    ``transaction_per_migration=True``). If the build fails the revision is not
    recorded; running it again drops the crashed build's invalid index (online)
    and builds anew, while a valid index is kept. Memory for a large table:
    ``op.execute("SET maintenance_work_mem = '4GB'")`` first. Returns the description.

    Adopting again keeps what the earlier adoption recorded for every argument left
    out; an index already there with another prefix (size or column) is refused,
    naming both, unless ``rebuild=True``: then the new index is built beside the old
    one and swapped in with the new search function in one short transaction, the old
    one dropped after (:func:`mrl_pg.schema.adoption.rebuild_ddl`; offline, the
    script always takes this path). A search function whose result columns changed is
    dropped and created again with its grants.

    >>> def upgrade() -> None:  # doctest: +SKIP
    ...     adopt_table("articles", embedding="embedding", prefix_dim=256)
    """
    context = op.get_context()
    if isinstance(table, TableConfig):
        given = {"embedding": embedding, "prefix_dim": prefix_dim, "schema": schema, "key": key,
                 "columns": columns, "metadata": metadata, "tenant": tenant}
        named = sorted(name for name, value in given.items() if value is not None)
        if named or (hnsw_m, hnsw_ef_construction) != (DEFAULT_HNSW_M,
                                                          DEFAULT_HNSW_EF_CONSTRUCTION):
            raise InvalidConfigError(
                f"adopt_table got a TableConfig and {', '.join(named) or 'HNSW settings'}: "
                "the description says it all; the keyword arguments describe a table by name")
        config = table
    elif context.as_sql:
        raise InvalidConfigError(
            f"adopt_table({table!r}) in offline (--sql) mode needs a full TableConfig: "
            "without a database the table's columns cannot be read; put "
            f"repr(mrl_pg.table_config(conn, {table!r}, ...)) in the revision")
    else:
        config = table_config(
            _driver_connection(table), table, embedding=embedding, prefix_dim=prefix_dim,
            schema=schema, key=key, columns=columns, metadata=metadata, tenant=tenant,
            hnsw_m=hnsw_m, hnsw_ef_construction=hnsw_ef_construction)
    if rebuild and (context.as_sql or _holds_another_prefix(config)):
        swap = rebuild_ddl(config)
        _execute(swap.before)
        with context.autocommit_block():
            _execute(swap.concurrent)
        _execute(swap.after)
        with context.autocommit_block():
            _execute(swap.cleanup)
        return config
    ddl = adopt_ddl(config)
    try:
        _execute(ddl.before)
    except sa.exc.DBAPIError as exc:
        # The same refusal as mrl_pg.index.adopt.adopt_table's: another prefix, or
        # mrl_pg's own table (offline, the DO block stops the script with this message).
        orig = exc.orig
        if isinstance(orig, psycopg.Error) and orig.sqlstate == ADOPTION_REFUSED:
            raise InvalidConfigError(str(orig.diag.message_primary)) from exc
        raise
    # IF NOT EXISTS would keep a crashed build's invalid index for good.
    crashed = not context.as_sql and _index_is_invalid(config)
    with context.autocommit_block():
        if crashed:
            _execute(release_ddl(config).concurrent)
        _execute(ddl.concurrent)
    _execute(ddl.after)
    return config


def release_table(table: TableConfig | str, *, schema: str | None = None) -> None:
    """Undo :func:`adopt_table`: the search function and tuning row go in the revision's
    transaction, the index with ``DROP INDEX CONCURRENTLY`` outside it; rows stay.

    ``table`` is the name (online and offline) or the :class:`TableConfig` adopted.

    >>> def downgrade() -> None:  # doctest: +SKIP
    ...     release_table("articles")
    """
    if isinstance(table, TableConfig):
        if schema is not None:
            raise InvalidConfigError(
                "release_table got a TableConfig and schema: the description names its schema")
        config = table
    else:
        # Releasing needs nothing but the names, so no description is read.
        config = TableConfig(table, full_dim=2, prefix_dim=1, schema=schema, prefix_column=None,
                             adopted=True)
    ddl = release_ddl(config)
    _execute(ddl.before)
    with op.get_context().autocommit_block():
        _execute(ddl.concurrent)
    _execute(ddl.after)


def _driver_connection(table: str) -> psycopg.Connection[Any]:
    driver = op.get_bind().connection.driver_connection
    if not isinstance(driver, psycopg.Connection):
        raise InvalidConfigError(
            f"adopt_table({table!r}) reads the table with psycopg 3, but this migration runs "
            f"on {type(driver).__module__}: use a postgresql+psycopg:// URL, or pass a full "
            "TableConfig")
    return driver


def _index_is_invalid(config: TableConfig) -> bool:
    row = op.get_bind().execute(
        sa.text("SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)"),
        {"name": render(config.qualified(config.hnsw_index_name))},
    ).fetchone()
    return row is not None and bool(row[0])


def _holds_another_prefix(config: TableConfig) -> bool:
    row = op.get_bind().execute(
        sa.text("SELECT pg_get_expr(indexprs, indrelid) FROM pg_index "
                "WHERE indexrelid = to_regclass(:name) AND indisvalid"),
        {"name": render(config.qualified(config.hnsw_index_name))},
    ).fetchone()
    # No expression: mrl_pg's own table, which the guard refuses, rebuild or not.
    return row is not None and row[0] is not None and row[0] != indexed_expression(config)
