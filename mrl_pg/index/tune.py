"""``mrl-pg tune``: measure adaptive search on a table's own rows, keep the cheapest setting
that reaches a target recall.

Queries are rows of the table (a seeded sample), or vectors the caller brings.
Ground truth is :func:`~mrl_pg.psycopg.exact_search` on the same server, so a
filter applies to both sides alike. A sampled row is its own nearest neighbour,
which would flatter every setting, so its own id is left out of both the truth
and the results (recall over its k - 1 other neighbours; its pool keeps the
slot it takes). Even so the figure runs high against new queries: a stored
row is a node of the graph, linked to its neighbours when it was inserted, so
the walk reaches them more easily (BENCHMARKS.md measured 0.993 on rows for a
setting that gave 0.976 on held-out queries); real query vectors avoid that
bias, a margin on the target absorbs it. Each setting of the grid
(oversample x ef_search) is timed in interleaved rounds; its plan must walk
the prefix index, and its shared buffers come from ``EXPLAIN (ANALYZE,
BUFFERS)``. The fastest setting whose recall meets the target on every
workload (unfiltered, and filtered when a filter is given) is saved to
``mrl_pg_tuning``, which every front end then reads (:mod:`mrl_pg.statement.tuning`).
Nothing here prints; progress goes to a callback.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from mrl_pg.config import TableConfig
from mrl_pg.errors import DatabaseError, InvalidSearchError
from mrl_pg.index.saved_tuning import TuningRecord, save_tuning
from mrl_pg.psycopg._search import exact_search, explain, search
from mrl_pg.statement.filters import compile_where
from mrl_pg.statement.plans import plan_nodes, uses_index
from mrl_pg.statement.query import SearchParams
from mrl_pg.statement.tuning import EF_SEARCH_FLOOR, MAX_EF_SEARCH, SearchTuning, load_tuning
from mrl_pg.vectors import as_embedding

__all__ = [
    "TuneOptions",
    "SettingResult",
    "TuneReport",
    "tune",
    "default_grid",
    "STORED_ROWS",
]

STORED_ROWS = "rows of the table"
"""``TuneReport.query_source`` when the queries were rows the table stores."""

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TuneOptions:
    """What to measure. ``ef_search`` None: for each oversample, ef_search 40 (a pool
    beyond it is filled by the iterative scan) and 1, 2 and 4 times the pool (at most 1000)."""

    k: int = 10
    target_recall: float = 0.99
    queries: int = 200
    oversample: Sequence[int] = (2, 3, 4, 6, 8, 12, 16, 24)
    ef_search: Sequence[int] | None = None
    filter: Mapping[str, Any] | None = None
    where: Mapping[str, Any] | None = None
    rounds: int = 2
    buffer_sample: int = 10
    seed: int = 0
    dry_run: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.target_recall <= 1:
            raise InvalidSearchError(
                f"target recall must be in (0, 1], got {self.target_recall}")
        if self.queries < 1:
            raise InvalidSearchError(f"queries must be at least 1, got {self.queries}")
        if self.rounds < 1:
            raise InvalidSearchError(f"rounds must be at least 1, got {self.rounds}")
        if not self.oversample:
            raise InvalidSearchError("give at least one oversample value")
        for grid in default_grid(self):  # every setting is valid before anything runs
            SearchParams(k=self.k, oversample=grid.oversample, ef_search=grid.ef_search,
                         filter=self.filter)


def default_grid(options: TuneOptions) -> list[SearchTuning]:
    """The settings to measure, cheapest first."""
    grid: set[tuple[int, int]] = set()
    for oversample in options.oversample:
        pool = options.k * oversample
        efs = options.ef_search or [EF_SEARCH_FLOOR] + [
            max(EF_SEARCH_FLOOR, min(MAX_EF_SEARCH, f * pool)) for f in (1, 2, 4)]
        grid.update((oversample, ef) for ef in efs)
    return [SearchTuning(oversample=o, ef_search=ef, k=options.k) for o, ef in sorted(grid)]


@dataclass
class SettingResult:
    """One setting's figures; ``recall`` per workload ("all", and "filtered" with a filter)."""

    tuning: SearchTuning
    recall: dict[str, float] = field(default_factory=dict)
    qps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    buffers_per_query: float = 0.0
    uses_index: bool = True
    plan: str = ""
    meets_target: bool = False

    @property
    def min_recall(self) -> float:
        return min(self.recall.values()) if self.recall else 0.0


@dataclass
class TuneReport:
    """Every setting measured, the recommendation and whether it was saved."""

    config: TableConfig
    options: TuneOptions
    results: list[SettingResult]
    recommended: SettingResult | None
    saved: bool
    previous: SearchTuning
    table_rows: int
    queries: int
    query_source: str
    truth_seconds: float
    seconds: float


Key = tuple[Any, ...]  # a row's key values (the primary key, or the adopted table's key)


@dataclass
class _Workload:
    name: str
    filter: Mapping[str, Any] | None
    where: Mapping[str, Any] | None
    truth: list[list[Key]]


def _key(config: TableConfig, result: Any) -> Key:
    return tuple(result.row[c] for c in config.key)


def _sample_rows(
    conn: psycopg.Connection[Any], config: TableConfig, count: int, seed: int, table_rows: int
) -> tuple[list[Key], npt.NDArray[np.float32]]:
    if table_rows < 2:
        raise InvalidSearchError(
            f"{config.qualified_name} has {table_rows} rows; tune needs at least 2")
    # A seeded Bernoulli sample of about three times the rows wanted (never the whole
    # table's vectors), then a seeded choice among them.
    percent = min(100.0, 300.0 * count / table_rows)
    key = sql.SQL(", ").join(map(sql.Identifier, config.key))
    rows = conn.execute(
        sql.SQL("SELECT {key}, {embedding} FROM {table} TABLESAMPLE BERNOULLI ({percent}) "
                "REPEATABLE ({seed}) WHERE {embedding} IS NOT NULL ORDER BY {key}").format(
            key=key, embedding=sql.Identifier(config.embedding_column), table=config.table,
            percent=sql.Literal(percent), seed=sql.Literal(seed)),
    ).fetchall()
    if len(rows) < 2:
        raise InvalidSearchError(
            f"{config.qualified_name}: the sample of rows came back with {len(rows)}; "
            "tune needs at least 2 (pass --queries-file)")
    chosen = sorted(np.random.default_rng(seed).choice(len(rows), min(count, len(rows)),
                                                       replace=False))
    width = len(config.key)
    picked = [rows[i] for i in chosen]
    vectors = np.stack([np.asarray(r[width].to_numpy(), dtype=np.float32) for r in picked])
    return [tuple(r[:width]) for r in picked], vectors


def _recall(found: Sequence[Key], truth: Sequence[Key], own: Key | None) -> float:
    expected = [i for i in truth if i != own]
    if not expected:
        return 1.0
    got = {i for i in found if i != own}
    return len(got & set(expected)) / len(expected)


def _measure_pass(
    conn: psycopg.Connection[Any], config: TableConfig, setting: SearchTuning,
    queries: npt.NDArray[np.float32], own: Sequence[Key | None], workload: _Workload,
) -> tuple[list[float], list[float]]:
    latencies, recalls = [], []
    for i, query in enumerate(queries):
        started = time.perf_counter()
        found = search(conn, config, query, k=setting.k, oversample=setting.oversample,
                       ef_search=setting.ef_search, filter=workload.filter,
                       where=workload.where)
        latencies.append(time.perf_counter() - started)
        recalls.append(_recall([_key(config, r) for r in found], workload.truth[i], own[i]))
    return latencies, recalls


def _plan_check(
    conn: psycopg.Connection[Any], config: TableConfig, setting: SearchTuning,
    queries: npt.NDArray[np.float32], workload: _Workload, sample: int,
) -> tuple[bool, str, float]:
    """(walks the prefix index, plan summary, shared buffers per query)."""
    buffers = []
    walks_index, summary = True, ""
    for query in queries[:max(1, sample)]:
        plan = explain(conn, config, query, k=setting.k, oversample=setting.oversample,
                       ef_search=setting.ef_search, filter=workload.filter,
                       where=workload.where, analyze=True, as_json=True)
        top = plan[0]["Plan"]
        buffers.append(float(top.get("Shared Hit Blocks", 0)) +
                       float(top.get("Shared Read Blocks", 0)))
        if not uses_index(plan, config.hnsw_index_name):
            walks_index = False
            summary = " > ".join(plan_nodes(plan))
    return walks_index, summary, float(np.mean(buffers))


def tune(
    conn: psycopg.Connection[Any],
    config: TableConfig,
    options: TuneOptions | None = None,
    *,
    queries: npt.NDArray[np.float32] | None = None,
    on_progress: Progress | None = None,
) -> TuneReport:
    """Measure every setting of the grid on ``config``'s table and save the cheapest one
    meeting ``options.target_recall`` (unless ``options.dry_run``).

    ``conn`` should be in autocommit mode: each search runs in its own transaction.
    """
    options = options or TuneOptions()
    progress = on_progress or (lambda _label, _done, _total: None)
    started = time.perf_counter()
    grid = default_grid(options)
    compile_where(config, options.where)  # a bad column filter fails before any work
    previous = load_tuning(conn, config)
    table_rows = _count(conn, config)
    own: list[Key | None]
    if queries is None:
        keys, vectors = _sample_rows(conn, config, options.queries, options.seed, table_rows)
        own, source = list(keys), STORED_ROWS
    else:
        vectors = np.stack([
            as_embedding(q, config.full_dim, prefix_dim=config.prefix_dim,
                         what=f"query {i}") for i, q in enumerate(queries[:options.queries])
        ])
        own, source = [None] * len(vectors), "queries given"

    workloads = [_Workload("all", None, None, [])]
    if options.filter or options.where:
        workloads.append(_Workload("filtered", options.filter, options.where, []))
    truth_started = time.perf_counter()
    total = len(vectors) * len(workloads)
    for n, (w, query) in enumerate((w, q) for w in workloads for q in vectors):
        progress("exact search (ground truth)", n, total)
        w.truth.append([_key(config, r) for r in exact_search(
            conn, config, query, k=options.k, filter=w.filter, where=w.where)])
    truth_seconds = time.perf_counter() - truth_started

    results = {s: SettingResult(tuning=s) for s in grid}
    latencies: dict[SearchTuning, list[float]] = {s: [] for s in grid}
    checked = 0
    for setting in grid:
        progress("checking plans and buffers", checked, len(grid))
        result = results[setting]
        for w in workloads:
            uses, summary, buffers = _plan_check(conn, config, setting, vectors, w,
                                                 options.buffer_sample)
            result.uses_index = result.uses_index and uses
            result.plan = result.plan or summary
            result.buffers_per_query += buffers / len(workloads)
        checked += 1
    shuffler = random.Random(options.seed)
    for r in range(options.rounds):
        order = list(grid)
        shuffler.shuffle(order)
        for done, setting in enumerate(order):
            progress(f"round {r + 1}/{options.rounds}", done, len(order))
            for w in workloads:
                times, recalls = _measure_pass(conn, config, setting, vectors, own, w)
                latencies[setting].extend(times)
                if r == 0:  # recall does not change between rounds
                    results[setting].recall[w.name] = float(np.mean(recalls))
    for setting, result in results.items():
        seconds = np.asarray(latencies[setting])
        result.qps = float(1.0 / seconds.mean())
        result.p50_ms = float(np.percentile(seconds * 1000, 50))
        result.p99_ms = float(np.percentile(seconds * 1000, 99))
        result.meets_target = result.uses_index and result.min_recall >= options.target_recall

    ordered = [results[s] for s in grid]
    passing = [r for r in ordered if r.meets_target]
    recommended = max(passing, key=lambda r: r.qps) if passing else None
    saved = False
    if recommended is not None and not options.dry_run:
        save_tuning(conn, config, TuningRecord(
            tuning=recommended.tuning, target_recall=options.target_recall,
            measured_recall=recommended.min_recall, measured_qps=recommended.qps,
            queries=len(vectors), table_rows=table_rows,
        ))
        saved = True
    return TuneReport(
        config=config, options=options, results=ordered, recommended=recommended, saved=saved,
        previous=previous, table_rows=table_rows, queries=len(vectors), query_source=source,
        truth_seconds=truth_seconds, seconds=time.perf_counter() - started,
    )


def _count(conn: psycopg.Connection[Any], config: TableConfig) -> int:
    try:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(config.table)).fetchone()
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot tune {config.qualified_name}: {exc}") from exc
    return int(row[0]) if row else 0
