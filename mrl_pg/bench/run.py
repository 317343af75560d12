"""Timing the methods: interleaved rounds, 1 and more clients, latency, recall, buffers."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from mrl_pg.bench.methods import (
    SINGLE_PASS,
    BenchTable,
    Method,
    PlanGuardError,
    check_plan,
    explain_method,
    plan_tree,
    prepare_connection,
    run_method,
)
from mrl_pg.bench.report import IndexInfo, MethodResult

__all__ = ["Progress", "TrueNeighbours", "Measurement", "measure", "recall_of", "block_counts"]

Progress = Callable[[str, int, int | None], None]
"""``(label, done, total)``: how far a phase has come."""

# A row within this cosine distance of the k-th true neighbour counts as found:
# pgvector and numpy both sum float32 products and may differ in the sixth decimal.
TIE_TOLERANCE = 1e-5


class TrueNeighbours:
    """Each query's true k nearest rows, by numpy brute force (cosine) over every loaded row."""

    def __init__(
        self, vectors: npt.NDArray[np.float32], external_ids: Sequence[str],
        queries: npt.NDArray[np.float32], k: int,
    ) -> None:
        self.k = min(k, len(vectors))
        self._rows = {eid: i for i, eid in enumerate(external_ids)}
        norms = np.linalg.norm(vectors, axis=1).astype(np.float32)
        self._unit_rows = vectors / norms[:, None]
        unit = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
        self._queries = unit
        self.top = np.empty((len(queries), self.k), dtype=np.int64)
        self.kth = np.empty(len(queries))
        for start in range(0, len(queries), 64):  # (rows x 64) similarities at a time
            sims = self._unit_rows @ unit[start:start + 64].T
            part = np.argpartition(-sims, self.k - 1, axis=0)[: self.k]
            for j in range(part.shape[1]):
                order = part[np.argsort(-sims[part[:, j], j], kind="stable"), j]
                self.top[start + j] = order
                self.kth[start + j] = 1.0 - float(sims[order[-1], j])

    def top_ids(self, query: int, external_ids: Sequence[str]) -> list[str]:
        return [external_ids[i] for i in self.top[query]]

    def recall(self, query: int, found: Sequence[str]) -> float:
        """Share of the query's k true nearest rows among ``found`` (ties count as found)."""
        rows = [self._rows[eid] for eid in found if eid in self._rows]
        if not rows:
            return 0.0
        distances = 1.0 - self._unit_rows[rows].astype(np.float64) @ self._queries[query]
        hits = int(np.count_nonzero(distances <= self.kth[query] + TIE_TOLERANCE))
        return min(hits, self.k) / self.k


@dataclass
class _Tally:
    reads: list[int] = field(default_factory=list)
    hits: list[int] = field(default_factory=list)
    recalls: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    qps: dict[int, list[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Measurement:
    """The methods' results and the order each round ran them in."""

    results: list[MethodResult]
    round_orders: list[list[str]]


def block_counts(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    """The database's ``(blks_read, blks_hit)``, this session's own counts flushed first."""
    conn.execute("SELECT pg_stat_force_next_flush()")  # flushed as the session goes idle
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute("SELECT blks_read, blks_hit FROM pg_stat_database "
                       "WHERE datname = current_database()").fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def _single_pass(
    conn: psycopg.Connection[Any], table: BenchTable, method: Method,
    queries: npt.NDArray[np.float32], k: int, truth: TrueNeighbours, tally: _Tally,
    *, count_io: bool = False,
) -> None:
    found = []
    prepare_connection(conn, method)  # a user's SET, once per connection, off the clock
    before = block_counts(conn) if count_io else (0, 0)
    started = time.perf_counter()
    for query in queries:
        t0 = time.perf_counter()
        found.append(run_method(conn, table, method, query, k))
        tally.latencies.append(time.perf_counter() - t0)
    tally.qps.setdefault(1, []).append(len(queries) / (time.perf_counter() - started))
    if count_io:
        after = block_counts(conn)
        tally.reads.append(after[0] - before[0])
        tally.hits.append(after[1] - before[1])
    tally.recalls.extend(truth.recall(i, ids) for i, ids in enumerate(found))  # after the clock


def _clients_pass(
    conns: Sequence[psycopg.Connection[Any]], table: BenchTable, method: Method,
    queries: npt.NDArray[np.float32], k: int,
) -> float:
    """Queries per second with one thread per connection, the queries dealt out between them."""
    n = len(conns)
    barrier = threading.Barrier(n)
    spans: list[tuple[float, float]] = [(0.0, 0.0)] * n

    def work(i: int) -> None:
        prepare_connection(conns[i], method)
        barrier.wait(timeout=60)  # every client starts together
        started = time.perf_counter()
        for query in queries[i::n]:
            run_method(conns[i], table, method, query, k)
        spans[i] = (started, time.perf_counter())

    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="mrl-pg-bench") as pool:
        futures = [pool.submit(work, i) for i in range(n)]
        for future in futures:
            future.result()
    wall = max(end for _, end in spans) - min(begin for begin, _ in spans)
    return len(queries) / wall


def recall_of(
    conn: psycopg.Connection[Any], table: BenchTable, method: Method,
    queries: npt.NDArray[np.float32], k: int, truth: TrueNeighbours,
) -> float:
    """Mean recall@k of one untimed pass."""
    return float(np.mean([truth.recall(i, run_method(conn, table, method, q, k))
                          for i, q in enumerate(queries)]))


def _sample(
    conn: psycopg.Connection[Any], table: BenchTable, method: Method,
    queries: npt.NDArray[np.float32], k: int,
) -> tuple[float, float, float]:
    """Mean shared buffers hit and read per query, and rows the method's index scan returned."""
    hits, reads, index_rows = [], [], []
    for query in queries:
        plan = explain_method(conn, table, method, query, k, analyze=True)
        top = plan[0]["Plan"]  # a node's buffers include its children's and subplans'
        hits.append(float(top.get("Shared Hit Blocks", 0)))
        reads.append(float(top.get("Shared Read Blocks", 0)))
        index_rows.append(sum(
            float(n.get("Actual Rows", 0)) * float(n.get("Actual Loops", 1))
            for n in plan_tree(plan) if method.index and n.get("Index Name") == method.index
        ))
    return float(np.mean(hits)), float(np.mean(reads)), float(np.mean(index_rows))


def _percentile_ms(seconds: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1000, q))


def measure(
    conns: Sequence[psycopg.Connection[Any]],
    table: BenchTable,
    methods: Sequence[Method],
    queries: npt.NDArray[np.float32],
    truth: TrueNeighbours,
    indexes: dict[str, IndexInfo],
    *,
    k: int,
    rounds: int,
    clients: Sequence[int],
    seed: int,
    buffer_sample: int,
    warmup: int = 10,
    count_io: bool = False,
    on_progress: Progress | None = None,
) -> Measurement:
    """Check every method's plan, warm it up, then time it in ``rounds`` interleaved rounds.

    In each round every method runs once over all queries, in an order shuffled
    by ``seed``: first one client (latency, recall, QPS), then each client count
    in ``clients`` above 1 on its own connections. Buffers come last, from
    ``EXPLAIN (ANALYZE, BUFFERS)`` of the first ``buffer_sample`` queries.
    """
    progress = on_progress or (lambda _label, _done, _total: None)
    main = conns[0]
    plans: dict[str, list[str]] = {}
    methods = list(methods)
    for done, method in enumerate(methods):
        progress("checking plans", done, len(methods))
        try:
            plans[method.name] = check_plan(
                table, method, explain_method(main, table, method, queries[0], k))
        except PlanGuardError:
            if method.family != SINGLE_PASS:
                raise
            # The alternative a user has: turn sequential scans off for that query.
            method = methods[done] = method.forced()
            plans[method.name] = check_plan(
                table, method, explain_method(main, table, method, queries[0], k))
        for query in queries[:warmup]:
            run_method(main, table, method, query, k)
    progress("checking plans", len(methods), len(methods))

    tallies = {m.name: _Tally() for m in methods}
    shuffler = random.Random(seed)
    orders: list[list[str]] = []
    for r in range(rounds):
        order = list(methods)
        shuffler.shuffle(order)
        orders.append([m.name for m in order])
        label = f"round {r + 1}/{rounds}"
        for done, method in enumerate(order):
            progress(label, done, len(order))
            tally = tallies[method.name]
            _single_pass(main, table, method, queries, k, truth, tally, count_io=count_io)
            for c in sorted(set(clients) - {1}):
                tally.qps.setdefault(c, []).append(
                    _clients_pass(conns[:c], table, method, queries, k))
        progress(label, len(order), len(order))

    results = []
    sample = queries[:buffer_sample]
    for done, method in enumerate(methods):
        progress("buffers", done, len(methods))
        hit, read, index_rows = _sample(main, table, method, sample, k)
        tally = tallies[method.name]
        index = indexes.get(method.index) if method.index else None
        results.append(MethodResult(
            name=method.name, family=method.family, settings=method.settings(k),
            product_default=method.product_default, tuned=method.tuned, index=method.index,
            index_role=index.role if index else None,
            index_bytes=index.bytes if index else 0,
            index_build_seconds=index.build_seconds if index else 0.0,
            plan_nodes=plans[method.name],
            recall=float(np.mean(tally.recalls)),
            qps={c: float(np.median(v)) for c, v in sorted(tally.qps.items())},
            qps_rounds={c: v for c, v in sorted(tally.qps.items())},
            p50_ms=_percentile_ms(tally.latencies, 50),
            p99_ms=_percentile_ms(tally.latencies, 99),
            mean_ms=float(np.mean(tally.latencies) * 1000),
            buffers_hit=hit, buffers_read=read, buffers_per_query=hit + read,
            index_rows=index_rows, buffer_sample=len(sample),
            pass_reads=sum(tally.reads) / (len(queries) * rounds) if tally.reads else None,
            pass_hits=sum(tally.hits) / (len(queries) * rounds) if tally.hits else None,
        ))
    progress("buffers", len(methods), len(methods))
    return Measurement(results=results, round_orders=orders)
