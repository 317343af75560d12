"""The adaptive search statement, built once for every front end.

One statement: take ``k * oversample`` candidates by prefix distance through
the HNSW index, re-rank them by full-dimension cosine distance, return ``k``.
The psycopg front end binds named placeholders; the SQL function binds
``$1..$4``; both come from :func:`adaptive_search_sql`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from mrl_pg.config import TableConfig, column_name
from mrl_pg.errors import InvalidSearchError
from mrl_pg.statement.stages import PREFIX_HNSW, FirstStage
from mrl_pg.statement.tuning import (
    DEFAULT_TUNING,
    MAX_EF_SEARCH,
    MAX_MATCH_COUNT,
    MAX_POOL,
    SearchTuning,
    ef_search_sql,
    integer_argument,
    tuning_table,
)

__all__ = [
    "SearchParams",
    "MAX_MATCH_COUNT",
    "MAX_EF_SEARCH",
    "adaptive_search_sql",
    "full_distance",
    "exact_search_sql",
    "scan_settings",
    "EXACT_SETTINGS",
    "settings_sql",
    "restore_settings_sql",
    "adaptive_settings_sql",
    "settings_parameters",
    "ADAPTIVE_SETTING_NAMES",
    "SAVED_SETTINGS",
    "POOL_SETTING",
    "POOL_SQL",
    "ScanMemoryRule",
    "SCAN_MEMORY_RULE",
    "ef_search_for",
    "filter_to_json",
    "ClampedMultiple",
    "MAX_SCAN_TUPLES_RULE",
]

DEFAULT_MAX_SCAN_TUPLES = 20_000  # pgvector's default; bounds a filter that matches nothing


@dataclass(frozen=True)
class ClampedMultiple:
    """``max(floor, min(factor * n, ceiling))``: one rule, evaluated here or rendered as SQL.

    The psycopg and ORM front ends evaluate it in Python; the SQL function's
    body is rendered from the same object, so the two can never disagree.

    >>> ClampedMultiple(factor=2, floor=40, ceiling=1000)(30)
    60
    """

    factor: int
    floor: int
    ceiling: int | None = None

    def __call__(self, n: int) -> int:
        value = max(self.floor, self.factor * n)
        return value if self.ceiling is None else min(value, max(self.floor, self.ceiling))

    def sql(self, n: sql.Composable) -> sql.Composed:
        """The rule as a SQL integer expression of ``n`` (bigint arithmetic, no overflow)."""
        value = sql.SQL("greatest({floor}, {factor} * ({n})::bigint)").format(
            floor=sql.Literal(self.floor), factor=sql.Literal(self.factor), n=n
        )
        if self.ceiling is None:
            return value
        return sql.SQL("least({value}, {ceiling})").format(
            value=value, ceiling=sql.Literal(max(self.floor, self.ceiling))
        )


MAX_SCAN_TUPLES_RULE = ClampedMultiple(factor=2, floor=DEFAULT_MAX_SCAN_TUPLES)
"""``hnsw.max_scan_tuples`` for a pool: pgvector's default, raised so an unfiltered pool fits."""


@dataclass(frozen=True)
class SearchParams:
    """Validated search arguments.

    ``pool`` = ``(offset + k) * oversample`` candidates are re-ranked; the ``k``
    rows after the best ``offset`` come back (a page: ``offset=10, k=10`` is rows
    11..20 of the same search for ``k=20``). ``filter`` is a JSON
    object matched by containment (``metadata @> filter``); empty means none.
    ``max_scan_tuples`` bounds how many index tuples an iterative scan visits
    while looking for rows that pass a filter. ``ef_search`` overrides
    ``tuning``'s rule (:meth:`~mrl_pg.statement.tuning.SearchTuning.ef_search_for`);
    a pool larger than it is still filled, by the iterative scan.
    """

    k: int = 10
    oversample: int = 8
    filter: Mapping[str, Any] | None = None
    max_scan_tuples: int | None = None
    ef_search: int | None = None
    tuning: SearchTuning = DEFAULT_TUNING
    offset: int = 0

    def __post_init__(self) -> None:
        for name in ("k", "oversample", "offset"):
            object.__setattr__(self, name, integer_argument(name, getattr(self, name)))
        for name in ("max_scan_tuples", "ef_search"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, integer_argument(name, getattr(self, name)))
        if self.ef_search is not None and not 1 <= self.ef_search <= MAX_EF_SEARCH:
            raise InvalidSearchError(
                f"ef_search must be between 1 and {MAX_EF_SEARCH}, got {self.ef_search}"
            )
        if not 1 <= self.k <= MAX_MATCH_COUNT:
            raise InvalidSearchError(f"k must be between 1 and {MAX_MATCH_COUNT}, got {self.k}")
        if self.oversample < 1:
            raise InvalidSearchError(f"oversample must be at least 1, got {self.oversample}")
        if self.offset < 0:
            raise InvalidSearchError(f"offset must be a non-negative integer, got {self.offset}")
        if self.k + self.offset > MAX_MATCH_COUNT:
            raise InvalidSearchError(
                f"offset + k must be at most {MAX_MATCH_COUNT}, got {self.offset} + {self.k}")
        if self.pool > MAX_POOL:
            what = "(offset + k) * oversample" if self.offset else "k * oversample"
            raise InvalidSearchError(f"{what} = {self.pool} candidates is more than {MAX_POOL}")
        if self.filter is not None and not isinstance(self.filter, Mapping):
            raise InvalidSearchError(
                f"filter must be a JSON object (a mapping), got {type(self.filter).__name__}"
            )
        if self.max_scan_tuples is not None and self.max_scan_tuples < 1:
            raise InvalidSearchError(
                f"max_scan_tuples must be positive, got {self.max_scan_tuples}"
            )
        _ = self.filter_json  # a filter JSON cannot encode is refused here, before any SQL

    @property
    def pool(self) -> int:
        """Candidates re-ranked: ``(offset + k) * oversample``, so page ``n`` of ``k`` rows
        is rows ``n*k+1 .. (n+1)*k`` of one search for ``(n+1)*k`` rows."""
        return (self.offset + self.k) * self.oversample

    @property
    def has_filter(self) -> bool:
        return bool(self.filter)

    @property
    def filter_json(self) -> str:
        """The filter as JSON text, sent as a parameter: keys and values are data, never SQL."""
        return filter_to_json(self.filter or {})

    @property
    def hnsw_ef_search(self) -> int:
        """``ef_search`` when given, else the tuning's rule for the pool."""
        if self.ef_search is not None:
            return self.ef_search
        return self.tuning.ef_search_for(self.pool)

    @property
    def scan_tuples(self) -> int:
        """Iterative-scan budget: :data:`MAX_SCAN_TUPLES_RULE` unless given."""
        if self.max_scan_tuples is not None:
            return self.max_scan_tuples
        return MAX_SCAN_TUPLES_RULE(self.pool)


def filter_to_json(filter: Mapping[str, Any]) -> str:
    """A metadata filter as JSON text for ``metadata @> %s::jsonb``, or an
    :class:`InvalidSearchError` naming why it is not a JSON object JSON can encode."""
    if not isinstance(filter, Mapping):
        raise InvalidSearchError(
            f"filter must be a JSON object (a mapping), got {type(filter).__name__}")
    try:
        return json.dumps(dict(filter), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidSearchError(f"filter cannot be encoded as JSON: {exc}") from None


def ef_search_for(pool: int) -> int:
    """``hnsw.ef_search`` for a candidate pool under
    :data:`~mrl_pg.statement.tuning.DEFAULT_TUNING`."""
    return DEFAULT_TUNING.ef_search_for(pool)


def _names(names: tuple[str, ...], table: str | None = None) -> sql.Composed:
    return sql.SQL(", ").join(
        column_name(table, name) if table else column_name(name) for name in names)


def full_distance(config: TableConfig, query: sql.Composable) -> sql.Composed:
    """Full-dimension cosine distance of the stored embedding to the query vector."""
    return sql.SQL("{} <=> {}::{}").format(
        sql.Identifier(config.embedding_column), query, sql.SQL(
            "halfvec" if config.embedding_type == "halfvec" else "vector"))


def _where(
    config: TableConfig, filter: sql.Composable | None, where: sql.Composable | None,
    indent: str,
) -> sql.Composable:
    # A row without a vector has no distance: never a candidate, never a result.
    conditions: list[sql.Composable] = [
        sql.SQL("{} IS NOT NULL").format(column_name(config.embedding_column))]
    if filter is not None:
        if config.metadata_column is None:
            raise InvalidSearchError(
                f"table {config.qualified_name} has no metadata column to filter on; "
                "filter its columns with where=")
        conditions.append(sql.SQL("{} @> {}::jsonb").format(
            column_name(config.metadata_column), filter))
    if where is not None:
        conditions.append(where)
    return sql.SQL(indent + "WHERE {}").format(sql.SQL(" AND ").join(conditions))


def adaptive_search_sql(
    config: TableConfig,
    *,
    query: sql.Composable,
    pool: sql.Composable,
    k: sql.Composable,
    filter: sql.Composable | None = None,
    where: sql.Composable | None = None,
    stage: FirstStage = PREFIX_HNSW,
    offset: sql.Composable | None = None,
) -> sql.Composed:
    """The adaptive statement; ``query``/``pool``/``k``/``filter``/``offset`` are how values
    are referenced.

    ``stage`` finds the candidates (:mod:`mrl_pg.statement.stages`); its ORDER BY is
    exactly its indexed expression (by default the prefix column's or the
    prefix expression's ``<=>`` to the query's prefix), so the planner can
    walk its HNSW index. ``filter`` (metadata containment) and ``where`` (a
    predicate on the table's columns, :mod:`mrl_pg.statement.filters`) sit in the
    candidate scan, so the iterative scan refills the pool with matching rows;
    so does ``embedding IS NOT NULL`` (a row without a vector is never a result).
    ``offset`` skips the best rows of the pool (the pool must hold ``offset + k``). Each
    candidate carries only its key and its full-dimension distance,
    computed as the index hands it over: the vector is never copied into the
    materialized pool. The best ``k`` are then joined back to the table for
    their columns (``k`` key lookups). ``MATERIALIZED`` keeps each LIMIT where it is.

    A walk that comes back with fewer candidates than the pool (a filter the
    iterative scan could not satisfy within ``hnsw.max_scan_tuples``, a scan out
    of memory, or a table with fewer matching rows than the pool) is replaced, in
    the same statement, by the exact answer: ``missed`` compares every matching
    row, and runs only then (its condition on ``candidates`` is a one-time
    filter, checked before its scan starts). Its ORDER BY (``+ 0``) matches no
    index, so no approximate index can stand in for it. So a search returns
    ``k`` rows whenever ``k`` rows match, fewer only when fewer match, and never
    re-ranks a pool smaller than it asked for.
    """
    key = config.key
    where_sql = _where(config, filter, where, "\n    ")
    short = sql.SQL("(SELECT count(*) FROM candidates) < {}").format(pool)
    return sql.SQL(
        """WITH candidates AS MATERIALIZED (
    SELECT {key}, {distance} AS distance
    FROM {table}{where}
    ORDER BY {order}
    LIMIT {pool}
), best AS MATERIALIZED (
    SELECT {key}, distance
    FROM candidates
    ORDER BY distance, {key}
    LIMIT {k}{offset}
), missed AS MATERIALIZED (
    SELECT {key}, {distance} AS distance
    FROM {table}{missed_where}
    ORDER BY ({distance}) + 0, {key}
    LIMIT {k}{offset}
), found AS (
    SELECT {key}, distance FROM best WHERE NOT {short}
    UNION ALL
    SELECT {key}, distance FROM missed
)
SELECT {returned}, found.distance
FROM found JOIN {table} AS t ON {join}
ORDER BY found.distance, {found_key}"""
    ).format(
        key=_names(key),
        distance=full_distance(config, query),
        table=config.table,
        where=where_sql,
        missed_where=_where(config, filter, sql.SQL(" AND ").join(
            [c for c in (where, short) if c is not None]), "\n    "),
        order=stage.order_by(config, query),
        pool=pool,
        k=k,
        offset=_offset(offset),
        short=short,
        returned=_names(config.returned_columns, "t"),
        join=sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(column_name("t", c), column_name("found", c))
            for c in key),
        found_key=_names(key, "found"),
    )


def _offset(offset: sql.Composable | None) -> sql.Composable:
    return sql.SQL("") if offset is None else sql.SQL(" OFFSET {}").format(offset)


def exact_search_sql(
    config: TableConfig,
    *,
    query: sql.Composable,
    k: sql.Composable,
    filter: sql.Composable | None = None,
    where: sql.Composable | None = None,
    offset: sql.Composable | None = None,
) -> sql.Composed:
    """Full-dimension cosine over every (filtered) row: ground truth, and fine for small tables.

    Its text differs from the adaptive statement's, so a cached plan of one is
    never reused for the other.
    """
    return sql.SQL(
        """SELECT /* mrl_pg exact */ {returned}, {distance} AS distance
FROM {table}{where}
ORDER BY distance, {key}
LIMIT {k}{offset}"""
    ).format(returned=_names(config.returned_columns), distance=full_distance(config, query),
             table=config.table, where=_where(config, filter, where, "\n"),
             key=_names(config.key), k=k, offset=_offset(offset))


def scan_settings(params: SearchParams) -> list[tuple[str, str]]:
    """Transaction-local settings for one adaptive search whose tuning is known, as (name, value).

    ``hnsw.ef_search`` raised to the pool (an HNSW scan returns at most
    ef_search rows otherwise), iterative scans on so a filter or a pool above
    1000 still fills, a bound on how far such a scan may go, and custom plans
    only, so a cached generic plan never replaces the per-call one. The psycopg
    and ORM front ends compute the same values in the database instead
    (:func:`tuned_settings_sql`), from the table's tuning row; this is their
    Python evaluation, for a known :class:`SearchParams`.
    """
    return [
        ("hnsw.ef_search", str(params.hnsw_ef_search)),
        ("hnsw.iterative_scan", "relaxed_order"),
        ("hnsw.max_scan_tuples", str(params.scan_tuples)),
        ("plan_cache_mode", "force_custom_plan"),
    ]


EXACT_SETTINGS: list[tuple[str, str]] = [
    ("enable_indexscan", "off"),
    ("enable_indexonlyscan", "off"),
    ("plan_cache_mode", "force_custom_plan"),
]
"""Transaction-local settings for exact search: no index scan, so every row is compared."""

SAVED_SETTINGS = "mrl_pg_search.saved_settings"
"""A custom setting that holds, as a JSON array, the values the settings statement replaced."""

POOL_SETTING = "mrl_pg_search.pool"
"""A custom setting that holds the candidate pool the settings statement chose."""

POOL_SQL = sql.SQL("current_setting({})::integer").format(sql.Literal(POOL_SETTING))
"""The pool as the adaptive statement reads it: chosen in the database, in the same round trip.

The planner folds this stable expression when it estimates the LIMIT, so the
plan is costed for the real pool."""

Value = str | sql.Composable


def settings_sql(
    settings: Sequence[tuple[str, Value]], *, chosen: sql.Composable | None = None,
) -> sql.Composed:
    """One statement that saves each setting's current value and sets it for the transaction.

    The values before are kept in the database (:data:`SAVED_SETTINGS`, a JSON
    array; JSON null for a setting not defined yet), never sent to the client
    and back, so :func:`restore_settings_sql` can run in the same round trip. A
    value is a string, or an expression over the columns of ``chosen``, a
    one-row query evaluated first (the pool and the tuned settings). Inside a
    caller's transaction the old values go back through
    :func:`restore_settings_sql` once the search has run, since a
    transaction-local setting would otherwise outlive it (even one made inside
    a savepoint, which ``RELEASE SAVEPOINT`` keeps).
    """
    names = [sql.Literal(name) for name, _ in settings]
    values = [v if isinstance(v, sql.Composable) else sql.Literal(v) for _, v in settings]
    return sql.SQL(
        "WITH old AS MATERIALIZED (SELECT json_build_array({old})::text AS saved){chosen} "
        "SELECT set_config({saved}, old.saved, true), {new} FROM old{chosen_from}"
    ).format(
        old=sql.SQL(", ").join(sql.SQL("current_setting({}, true)").format(n) for n in names),
        chosen=sql.SQL("") if chosen is None else sql.SQL(
            ", chosen AS MATERIALIZED ({})").format(chosen),
        saved=sql.Literal(SAVED_SETTINGS),
        new=sql.SQL(", ").join(
            sql.SQL("set_config({}, ({})::text, true)").format(name, value)
            for name, value in zip(names, values, strict=True)
        ),
        chosen_from=sql.SQL("") if chosen is None else sql.SQL(", chosen"),
    )


def restore_settings_sql(names: Sequence[str]) -> sql.Composed:
    """Puts back the values :func:`settings_sql` saved for ``names`` (in that order).

    A setting that was not defined before the search (pgvector's library not yet
    loaded in this session) goes back to its default.
    """
    return sql.SQL(
        "SELECT set_config(s.name, coalesce(s.old, p.reset_val), true) "
        "FROM ROWS FROM (unnest(ARRAY[{names}]::text[]), "
        "json_array_elements_text(current_setting({saved})::json)) AS s(name, old) "
        "JOIN pg_catalog.pg_settings AS p ON p.name = s.name"
    ).format(names=sql.SQL(", ").join(sql.Literal(n) for n in names),
             saved=sql.Literal(SAVED_SETTINGS))


@dataclass(frozen=True)
class ScanMemoryRule:
    """``hnsw.scan_mem_multiplier`` so an iterative scan may visit ``scan_tuples`` tuples.

    pgvector stops an iterative scan once its memory passes ``work_mem x
    hnsw.scan_mem_multiplier``, whatever ``hnsw.max_scan_tuples`` says: at the
    default 4MB a 30,000-row pool came back with 21,848 candidates. This rule
    allows ``bytes_per_tuple`` for each tuple the scan may visit (pgvector
    keeps about 200 bytes per visited tuple; the rest is margin), within
    pgvector's 1..1000. Memory is only allocated as the scan goes.

    >>> ScanMemoryRule(bytes_per_tuple=512)(20_000, work_mem_bytes=4 * 1024 * 1024)
    3
    """

    bytes_per_tuple: int = 512

    def __call__(self, scan_tuples: int, *, work_mem_bytes: int) -> int:
        needed = scan_tuples * self.bytes_per_tuple
        return min(1000, max(1, -(-needed // work_mem_bytes)))

    def sql(self, scan_tuples: sql.Composable) -> sql.Composed:
        """The rule as SQL over ``scan_tuples`` and the session's ``work_mem``."""
        return sql.SQL(
            "least(1000, greatest(1, ceil(({n})::numeric * {b} "
            "/ pg_catalog.pg_size_bytes(current_setting('work_mem')))))::integer"
        ).format(n=scan_tuples, b=sql.Literal(self.bytes_per_tuple))


SCAN_MEMORY_RULE = ScanMemoryRule()


def _tuning_row(config: TableConfig | None, tuning: SearchTuning) -> sql.Composed:
    """A one-row query of the tuning that applies: the table's row, else ``tuning``."""
    defaults = {"tuned_oversample": tuning.oversample,
                "tuned_ef_search": tuning.ef_search, "tuned_k": tuning.k}
    if config is None:
        return sql.SQL("SELECT {}").format(sql.SQL(", ").join(
            sql.SQL("{} AS {}").format(sql.Literal(v), sql.Identifier(n))
            for n, v in defaults.items()))
    columns = {"tuned_oversample": "oversample", "tuned_ef_search": "ef_search", "tuned_k": "k"}
    return sql.SQL(
        "SELECT {} FROM (VALUES (1)) AS one(x) LEFT JOIN {} AS r ON r.table_name = {}"
    ).format(
        sql.SQL(", ").join(
            sql.SQL("coalesce(r.{}, {}) AS {}").format(
                sql.Identifier(columns[n]), sql.Literal(v), sql.Identifier(n))
            for n, v in defaults.items()),
        tuning_table(config), sql.Literal(config.name))


def adaptive_settings_sql(
    config: TableConfig, *, read_tuning: bool = True, tuning: SearchTuning = DEFAULT_TUNING,
    extra: Sequence[tuple[str, Value]] = (),
) -> sql.Composed:
    """The adaptive search's settings statement, tuning read in the database.

    Parameters: ``k``, and ``oversample``, ``ef_search``, ``max_scan_tuples``
    (each NULL for the rule's value). With ``read_tuning`` the table's
    ``mrl_pg_tuning`` row applies (``tuning`` when it has none); without, ``tuning``
    does and no other table is read. The pool it chooses is :data:`POOL_SETTING`, which the
    statement reads as :data:`POOL_SQL`; the values are those
    :func:`scan_settings` computes in Python for the same tuning.
    """
    pool = sql.SQL("chosen.pool")
    scan_tuples = sql.SQL("coalesce(%(max_scan_tuples)s::integer, {})").format(
        MAX_SCAN_TUPLES_RULE.sql(pool))
    chosen = sql.SQL(
        "SELECT least({max_pool}, %(k)s::bigint "
        "* coalesce(%(oversample)s::integer, t.tuned_oversample))::integer AS pool, t.* "
        "FROM ({tuning}) AS t"
    ).format(max_pool=sql.Literal(MAX_POOL),
             tuning=_tuning_row(config if read_tuning else None, tuning))
    ef_search = sql.SQL("coalesce(%(ef_search)s::integer, {})").format(ef_search_sql(
        pool, oversample=sql.SQL("chosen.tuned_oversample"),
        ef_search=sql.SQL("chosen.tuned_ef_search"), k=sql.SQL("chosen.tuned_k")))
    return settings_sql([
        (POOL_SETTING, pool),
        ("hnsw.ef_search", ef_search),
        ("hnsw.iterative_scan", "relaxed_order"),
        ("hnsw.max_scan_tuples", scan_tuples),
        ("hnsw.scan_mem_multiplier", SCAN_MEMORY_RULE.sql(scan_tuples)),
        *planner_settings(config),
        *extra,
    ], chosen=chosen)


def planner_settings(config: TableConfig) -> list[tuple[str, Value]]:
    """How an adaptive search is planned: custom plans only, no sequential scan for the
    candidates unless nothing else can run them, and, on an adopted table, no bitmap scan.

    The planner does not cost reading each row's vector from TOAST, which is what
    ordering rows by the prefix *expression* of an adopted table does: on 30,000 x
    1536 rows a 20% filter at a pool of 160 was planned as a bitmap scan and a sort
    over 6,000 rows (275 ms) instead of the HNSW walk (30 ms). Without bitmap scans,
    a filter matching few rows still takes a plain index scan on its own B-tree (the
    exact path, cheap when it is right); other filters walk the HNSW index. A stored
    prefix column (mrl_pg's own table) costs what the planner thinks, so bitmap scans
    stay as they are there: a rare metadata value is read through the GIN index. A
    walk that comes back short is replaced by the exact scan (:func:`adaptive_search_sql`).

    No parallel workers: the planner gave that exact scan a Gather Merge, and PostgreSQL
    starts its two workers even when the scan's one-time filter keeps it from running,
    which cost 8 of a search's 10 ms on 100,000 x 1536 rows.
    """
    bitmap: Value = "off" if config.prefix_column is None else sql.SQL(
        "current_setting('enable_bitmapscan')")
    return [
        ("plan_cache_mode", "force_custom_plan"),
        ("enable_seqscan", "off"),
        ("enable_bitmapscan", bitmap),
        ("max_parallel_workers_per_gather", "0"),
    ]


ADAPTIVE_SETTING_NAMES = (POOL_SETTING, "hnsw.ef_search", "hnsw.iterative_scan",
                          "hnsw.max_scan_tuples", "hnsw.scan_mem_multiplier",
                          "plan_cache_mode", "enable_seqscan", "enable_bitmapscan",
                          "max_parallel_workers_per_gather")
"""What :func:`adaptive_settings_sql` sets, in its order."""


def search_parameters(params: SearchParams) -> dict[str, Any]:
    """Named parameter values for the psycopg front end; the caller adds the query vector."""
    return {"k": params.k, "offset": params.offset, "filter": params.filter_json}


def settings_parameters(
    params: SearchParams, *, oversample: int | None, ef_search: int | None,
) -> dict[str, Any]:
    """Parameters of :func:`adaptive_settings_sql`: what the caller fixed, NULL for the rest.

    Its ``k`` sizes the pool, so it is the end of the page: ``offset + k``. The values are
    the checked ones (numpy integers become ints)."""
    return {"k": params.offset + params.k,
            "oversample": None if oversample is None else params.oversample,
            "ef_search": None if ef_search is None else params.ef_search,
            "max_scan_tuples": params.max_scan_tuples}
