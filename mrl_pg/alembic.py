"""Alembic operations, so a project's own migrations can add an MRL table in one call.

Inside one of your revisions::

    from mrl_pg import TableConfig
    from mrl_pg.alembic import create_mrl_table, drop_mrl_table

    DOCS = TableConfig("docs", full_dim=3072, prefix_dim=256)

    def upgrade() -> None:
        create_mrl_table(DOCS)        # table, indexes, mrl_search_docs(...)

    def downgrade() -> None:
        drop_mrl_table(DOCS)

The statements are the ones :mod:`mrl_pg.schema` generates, so a table made
this way is identical to one made by ``mrl-pg migrate`` or ``sql/install.sql``.
Works online and in offline (``--sql``) mode.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from alembic import op
from psycopg import sql

from .config import TableConfig
from .install import create_ddl, drop_ddl
from .schema import render, tuning_table_ddl
from .search_function import drop_search_function_ddl, search_function_ddl

__all__ = [
    "create_mrl_table",
    "drop_mrl_table",
    "create_search_function",
    "drop_search_function",
]


def _execute(statements: Iterable[sql.Composable]) -> None:
    for statement in statements:
        op.execute(sa.text(render(statement)))


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
