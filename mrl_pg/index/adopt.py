"""Adaptive search on a table you already have: no copy, no new column, no table rewrite.

Adopting a table (described by :func:`mrl_pg.table_config`) adds two things:

- an HNSW index on the re-normalized prefix *expression*
  ``l2_normalize(subvector(embedding, 1, P))::halfvec(P)``, built with
  ``CREATE INDEX CONCURRENTLY``: readers and writers carry on, and rows
  written during the build are in the index when it turns valid;
- the table's search function ``mrl_search_<table>(query_embedding,
  match_count, oversample, filter)``, returning the table's own columns plus
  ``distance`` (and ``mrl_pg_tuning``, which it reads).

Both steps are idempotent. :func:`release_table` removes them again; the
table and its rows are never touched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from mrl_pg.config import TableConfig
from mrl_pg.errors import DatabaseError, InvalidConfigError
from mrl_pg.index.build import (
    IndexBuildReport,
    IndexProgress,
    build_hnsw_index,
    drop_hnsw_index,
    index_status,
)
from mrl_pg.schema.adoption import ADOPTION_REFUSED, adopt_ddl, release_ddl

__all__ = [
    "AdoptReport",
    "adopt_table",
    "release_table",
]


@dataclass(frozen=True)
class AdoptReport:
    """What :func:`adopt_table` did; ``index`` is None when a valid index was already there."""

    table: str
    index_name: str
    index: IndexBuildReport | None
    function: str

    def lines(self) -> list[str]:
        """A line per step, for the CLI."""
        if self.index is None:
            built = f"index {self.index_name}: already there and valid, kept"
        else:
            built = (f"index {self.index_name}: built concurrently on {self.index.rows:,} rows "
                     f"in {self.index.seconds:.1f} s ({self.index.index_bytes / 2**20:.1f} MiB)")
        return [built, f"function {self.function}(query_embedding, match_count, oversample, "
                       "filter): created or replaced"]


def adopt_table(
    conn: psycopg.Connection[Any],
    config: TableConfig,
    *,
    maintenance_work_mem: int | str | None = None,
    on_progress: Callable[[IndexProgress], None] | None = None,
) -> AdoptReport:
    """Add adaptive search to an existing table without blocking its writers (idempotent).

    The prefix index is built ``CONCURRENTLY`` (a leftover of a crashed build
    is dropped first); a valid index already there is kept, and one holding
    another prefix (another size or column) is refused with
    :class:`~mrl_pg.errors.InvalidConfigError`: release the table first. Then the
    search function is created or replaced; when its result columns changed
    (the table's columns did, or ``columns``), it is dropped and created in one
    transaction, keeping the roles' ``EXECUTE`` privileges. ``conn`` must not be
    inside a transaction.

    What an earlier adoption recorded (key, returned columns, metadata and tenant
    columns, embedding and prefix) is what :func:`~mrl_pg.table_config` takes for
    every argument left out, so adopting again keeps it.

    >>> articles = table_config(conn, "articles", embedding="embedding")  # doctest: +SKIP
    >>> adopt_table(conn, articles)  # doctest: +SKIP
    """
    ddl = adopt_ddl(config)
    try:
        with conn.transaction():
            for statement in ddl.before:
                conn.execute(statement)
    except psycopg.Error as exc:
        if exc.sqlstate == ADOPTION_REFUSED:
            raise InvalidConfigError(str(exc.diag.message_primary)) from exc
        raise DatabaseError(f"cannot adopt {config.qualified_name}: {exc}") from exc
    status = index_status(conn, config)
    report = None
    if not (status.exists and status.valid):
        report = build_hnsw_index(conn, config, concurrently=True,
                                  maintenance_work_mem=maintenance_work_mem,
                                  on_progress=on_progress)
    try:
        with conn.transaction():
            for statement in ddl.after:
                conn.execute(statement)
    except psycopg.Error as exc:
        raise DatabaseError(
            f"could not create the search function of {config.qualified_name}: {exc}") from exc
    return AdoptReport(config.qualified_name, config.hnsw_index_name, report,
                       config.search_function_name)


def release_table(conn: psycopg.Connection[Any], config: TableConfig) -> bool:
    """Remove what :func:`adopt_table` added (function, tuning row, index); rows stay.

    True when there was an index to drop. ``conn`` must not be inside a transaction.
    """
    ddl = release_ddl(config)
    try:
        with conn.transaction():
            for statement in ddl.before:
                conn.execute(statement)
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot release {config.qualified_name}: {exc}") from exc
    return drop_hnsw_index(conn, config, concurrently=True)
