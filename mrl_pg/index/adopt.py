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

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from mrl_pg.config import TableConfig
from mrl_pg.errors import DatabaseError, InvalidConfigError
from mrl_pg.index.build import (
    IndexBuildReport,
    IndexProgress,
    IndexStatus,
    _autocommit,
    build_hnsw_index,
    drop_hnsw_index,
    index_status,
)
from mrl_pg.index.memory import default_maintenance_work_mem, estimate_hnsw_bytes
from mrl_pg.schema.adoption import (
    ADOPTION_REFUSED,
    adopt_ddl,
    indexed_expression,
    rebuild_ddl,
    release_ddl,
)

__all__ = [
    "AdoptReport",
    "adopt_table",
    "release_table",
]


@dataclass(frozen=True)
class AdoptReport:
    """What :func:`adopt_table` did; ``index`` is None when a valid index was already there,
    ``rebuilt`` True when an index of another prefix was replaced (``rebuild=True``)."""

    table: str
    index_name: str
    index: IndexBuildReport | None
    function: str
    rebuilt: bool = False

    def lines(self) -> list[str]:
        """A line per step, for the CLI."""
        if self.index is None:
            built = f"index {self.index_name}: already there and valid, kept"
        else:
            verb = ("rebuilt concurrently beside the old one, swapped in one transaction,"
                    if self.rebuilt else "built concurrently")
            built = (f"index {self.index_name}: {verb} on {self.index.rows:,} rows "
                     f"in {self.index.seconds:.1f} s ({self.index.index_bytes / 2**20:.1f} MiB)")
        return [built, f"function {self.function}(query_embedding, match_count, oversample, "
                       "filter): created or replaced"]


def adopt_table(
    conn: psycopg.Connection[Any],
    config: TableConfig,
    *,
    maintenance_work_mem: int | str | None = None,
    on_progress: Callable[[IndexProgress], None] | None = None,
    rebuild: bool = False,
) -> AdoptReport:
    """Add adaptive search to an existing table without blocking its writers (idempotent).

    The prefix index is built ``CONCURRENTLY`` (a leftover of a crashed build
    is dropped first); a valid index already there is kept. One holding another
    prefix (another size or column) is refused with
    :class:`~mrl_pg.errors.InvalidConfigError` naming both, unless ``rebuild``:
    then the new index is built beside it and swapped in with the new search
    function in one short transaction (:func:`~mrl_pg.schema.adoption.rebuild_ddl`),
    so no search runs without an index. Then the search function is created or
    replaced; when its result columns changed (the table's columns did, or
    ``columns``), it is dropped and created in one transaction, keeping the
    roles' ``EXECUTE`` privileges. ``conn`` must not be inside a transaction.

    What an earlier adoption recorded (key, returned columns, metadata and tenant
    columns, embedding and prefix) is what :func:`~mrl_pg.table_config` takes for
    every argument left out, so adopting again keeps it.

    >>> articles = table_config(conn, "articles", embedding="embedding")  # doctest: +SKIP
    >>> adopt_table(conn, articles)  # doctest: +SKIP
    """
    ddl = adopt_ddl(config)
    status = index_status(conn, config)
    swap = rebuild and status.exists and status.valid and _holds_another_prefix(conn, config)
    try:
        with conn.transaction():
            for statement in (rebuild_ddl(config) if swap else ddl).before:
                conn.execute(statement)
    except psycopg.Error as exc:
        if exc.sqlstate == ADOPTION_REFUSED:
            raise InvalidConfigError(str(exc.diag.message_primary)) from exc
        raise DatabaseError(f"cannot adopt {config.qualified_name}: {exc}") from exc
    if swap:
        return _rebuild(conn, config, status, maintenance_work_mem)
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


def _holds_another_prefix(conn: psycopg.Connection[Any], config: TableConfig) -> bool:
    row = conn.execute(
        "SELECT pg_get_expr(indexprs, indrelid) FROM pg_index WHERE indexrelid = to_regclass(%s)",
        (config.qualified(config.hnsw_index_name).as_string(conn),)).fetchone()
    # No expression: mrl_pg's own table, which the guard refuses, rebuild or not.
    return row is not None and row[0] is not None and row[0] != indexed_expression(config)


def _rebuild(
    conn: psycopg.Connection[Any], config: TableConfig, old: IndexStatus,
    maintenance_work_mem: int | str | None,
) -> AdoptReport:
    """Run :func:`~mrl_pg.schema.adoption.rebuild_ddl`: build beside, swap, drop the old."""
    ddl = rebuild_ddl(config)
    rows = old.estimated_rows or 0
    estimate = estimate_hnsw_bytes(rows, config)
    memory = (default_maintenance_work_mem(estimate) if maintenance_work_mem is None
              else maintenance_work_mem)
    started = time.perf_counter()
    try:
        with _autocommit(conn, config):
            previous = conn.execute(
                "SELECT current_setting('maintenance_work_mem')").fetchone()
            conn.execute("SELECT set_config('maintenance_work_mem', %s, false)",
                         (f"{memory // 1024}kB" if isinstance(memory, int) else memory,))
            try:
                for statement in ddl.concurrent:
                    conn.execute(statement)
            finally:
                conn.execute("SELECT set_config('maintenance_work_mem', %s, false)",
                             (previous[0] if previous else "64MB",))
            seconds = time.perf_counter() - started
            with conn.transaction():
                for statement in ddl.after:
                    conn.execute(statement)
            for statement in ddl.cleanup:
                conn.execute(statement)
    except psycopg.Error as exc:
        raise DatabaseError(
            f"could not rebuild the prefix index of {config.qualified_name} (the old index "
            f"and search function stay until the swap; adopt again with rebuild to "
            f"retry): {exc}") from exc
    new = index_status(conn, config)
    built = IndexBuildReport(seconds=seconds, rows=new.estimated_rows or rows,
                             index_bytes=new.bytes, maintenance_work_mem=_bytes(conn, memory),
                             parallel_workers=0, estimated_graph_bytes=estimate)
    return AdoptReport(config.qualified_name, config.hnsw_index_name, built,
                       config.search_function_name, rebuilt=True)


def _bytes(conn: psycopg.Connection[Any], memory: int | str) -> int:
    if isinstance(memory, int):
        return memory
    row = conn.execute("SELECT pg_size_bytes(%s)", (memory,)).fetchone()
    return int(row[0]) if row else 0


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
