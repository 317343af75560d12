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

from .config import TableConfig
from .errors import InvalidSearchError
from .schema import prefix_expression

__all__ = [
    "SearchParams",
    "RESULT_COLUMNS",
    "MAX_MATCH_COUNT",
    "MAX_EF_SEARCH",
    "adaptive_search_sql",
    "exact_search_sql",
    "scan_settings",
    "EXACT_SETTINGS",
    "settings_sql",
    "ef_search_for",
]

RESULT_COLUMNS = ("id", "external_id", "content", "metadata", "distance")
MAX_MATCH_COUNT = 1000
MAX_EF_SEARCH = 1000  # pgvector's ceiling for hnsw.ef_search
DEFAULT_MAX_SCAN_TUPLES = 20_000  # pgvector's default; bounds a filter that matches nothing
MAX_POOL = 100_000


@dataclass(frozen=True)
class SearchParams:
    """Validated search arguments.

    ``pool`` = ``k * oversample`` candidates are re-ranked. ``filter`` is a JSON
    object matched by containment (``metadata @> filter``); empty means none.
    ``max_scan_tuples`` bounds how many index tuples an iterative scan visits
    while looking for rows that pass a filter.
    """

    k: int = 10
    oversample: int = 8
    filter: Mapping[str, Any] | None = None
    max_scan_tuples: int | None = None

    def __post_init__(self) -> None:
        for name in ("k", "oversample"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidSearchError(f"{name} must be an integer, got {value!r}")
        if not 1 <= self.k <= MAX_MATCH_COUNT:
            raise InvalidSearchError(f"k must be between 1 and {MAX_MATCH_COUNT}, got {self.k}")
        if self.oversample < 1:
            raise InvalidSearchError(f"oversample must be at least 1, got {self.oversample}")
        if self.pool > MAX_POOL:
            raise InvalidSearchError(
                f"k * oversample = {self.pool} candidates is more than {MAX_POOL}"
            )
        if self.filter is not None and not isinstance(self.filter, Mapping):
            raise InvalidSearchError(
                f"filter must be a JSON object (a mapping), got {type(self.filter).__name__}"
            )
        if self.max_scan_tuples is not None and self.max_scan_tuples < 1:
            raise InvalidSearchError(
                f"max_scan_tuples must be positive, got {self.max_scan_tuples}"
            )

    @property
    def pool(self) -> int:
        return self.k * self.oversample

    @property
    def has_filter(self) -> bool:
        return bool(self.filter)

    @property
    def filter_json(self) -> str:
        """The filter as JSON text, sent as a parameter: keys and values are data, never SQL."""
        return json.dumps(dict(self.filter or {}))

    @property
    def ef_search(self) -> int:
        return ef_search_for(self.pool)

    @property
    def scan_tuples(self) -> int:
        """Iterative-scan budget: pgvector's default, raised so an unfiltered pool always fits."""
        if self.max_scan_tuples is not None:
            return self.max_scan_tuples
        return max(DEFAULT_MAX_SCAN_TUPLES, 2 * self.pool)


def ef_search_for(pool: int) -> int:
    """``hnsw.ef_search`` for a candidate pool: twice the pool, within pgvector's 40..1000.

    An HNSW scan returns at most ef_search rows, so it must be at least the
    pool; twice the pool gives the graph walk room to find the true prefix
    neighbours (``mrl-pg demo`` recall@10: 0.978 with 1x the pool, 0.993-0.997 with 2x).
    Above 1000 the iterative scan supplies the rest of the pool.
    """
    return max(40, min(2 * pool, MAX_EF_SEARCH))


def _result_select(config: TableConfig, query: sql.Composable) -> sql.Composed:
    return sql.SQL(
        "id, external_id, content, metadata, {embedding} <=> {query}::vector AS distance"
    ).format(embedding=sql.Identifier(config.embedding_column), query=query)


def adaptive_search_sql(
    config: TableConfig,
    *,
    query: sql.Composable,
    pool: sql.Composable,
    k: sql.Composable,
    filter: sql.Composable | None = None,
) -> sql.Composed:
    """The adaptive statement; ``query``/``pool``/``k``/``filter`` are how values are referenced.

    The candidate ORDER BY is exactly the indexed expression (``prefix <=>
    halfvec``), so the planner can walk the HNSW index. ``MATERIALIZED`` keeps
    the candidate LIMIT from being flattened into the outer query.
    """
    where: sql.Composable = sql.SQL("")
    if filter is not None:
        where = sql.SQL("\n    WHERE metadata @> {}::jsonb").format(filter)
    return sql.SQL(
        """WITH candidates AS MATERIALIZED (
    SELECT id, external_id, content, metadata, {embedding}
    FROM {table}{where}
    ORDER BY {prefix} <=> {query_prefix}
    LIMIT {pool}
)
SELECT {result}
FROM candidates
ORDER BY distance, id
LIMIT {k}"""
    ).format(
        embedding=sql.Identifier(config.embedding_column),
        table=config.table,
        where=where,
        prefix=sql.Identifier(config.prefix_column),
        query_prefix=prefix_expression(sql.SQL("{}::vector").format(query), config.prefix_dim),
        pool=pool,
        result=_result_select(config, query),
        k=k,
    )


def exact_search_sql(
    config: TableConfig,
    *,
    query: sql.Composable,
    k: sql.Composable,
    filter: sql.Composable | None = None,
) -> sql.Composed:
    """Full-dimension cosine over every (filtered) row: ground truth, and fine for small tables.

    Its text differs from the adaptive statement's, so a cached plan of one is
    never reused for the other.
    """
    where: sql.Composable = sql.SQL("")
    if filter is not None:
        where = sql.SQL("\nWHERE metadata @> {}::jsonb").format(filter)
    return sql.SQL(
        """SELECT /* mrl_pg exact */ {result}
FROM {table}{where}
ORDER BY distance, id
LIMIT {k}"""
    ).format(result=_result_select(config, query), table=config.table, where=where, k=k)


def scan_settings(params: SearchParams) -> list[tuple[str, str]]:
    """Transaction-local settings for one adaptive search, as (name, value) pairs.

    ``hnsw.ef_search`` raised to the pool (an HNSW scan returns at most
    ef_search rows otherwise), iterative scans on so a filter or a pool above
    1000 still fills, a bound on how far such a scan may go, and custom plans
    only, so a cached generic plan never replaces the per-call one.
    """
    return [
        ("hnsw.ef_search", str(params.ef_search)),
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
    """One ``SELECT set_config(name, value, true), ...``: every setting in one round trip."""
    return sql.SQL("SELECT {}").format(
        sql.SQL(", ").join(
            sql.SQL("set_config({}, {}, true)").format(sql.Literal(name), sql.Literal(value))
            for name, value in settings
        )
    )


def search_parameters(params: SearchParams) -> dict[str, Any]:
    """Named parameter values for the psycopg front end; the caller adds the query vector."""
    return {"pool": params.pool, "k": params.k, "filter": params.filter_json}
