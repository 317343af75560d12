"""Adaptive and exact search over a psycopg connection (sync and async).

Each search runs in its own transaction, or in a savepoint inside the
caller's, in one round trip (:mod:`mrl_pg.statement.round_trip`): BEGIN (or
SAVEPOINT), the settings statement, which reads the table's tuning in the
database, the search statement and COMMIT (or the old settings put back and
RELEASE) leave in one pipeline with a single Sync. No setting outlives the
search. Nothing is rolled back on success, since psycopg forgets its
prepared statements on every rollback. Statements are never prepared, so a
cached generic plan can never replace the per-call plan.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from psycopg import sql

from mrl_pg.config import TableConfig
from mrl_pg.errors import DatabaseError, one_line
from mrl_pg.statement.filters import ColumnFilter, Shape, compile_where, where_sql
from mrl_pg.statement.query import (
    ADAPTIVE_SETTING_NAMES,
    EXACT_SETTINGS,
    POOL_SQL,
    SearchParams,
    adaptive_search_sql,
    adaptive_settings_sql,
    exact_search_sql,
    search_parameters,
    settings_parameters,
    settings_sql,
)
from mrl_pg.statement.round_trip import begin_command, driver_begin, steps, wrapping
from mrl_pg.statement.stages import PREFIX_HNSW, FirstStage
from mrl_pg.statement.tuning import DEFAULT_TUNING, TUNING_TABLE, SearchTuning
from mrl_pg.vectors import FloatArray, as_embedding

__all__ = [
    "SearchResult",
    "SearchStatement",
    "adaptive_search_statement",
    "exact_search_statement",
    "search",
    "exact_search",
    "explain",
    "explain_statement",
    "run_statement",
    "search_async",
    "exact_search_async",
]


@dataclass(frozen=True)
class SearchResult:
    """One row of a search: the table's returned columns and the full-dimension cosine
    ``distance`` (0 = same direction).

    Columns read as attributes or items: ``r.id``, ``r.title``, ``r["title"]``;
    ``r.row`` is the dict of them all, in the table's order.
    """

    row: dict[str, Any]
    distance: float

    def __getattr__(self, name: str) -> Any:
        row = self.__dict__.get("row")
        if row is None or name not in row:
            raise AttributeError(f"search result has no column {name!r}")
        return row[name]

    def __getitem__(self, name: str) -> Any:
        return self.row[name]

    def as_dict(self) -> dict[str, Any]:
        """The columns and ``distance`` as one dict (what ``mrl-pg search --json`` prints)."""
        return {**self.row, "distance": self.distance}


@dataclass(frozen=True)
class SearchStatement:
    """A search as psycopg objects: ``settings`` with ``settings_params``, then ``statement``
    with ``params``.

    ``settings`` saves the old values of ``setting_names`` in the database and
    sets the new ones for the transaction: run both in a transaction of their
    own, or put the old values back with
    :func:`mrl_pg.statement.query.restore_settings_sql` afterwards
    (:func:`run_statement` does all this, in one round trip). ``without_tuning``
    is the same search with the default tuning, for a database that has no
    ``mrl_pg_tuning`` table (yet, or any more).
    """

    settings: sql.Composed
    statement: sql.Composed
    params: dict[str, Any]
    setting_names: tuple[str, ...] = ()
    settings_params: dict[str, Any] | None = None
    without_tuning: SearchStatement | None = None


def _query_vector(config: TableConfig, query: Any) -> FloatArray:
    return as_embedding(
        query, config.full_dim, prefix_dim=config.prefix_dim, what="query embedding"
    )


@functools.lru_cache(maxsize=256)
def _adaptive_statement(
    config: TableConfig, filtered: bool, shape: Shape, stage: FirstStage
) -> sql.Composed:
    # Values are placeholders, so the text depends on the table, filters and stage only.
    return adaptive_search_sql(
        config,
        query=sql.Placeholder("query"),
        pool=POOL_SQL,
        k=sql.Placeholder("k"),
        filter=sql.Placeholder("filter") if filtered else None,
        where=where_sql(config, shape),
        stage=stage,
        offset=sql.Placeholder("offset"),
    )


@functools.lru_cache(maxsize=256)
def _settings_statement(config: TableConfig, read_tuning: bool,
                        tuning: SearchTuning) -> sql.Composed:
    return adaptive_settings_sql(config, read_tuning=read_tuning, tuning=tuning)


def adaptive_search_statement(
    config: TableConfig,
    query: Any,
    *,
    k: int = 10,
    oversample: int | None = None,
    filter: Mapping[str, Any] | None = None,
    where: Mapping[str, Any] | ColumnFilter | None = None,
    tenant: Any = None,
    max_scan_tuples: int | None = None,
    ef_search: int | None = None,
    tuning: SearchTuning | None = None,
    stage: FirstStage = PREFIX_HNSW,
    offset: int = 0,
) -> SearchStatement:
    """The adaptive search for one full-dimension ``query`` as psycopg ``Composed`` + parameters.

    ``oversample`` and ``ef_search`` left unset come from the table's
    ``mrl_pg_tuning`` row, read by the settings statement in the database (no
    extra round trip), or from ``tuning`` when one is given (then no table is
    read). ``stage`` finds the candidates (:mod:`mrl_pg.statement.stages`; its
    index must exist). ``offset`` skips that many of the best rows (the pool grows
    to hold them: ``(offset + k) * oversample``).

    >>> s = adaptive_search_statement(TableConfig(), [1.0] * 1536, k=5, oversample=8)
    >>> s.settings_params["k"], s.settings_params["oversample"]
    (5, 8)
    """
    known = tuning if tuning is not None else DEFAULT_TUNING
    params = SearchParams(k=k, oversample=known.oversample if oversample is None else oversample,
                          filter=filter, max_scan_tuples=max_scan_tuples, ef_search=ef_search,
                          tuning=known, offset=offset)
    columns = _column_filter(config, where, tenant)
    values = search_parameters(params) | columns.params | {"query": _query_vector(config, query)}
    statement = _adaptive_statement(config, params.has_filter, columns.shape, stage)
    settings_params = settings_parameters(params, oversample=oversample, ef_search=ef_search)
    untuned = SearchStatement(
        settings=_settings_statement(config, False, known), statement=statement, params=values,
        setting_names=ADAPTIVE_SETTING_NAMES, settings_params=settings_params)
    if tuning is not None or (oversample is not None and ef_search is not None):
        return untuned
    return SearchStatement(
        settings=_settings_statement(config, True, DEFAULT_TUNING), statement=statement,
        params=values, setting_names=ADAPTIVE_SETTING_NAMES, settings_params=settings_params,
        without_tuning=untuned)


def _column_filter(
    config: TableConfig, where: Mapping[str, Any] | ColumnFilter | None, tenant: Any
) -> ColumnFilter:
    if isinstance(where, ColumnFilter):
        if tenant is not None:
            return compile_where(config, None, tenant=tenant).merge(where)
        return where
    return compile_where(config, where, tenant=tenant)


def exact_search_statement(
    config: TableConfig,
    query: Any,
    *,
    k: int = 10,
    filter: Mapping[str, Any] | None = None,
    where: Mapping[str, Any] | ColumnFilter | None = None,
    tenant: Any = None,
    offset: int = 0,
) -> SearchStatement:
    """Exact full-dimension search: index scans off for the transaction, every row compared."""
    params = SearchParams(k=k, oversample=1, filter=filter, offset=offset)
    columns = _column_filter(config, where, tenant)
    values = {
        "query": _query_vector(config, query),
        "k": params.k,
        "offset": params.offset,
        "filter": params.filter_json,
    } | columns.params
    statement = exact_search_sql(
        config,
        query=sql.Placeholder("query"),
        k=sql.Placeholder("k"),
        filter=sql.Placeholder("filter") if params.has_filter else None,
        where=where_sql(config, columns.shape),
        offset=sql.Placeholder("offset"),
    )
    return SearchStatement(settings=settings_sql(EXACT_SETTINGS), statement=statement,
                           params=values, setting_names=tuple(n for n, _ in EXACT_SETTINGS))


def _rows_to_results(config: TableConfig, rows: list[tuple[Any, ...]]) -> list[SearchResult]:
    names = config.returned_columns
    return [SearchResult(dict(zip(names, r[:-1], strict=True)), float(r[-1])) for r in rows]


def _missing_tuning(exc: psycopg.Error) -> bool:
    return isinstance(exc, psycopg.errors.UndefinedTable) and TUNING_TABLE in str(exc)


def _failure(exc: psycopg.Error) -> DatabaseError:
    return DatabaseError(f"search failed: {one_line(exc)}")


def _run_once(
    conn: psycopg.Connection[Any], search: SearchStatement
) -> list[tuple[Any, ...]]:
    wrap = wrapping(conn.info.transaction_status, autocommit=conn.autocommit,
                    setting_names=search.setting_names, begin=begin_command(conn))
    cur = conn.cursor()
    try:
        with driver_begin(conn, wrap), conn.pipeline():
            for step in steps(wrap, search.settings, search.settings_params, search.statement,
                              search.params):
                (cur if step.search else conn).execute(step.query, step.params, prepare=False)
        return cur.fetchall()
    except psycopg.Error:
        for statement in wrap.undo_after_failure(conn.info.transaction_status):
            conn.execute(statement, prepare=False)
        raise
    finally:
        cur.close()


def _run(conn: psycopg.Connection[Any], search: SearchStatement) -> list[tuple[Any, ...]]:
    try:
        try:
            return _run_once(conn, search)
        except psycopg.Error as exc:
            if search.without_tuning is None or not _missing_tuning(exc):
                raise
        return _run_once(conn, search.without_tuning)
    except psycopg.Error as exc:
        raise _failure(exc) from exc


async def _run_once_async(
    conn: psycopg.AsyncConnection[Any], search: SearchStatement
) -> list[tuple[Any, ...]]:
    wrap = wrapping(conn.info.transaction_status, autocommit=conn.autocommit,
                    setting_names=search.setting_names, begin=begin_command(conn))
    cur = conn.cursor()
    try:
        with driver_begin(conn, wrap):
            async with conn.pipeline():
                for step in steps(wrap, search.settings, search.settings_params,
                                  search.statement, search.params):
                    await (cur if step.search else conn).execute(
                        step.query, step.params, prepare=False)
        return await cur.fetchall()
    except psycopg.Error:
        for statement in wrap.undo_after_failure(conn.info.transaction_status):
            await conn.execute(statement, prepare=False)
        raise
    finally:
        await cur.close()


async def _run_async(
    conn: psycopg.AsyncConnection[Any], search: SearchStatement
) -> list[tuple[Any, ...]]:
    try:
        try:
            return await _run_once_async(conn, search)
        except psycopg.Error as exc:
            if search.without_tuning is None or not _missing_tuning(exc):
                raise
        return await _run_once_async(conn, search.without_tuning)
    except psycopg.Error as exc:
        raise _failure(exc) from exc


def _adaptive(
    config: TableConfig,
    query: Any,
    *,
    k: int,
    oversample: int | None,
    filter: Mapping[str, Any] | None,
    where: Mapping[str, Any] | None,
    tenant: Any,
    max_scan_tuples: int | None,
    ef_search: int | None,
    offset: int = 0,
) -> SearchStatement:
    return adaptive_search_statement(
        config, query, k=k, oversample=oversample, filter=filter, where=where, tenant=tenant,
        max_scan_tuples=max_scan_tuples, ef_search=ef_search, offset=offset,
    )


def search(
    conn: psycopg.Connection[Any],
    config: TableConfig,
    query: Any,
    *,
    k: int = 10,
    oversample: int | None = None,
    filter: Mapping[str, Any] | None = None,
    where: Mapping[str, Any] | None = None,
    tenant: Any = None,
    max_scan_tuples: int | None = None,
    ef_search: int | None = None,
    offset: int = 0,
) -> list[SearchResult]:
    """Adaptive search: ``k * oversample`` candidates by prefix (HNSW), re-ranked by full cosine.

    ``oversample`` and ``ef_search`` default to what ``mrl-pg tune`` stored for
    the table (:mod:`mrl_pg.statement.tuning`), else 8x and twice the pool; reading them
    costs one extra round trip, which passing both skips. ``where`` filters
    the table's own columns (:mod:`mrl_pg.statement.filters`: equality, IN, ranges,
    NULL checks), ``filter`` the metadata column by containment, ``tenant``
    the tenant column; all three apply inside the candidate scan, so ``k``
    matching rows come back whenever that many exist. ``offset`` skips the best
    ``offset`` rows: ``offset=10, k=10`` is rows 11..20 of a ``k=20`` search, from a
    pool of ``(offset + k) * oversample`` candidates (``docs/filters.md``). A row whose
    embedding is NULL is never a result.

    >>> search(conn, TableConfig(), embedding, k=10, filter={"lang": "en"})  # doctest: +SKIP
    >>> search(conn, articles, embedding, where={"author_id": [5, 7]})  # doctest: +SKIP
    """
    return _rows_to_results(config, _run(conn, _adaptive(
        config, query, k=k, oversample=oversample, filter=filter, where=where, tenant=tenant,
        max_scan_tuples=max_scan_tuples, ef_search=ef_search, offset=offset,
    )))


def exact_search(
    conn: psycopg.Connection[Any],
    config: TableConfig,
    query: Any,
    *,
    k: int = 10,
    filter: Mapping[str, Any] | None = None,
    where: Mapping[str, Any] | None = None,
    tenant: Any = None,
    offset: int = 0,
) -> list[SearchResult]:
    """Exact search on the full vectors (sequential scan): ground truth, or for small tables."""
    statement = exact_search_statement(config, query, k=k, filter=filter, where=where,
                                       tenant=tenant, offset=offset)
    return _rows_to_results(config, _run(conn, statement))


async def search_async(
    conn: psycopg.AsyncConnection[Any],
    config: TableConfig,
    query: Any,
    *,
    k: int = 10,
    oversample: int | None = None,
    filter: Mapping[str, Any] | None = None,
    where: Mapping[str, Any] | None = None,
    tenant: Any = None,
    max_scan_tuples: int | None = None,
    ef_search: int | None = None,
    offset: int = 0,
) -> list[SearchResult]:
    """Async twin of :func:`search`."""
    return _rows_to_results(config, await _run_async(conn, _adaptive(
        config, query, k=k, oversample=oversample, filter=filter, where=where, tenant=tenant,
        max_scan_tuples=max_scan_tuples, ef_search=ef_search, offset=offset,
    )))


async def exact_search_async(
    conn: psycopg.AsyncConnection[Any],
    config: TableConfig,
    query: Any,
    *,
    k: int = 10,
    filter: Mapping[str, Any] | None = None,
    where: Mapping[str, Any] | None = None,
    tenant: Any = None,
    offset: int = 0,
) -> list[SearchResult]:
    """Async twin of :func:`exact_search`."""
    statement = exact_search_statement(config, query, k=k, filter=filter, where=where,
                                       tenant=tenant, offset=offset)
    return _rows_to_results(config, await _run_async(conn, statement))


def explain(
    conn: psycopg.Connection[Any],
    config: TableConfig,
    query: Any,
    *,
    k: int = 10,
    oversample: int | None = None,
    filter: Mapping[str, Any] | None = None,
    where: Mapping[str, Any] | None = None,
    tenant: Any = None,
    max_scan_tuples: int | None = None,
    ef_search: int | None = None,
    offset: int = 0,
    exact: bool = False,
    analyze: bool = False,
    as_json: bool = False,
) -> Any:
    """The plan PostgreSQL uses for this search, under the same settings the search runs with.

    Text by default, with each vector literal shortened to ``'[1536 dims]'``
    so the plan stays readable; ``as_json=True`` returns the parsed
    ``FORMAT JSON`` plan, unshortened. ``analyze=True`` runs the statement and
    reports actual row counts and shared buffers.
    """
    stmt: SearchStatement
    if exact:
        stmt = exact_search_statement(config, query, k=k, filter=filter, where=where,
                                      tenant=tenant, offset=offset)
    else:
        stmt = _adaptive(config, query, k=k, oversample=oversample, filter=filter, where=where,
                         tenant=tenant, max_scan_tuples=max_scan_tuples, ef_search=ef_search,
                         offset=offset)
    return explain_statement(conn, stmt, analyze=analyze, as_json=as_json)


def run_statement(conn: psycopg.Connection[Any], search: SearchStatement) -> list[tuple[Any, ...]]:
    """Run a :class:`SearchStatement` as :func:`search` does: its settings end with it."""
    return _run(conn, search)


def explain_statement(
    conn: psycopg.Connection[Any], search: SearchStatement, *, analyze: bool = False,
    as_json: bool = False,
) -> Any:
    """``EXPLAIN`` a :class:`SearchStatement` under its own settings (see :func:`explain`)."""
    options = sql.SQL(", ").join(
        sql.SQL(o)
        for o in (["ANALYZE", "BUFFERS"] if analyze else [])
        + (["FORMAT JSON"] if as_json else ["FORMAT TEXT"])
    )

    def explained(statement: SearchStatement) -> SearchStatement:
        fallback = statement.without_tuning
        return replace(statement,
                       statement=sql.SQL("EXPLAIN ({}) {}").format(options, statement.statement),
                       without_tuning=None if fallback is None else explained(fallback))

    rows = _run(conn, explained(search))
    if as_json:
        plan = rows[0][0]
        return json.loads(plan) if isinstance(plan, str) else plan
    return _shorten_vectors("\n".join(r[0] for r in rows))


_VECTOR_LITERAL = re.compile(r"'\[([^\]']*)\]'")


def _shorten_vectors(plan: str) -> str:
    def short(match: re.Match[str]) -> str:
        dims = match.group(1).count(",") + 1
        return match.group(0) if dims <= 8 else f"'[{dims} dims]'"

    return _VECTOR_LITERAL.sub(short, plan)


