"""The search methods ``mrl-pg bench`` compares, each a named configuration, and their plan guard.

The exact and adaptive methods are mrl_pg's own :func:`~mrl_pg.exact_search`
and :func:`~mrl_pg.search`, the product as users run it, through its public
API. Single-pass and prefix-only HNSW run as a plain pgvector user runs them:
``SET hnsw.ef_search`` once per connection (:func:`prepare_connection`, when the
connection switches to the method), then one SELECT per query, in autocommit,
never prepared: one round trip. The Supabase recipe runs the way
:func:`~mrl_pg.search` runs its own statement.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from psycopg import sql

from mrl_pg.config import TableConfig
from mrl_pg.errors import DatabaseError
from mrl_pg.psycopg._search import (
    SearchStatement,
    adaptive_search_statement,
    exact_search,
    explain,
    explain_statement,
    run_statement,
    search,
)
from mrl_pg.statement.plans import plan_nodes, plan_tree, uses_index
from mrl_pg.statement.prefix import prefix_expression
from mrl_pg.statement.query import settings_sql
from mrl_pg.statement.stages import PREFIX_HNSW, FirstStage
from mrl_pg.statement.tuning import DEFAULT_TUNING, SearchTuning
from mrl_pg.vectors import FloatArray, as_embedding

__all__ = [
    "EXACT",
    "SINGLE_PASS",
    "PREFIX_ONLY",
    "SUPABASE",
    "ADAPTIVE",
    "FAMILIES",
    "PGVECTOR_DEFAULT_EF_SEARCH",
    "PlanGuardError",
    "BenchTable",
    "Method",
    "default_methods",
    "tuned_method",
    "stage_methods",
    "run_method",
    "explain_method",
    "check_plan",
    "prepare_connection",
    "session_settings",
    "plan_nodes",
    "plan_tree",
]

EXACT = "exact"
SINGLE_PASS = "single-pass"
PREFIX_ONLY = "prefix-only"
SUPABASE = "supabase"
ADAPTIVE = "adaptive"
FAMILIES = (EXACT, SINGLE_PASS, SUPABASE, PREFIX_ONLY, ADAPTIVE)

PGVECTOR_DEFAULT_EF_SEARCH = 40
# pgvector indexes vector up to 2,000 dimensions; above that only halfvec (up to 4,000).
MAX_VECTOR_INDEX_DIM = 2000

_CUSTOM_PLANS = ("plan_cache_mode", "force_custom_plan")


class PlanGuardError(DatabaseError):
    """A method's plan does not use the index it is meant to measure (its timing would lie).

    ``method`` is the method's name, ``nodes`` the plan it got.
    """

    def __init__(self, message: str, *, method: str, nodes: list[str]) -> None:
        super().__init__(message)
        self.method = method
        self.nodes = nodes


@dataclass(frozen=True)
class BenchTable:
    """The benchmark's table: an MRL table plus a single-pass HNSW index on the full embedding.

    ``full_halfvec``: the full index is on ``embedding::halfvec(N)`` (needed above
    2,000 dimensions), and single-pass queries use the same cast.
    """

    config: TableConfig
    full_halfvec: bool
    full_ef_construction: int | None = None
    """The full index's build list; None: the prefix index's (``config.hnsw_ef_construction``),
    so both graphs get the same build effort."""
    full_m: int | None = None
    """The full index's m; None: the prefix index's (``config.hnsw_m``)."""

    @property
    def full_index_name(self) -> str:
        return f"{self.config.name}_embedding_full_hnsw"

    @property
    def full_build(self) -> tuple[int, int]:
        """``(m, ef_construction)`` of the single-pass index."""
        return (self.config.hnsw_m if self.full_m is None else self.full_m,
                self.config.hnsw_ef_construction if self.full_ef_construction is None
                else self.full_ef_construction)

    def full_index_ddl(self) -> sql.Composed:
        """The single-pass index: cosine, with :attr:`full_build`'s m and ef_construction."""
        m, ef_construction = self.full_build
        return sql.SQL(
            "CREATE INDEX {name} ON {table} USING hnsw ({expr} {ops}) "
            "WITH (m = {m}, ef_construction = {ef})"
        ).format(
            name=sql.Identifier(self.full_index_name),
            table=self.config.table,
            expr=self._full_expression(),
            ops=sql.SQL("halfvec_cosine_ops" if self.full_halfvec else "vector_cosine_ops"),
            m=sql.Literal(m),
            ef=sql.Literal(ef_construction),
        )

    def _full_expression(self) -> sql.Composed:
        embedding = sql.Identifier(self.config.embedding_column)
        if self.full_halfvec:
            return sql.SQL("({}::halfvec({}))").format(
                embedding, sql.Literal(self.config.full_dim)
            )
        return sql.SQL("{}").format(embedding)

    def full_distance(self, query: sql.Composable) -> sql.Composed:
        """``embedding <=> query`` exactly as the full index is defined, so the planner uses it."""
        cast = (sql.SQL("halfvec({})").format(sql.Literal(self.config.full_dim))
                if self.full_halfvec else sql.SQL("vector"))
        return sql.SQL("{} <=> {}::{}").format(self._full_expression(), query, cast)


@dataclass(frozen=True)
class Method:
    """One configuration to measure. ``index`` is the index its plan must use (None: exact).

    ``ef_search`` None means the method does not set it (the Supabase recipe)
    or, for adaptive search, that mrl_pg's rule picks it (the product default).
    """

    name: str
    family: str
    index: str | None
    ef_search: int | None = None
    oversample: int | None = None
    product_default: bool = False
    force_index: bool = False
    stage: FirstStage = PREFIX_HNSW
    """Adaptive search's first stage (:mod:`mrl_pg.statement.stages`); ``index`` is its index."""
    tuned: bool = False
    """Runs as :func:`~mrl_pg.search` with no oversample or ef_search: what ``mrl-pg tune``
    saved for the table (``oversample``/``ef_search`` record it for the report)."""

    def forced(self) -> Method:
        """This method with ``enable_seqscan = off``: what a user does when the planner
        drops the index for a sequential scan (seen on a 3072-d index at high ef_search)."""
        return replace(self, name=f"{self.name} (seqscan off)", force_index=True)

    def settings(self, k: int) -> dict[str, int | None]:
        """What the method runs with, for the report (``ef_search`` as the server will see it)."""
        if self.family == ADAPTIVE:
            pool = k * (self.oversample or 1)
            return {"oversample": self.oversample, "pool": pool,
                    "ef_search": self._adaptive_ef_search(k)}
        if self.family == SUPABASE:
            return {"pool": k * 8, "ef_search": None}  # the server's, 40 unless changed
        if self.family == PREFIX_ONLY:
            return {"pool": self.pool(k), "ef_search": self.ef_search}
        if self.force_index:
            return {"ef_search": self.ef_search, "enable_seqscan": 0}
        return {"ef_search": self.ef_search}

    def pool(self, k: int) -> int:
        """Rows the method's index scan is asked for (prefix-only: ``LIMIT k x oversample``)."""
        return k * (self.oversample or 1)

    def _adaptive_ef_search(self, k: int) -> int:
        if self.ef_search is not None:
            return self.ef_search
        return DEFAULT_TUNING.ef_search_for(k * (self.oversample or DEFAULT_TUNING.oversample))


def tuned_method(table: BenchTable, tuning: SearchTuning) -> Method:
    """Adaptive search as a user runs it once ``mrl-pg tune`` saved ``tuning`` for the table."""
    return Method(f"{ADAPTIVE} tuned ({tuning.oversample}x, ef={tuning.ef_search})", ADAPTIVE,
                  table.config.hnsw_index_name, ef_search=tuning.ef_search,
                  oversample=tuning.oversample, tuned=True)


def stage_methods(
    table: BenchTable, stage: FirstStage, *, oversample: Sequence[int],
    ef_search: Sequence[int],
) -> list[Method]:
    """Adaptive search through another first stage, over the same oversample x ef_search grid."""
    return [Method(f"{ADAPTIVE} {stage.name} {o}x ef={ef}", ADAPTIVE,
                   stage.index_name(table.config), ef_search=ef, oversample=o, stage=stage)
            for o in oversample for ef in ef_search]


def default_methods(
    table: BenchTable,
    *,
    ef_search: Sequence[int] = (40, 60, 80, 100, 120, 160, 200, 300, 400, 600, 800),
    prefix_ef_search: Sequence[int] = (40, 60, 80, 120, 160, 200),
    oversample: Sequence[int] = (1, 2, 3, 4, 6, 8),
    adaptive_ef_search: Sequence[int] = (40, 60, 80, 120, 160, 200),
    k: int = 10,
) -> list[Method]:
    """Exact, single-pass HNSW over an ef_search sweep, the Supabase recipe, prefix-only over
    a sweep, adaptive over oversample x ef_search, and adaptive as shipped (no overrides).

    Prefix-only also runs at every pool and ef_search of the adaptive grid (its
    ``LIMIT`` the adaptive pool): the walk adaptive search re-ranks, alone, for the
    "adaptive costs little more than its first stage" check. A grid point equal to
    the product default is left out: the default measures it.
    """
    prefix = table.config.hnsw_index_name
    methods = [Method(EXACT, EXACT, None)]
    methods += [Method(f"{SINGLE_PASS} ef={ef}", SINGLE_PASS, table.full_index_name, ef_search=ef)
                for ef in ef_search]
    methods.append(Method(f"{SUPABASE} recipe", SUPABASE, prefix))
    methods += [Method(f"{PREFIX_ONLY} ef={ef}", PREFIX_ONLY, prefix, ef_search=ef)
                for ef in sorted(set(prefix_ef_search) | set(adaptive_ef_search))]
    methods += [Method(f"{PREFIX_ONLY} pool={k * o} ef={ef}", PREFIX_ONLY, prefix, ef_search=ef,
                       oversample=o)
                for o in oversample if o > 1 for ef in adaptive_ef_search]
    default_oversample = DEFAULT_TUNING.oversample
    default_ef = DEFAULT_TUNING.ef_search_for(k * default_oversample)
    methods += [
        Method(f"{ADAPTIVE} {o}x ef={ef}", ADAPTIVE, prefix, ef_search=ef, oversample=o)
        for o in oversample for ef in adaptive_ef_search
        if (o, ef) != (default_oversample, default_ef)
    ]
    methods.append(Method(f"{ADAPTIVE} default ({default_oversample}x, ef={default_ef})",
                          ADAPTIVE, prefix, oversample=default_oversample, product_default=True))
    return methods


def session_settings(method: Method) -> tuple[tuple[str, str], ...]:
    """What a plain pgvector user sets once per connection before querying with ``method``
    (single-pass and prefix-only); nothing for methods that set their own or none."""
    if method.family == SINGLE_PASS:
        settings = [("hnsw.ef_search", str(method.ef_search))]
        if method.force_index:
            settings.append(("enable_seqscan", "off"))
        return tuple(settings)
    if method.family == PREFIX_ONLY:
        # As adaptive search's own scan: a pool above ef_search is still filled.
        return (("hnsw.ef_search", str(method.ef_search)),
                ("hnsw.iterative_scan", "relaxed_order"))
    return ()


_SESSION: weakref.WeakKeyDictionary[psycopg.Connection[Any], tuple[tuple[str, str], ...]] = (
    weakref.WeakKeyDictionary())
_SESSION_NAMES = ("hnsw.ef_search", "hnsw.iterative_scan", "enable_seqscan")


def prepare_connection(conn: psycopg.Connection[Any], method: Method) -> None:
    """Give ``conn`` the session settings ``method`` runs with, as a user's ``SET`` would
    (nothing when it already has them): the server's defaults for every other method.

    Run before a timed pass, so the pass measures one SELECT per query.
    """
    wanted = session_settings(method)
    if _SESSION.get(conn, ()) == wanted:
        return
    values = dict(wanted)
    for name in _SESSION_NAMES:
        if name in values:
            conn.execute("SELECT set_config(%s, %s, false)", (name, values[name]),
                         prepare=False)
        else:
            conn.execute(sql.SQL("RESET {}").format(sql.SQL(name)), prepare=False)
    _SESSION[conn] = wanted


def _stage_statement(table: BenchTable, method: Method, query: Any, k: int) -> SearchStatement:
    return adaptive_search_statement(
        table.config, query, k=k, oversample=method.oversample or DEFAULT_TUNING.oversample,
        ef_search=method._adaptive_ef_search(k), stage=method.stage)


def _statement(table: BenchTable, method: Method, query: FloatArray, k: int) -> SearchStatement:
    """The method's statement; its settings are applied per transaction only by EXPLAIN
    (:func:`run_method` runs single-pass and prefix-only as a plain user does)."""
    config = table.config
    q = sql.Placeholder("query")
    result = sql.SQL("id, external_id, content, metadata")
    params: dict[str, Any] = {"query": query, "k": method.pool(k)}
    if method.family == SINGLE_PASS:
        statement = sql.SQL(
            "SELECT {result}, {distance} AS distance\nFROM {table}\nORDER BY {distance}\n"
            "LIMIT {k}"
        ).format(result=result, distance=table.full_distance(q), table=config.table,
                 k=sql.Placeholder("k"))
        settings = [*session_settings(method), _CUSTOM_PLANS]
    elif method.family == PREFIX_ONLY:
        distance = sql.SQL("{} <=> {}").format(
            sql.Identifier(config.stored_prefix_column),
            prefix_expression(sql.SQL("{}::vector").format(q), config.prefix_dim),
        )
        statement = sql.SQL(
            "SELECT {result}, {distance} AS distance\nFROM {table}\nORDER BY {distance}\n"
            "LIMIT {k}"
        ).format(result=result, distance=distance, table=config.table, k=sql.Placeholder("k"))
        settings = [*session_settings(method), _CUSTOM_PLANS]
    elif method.family == SUPABASE:
        statement = _supabase_statement(config)
        params = {"query": query, "match_count": k}
        settings = [_CUSTOM_PLANS]  # the recipe leaves hnsw.ef_search alone
    else:
        raise ValueError(f"{method.name} runs through mrl_pg itself, not a statement of its own")
    return SearchStatement(settings=settings_sql(settings), statement=statement, params=params,
                           setting_names=tuple(name for name, _ in settings))


def _supabase_statement(config: TableConfig) -> sql.Composed:
    # Supabase's adaptive-retrieval recipe, match_documents_adaptive() from the blog post
    # "Matryoshka embeddings: faster OpenAI vector search using Adaptive Retrieval"
    # (supabase.com/blog/matryoshka-embeddings, 2024-02-13): a shortlist of
    # match_count * 8 rows by the prefix, the query prefix in a (SELECT ...) so it is
    # computed once, re-ranked by the full embedding, LIMIT least(match_count, 200).
    # As published it never raises hnsw.ef_search, so an HNSW scan returns at most
    # 40 rows (pgvector's default) and the shortlist silently shrinks to 40.
    # Against this table: the stored prefix column stands for its sub_vector(...)
    # expression (both are the re-normalized prefix), and <=> for <#>, since the
    # index is halfvec_cosine_ops (for unit vectors both order rows alike). Every
    # method returns the same five columns, so the final projection names them
    # where the function returns whole rows.
    return sql.SQL(
        """WITH shortlist AS (
    SELECT *
    FROM {table}
    ORDER BY {prefix} <=> (SELECT {query_prefix})
    LIMIT {match_count} * 8
)
SELECT id, external_id, content, metadata, {embedding} <=> {query}::vector AS distance
FROM shortlist
ORDER BY {embedding} <=> {query}::vector
LIMIT least({match_count}, 200)"""
    ).format(
        table=config.table,
        prefix=sql.Identifier(config.stored_prefix_column),
        query_prefix=prefix_expression(
            sql.SQL("{}::vector").format(sql.Placeholder("query")), config.prefix_dim
        ),
        match_count=sql.Placeholder("match_count"),
        embedding=sql.Identifier(config.embedding_column),
        query=sql.Placeholder("query"),
    )


def run_method(
    conn: psycopg.Connection[Any], table: BenchTable, method: Method, query: Any, k: int
) -> list[str]:
    """Run one query; the external ids found, best first.

    The connection first gets the method's session settings, when it has other ones
    (:func:`prepare_connection`): the server's defaults for every method but single-pass
    and prefix-only.
    """
    config = table.config
    prepare_connection(conn, method)
    if method.family == EXACT:
        return [str(r.external_id) for r in exact_search(conn, config, query, k=k)]
    if method.family == ADAPTIVE and method.tuned:
        return [str(r.external_id) for r in search(conn, config, query, k=k)]
    if method.family == ADAPTIVE and method.stage != PREFIX_HNSW:
        rows = run_statement(conn, _stage_statement(table, method, query, k))
        return [str(row[1]) for row in rows]
    if method.family == ADAPTIVE:
        found = search(conn, config, query, k=k,
                       oversample=method.oversample or DEFAULT_TUNING.oversample,
                       ef_search=method._adaptive_ef_search(k))
        return [str(r.external_id) for r in found]
    vector = as_embedding(query, config.full_dim, prefix_dim=config.prefix_dim,
                          what="query embedding")
    statement = _statement(table, method, vector, k)
    if method.family == SUPABASE:
        return [str(row[1]) for row in run_statement(conn, statement)]
    # A plain pgvector user: settings once per connection, then one SELECT, one round trip.
    try:
        rows = conn.execute(statement.statement, statement.params, prepare=False).fetchall()
    except psycopg.Error as exc:
        raise DatabaseError(f"{method.name} failed: {exc}") from exc
    return [str(row[1]) for row in rows[:k]]


def explain_method(
    conn: psycopg.Connection[Any], table: BenchTable, method: Method, query: Any, k: int,
    *, analyze: bool = False,
) -> Any:
    """The method's ``EXPLAIN (FORMAT JSON)`` plan under its own settings (parsed), on a
    connection with the method's session settings (:func:`prepare_connection`)."""
    config = table.config
    prepare_connection(conn, method)
    if method.family == ADAPTIVE and method.tuned:
        return explain(conn, config, query, k=k, analyze=analyze, as_json=True)
    if method.family == ADAPTIVE and method.stage != PREFIX_HNSW:
        return explain_statement(conn, _stage_statement(table, method, query, k),
                                 analyze=analyze, as_json=True)
    if method.family in (EXACT, ADAPTIVE):
        return explain(conn, config, query, k=k,
                       oversample=method.oversample or DEFAULT_TUNING.oversample,
                       ef_search=method._adaptive_ef_search(k), exact=method.family == EXACT,
                       analyze=analyze, as_json=True)
    vector = as_embedding(query, config.full_dim, prefix_dim=config.prefix_dim,
                          what="query embedding")
    return explain_statement(conn, _statement(table, method, vector, k), analyze=analyze,
                             as_json=True)


def check_plan(table: BenchTable, method: Method, plan: Any) -> list[str]:
    """The plan's nodes, or :class:`PlanGuardError` when it does not read the method's index.

    Exact search must scan the table with no index; every other method must
    walk its HNSW index: the planner may swap an index scan for a sequential
    scan and a sort (seen at high ef_search), and the timing would then
    measure that instead.
    """
    nodes = list(plan_tree(plan))
    described = plan_nodes(plan)
    if method.index is None:
        scans = [n for n in nodes if n.get("Relation Name") == table.config.name]
        ok = bool(scans) and all(n.get("Node Type", "").endswith("Seq Scan") for n in scans)
        expected = f"a sequential scan of {table.config.name} and no index"
    else:
        ok = uses_index(plan, method.index)
        expected = f"an index scan of {method.index}"
    if not ok:
        hint = ("; on a small table the planner prefers a scan at high ef_search: "
                "sweep smaller values" if method.ef_search is not None else "")
        raise PlanGuardError(
            f"{method.name}: the plan does not use {expected}, so its timing would measure "
            f"something else; plan: {' > '.join(described)}{hint}",
            method=method.name, nodes=described,
        )
    return described
