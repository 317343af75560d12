"""The adaptive search statement, built once for every front end.

One statement: take ``k * oversample`` candidates by prefix distance through
the HNSW index, re-rank them by full-dimension cosine distance, return ``k``.
The psycopg front end binds named placeholders; the SQL function binds
``$1..$4``; both come from :func:`adaptive_search_sql`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
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
    integer_argument,
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
    "RESTORE_SETTINGS_SQL",
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
    """
    key = config.key
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
)
SELECT {returned}, best.distance
FROM best JOIN {table} AS t ON {join}
ORDER BY best.distance, {best_key}"""
    ).format(
        key=_names(key),
        distance=full_distance(config, query),
        table=config.table,
        where=_where(config, filter, where, "\n    "),
        order=stage.order_by(config, query),
        pool=pool,
        k=k,
        offset=_offset(offset),
        returned=_names(config.returned_columns, "t"),
        join=sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(column_name("t", c), column_name("best", c))
            for c in key),
        best_key=_names(key, "best"),
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
    """Transaction-local settings for one adaptive search, as (name, value) pairs.

    ``hnsw.ef_search`` raised to the pool (an HNSW scan returns at most
    ef_search rows otherwise), iterative scans on so a filter or a pool above
    1000 still fills, a bound on how far such a scan may go, and custom plans
    only, so a cached generic plan never replaces the per-call one.
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


def settings_sql(settings: list[tuple[str, str]]) -> sql.Composed:
    """One statement that reads each setting's current value, then sets it for the transaction.

    It returns one row: the values before (None for a setting not defined
    yet), in the order given, then the new ones. A materialized CTE reads them
    before the projection sets them. Inside a caller's transaction the old
    values go back through :data:`RESTORE_SETTINGS_SQL` once the search has
    run, since a transaction-local setting would otherwise outlive it (even
    one made inside a savepoint, which ``RELEASE SAVEPOINT`` keeps).
    """
    names = [sql.Literal(name) for name, _ in settings]
    return sql.SQL(
        "WITH old AS MATERIALIZED (SELECT {old}) SELECT old.*, {new} FROM old"
    ).format(
        old=sql.SQL(", ").join(
            sql.SQL("current_setting({}, true) AS {}").format(name, sql.Identifier(f"old_{i}"))
            for i, name in enumerate(names)
        ),
        new=sql.SQL(", ").join(
            sql.SQL("set_config({}, {}, true)").format(name, sql.Literal(value))
            for name, (_, value) in zip(names, settings, strict=True)
        ),
    )


RESTORE_SETTINGS_SQL = sql.SQL(
    "SELECT set_config(s.name, coalesce(s.old, p.reset_val), true) "
    "FROM unnest({names}::text[], {old}::text[]) AS s(name, old) "
    "JOIN pg_settings AS p ON p.name = s.name"
).format(names=sql.Placeholder("names"), old=sql.Placeholder("old"))
"""Puts back the values :func:`settings_sql` returned (``names``, ``old``: text arrays).

A setting that was not defined before the search (pgvector's library not yet
loaded in this session) goes back to its default.
"""


def search_parameters(params: SearchParams) -> dict[str, Any]:
    """Named parameter values for the psycopg front end; the caller adds the query vector."""
    return {"pool": params.pool, "k": params.k, "offset": params.offset,
            "filter": params.filter_json}
