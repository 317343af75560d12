"""The demo: exact full-dimension search against adaptive search on a synthetic MRL corpus.

It migrates the database, loads a seeded Matryoshka-like corpus into its own
table ``mrl_demo`` (``mrl_documents`` is left alone), builds the prefix HNSW
index after the load, then runs the same queries both ways and measures
recall@10 (against the true neighbours, found by numpy over every loaded
vector), latency and sizes. Nothing here prints: the CLI renders the report
and the progress callbacks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from mrl_pg.bench.synthetic import make_corpus, make_queries
from mrl_pg.config import TableConfig
from mrl_pg.errors import DatabaseError
from mrl_pg.index.build import IndexProgress, build_hnsw_index, drop_hnsw_index
from mrl_pg.ingest.load import ingest_arrays
from mrl_pg.psycopg._search import SearchResult, exact_search, search
from mrl_pg.schema.install import install

__all__ = ["DemoOptions", "DemoReport", "LatencyStats", "run_demo", "DEMO_TABLE"]

DEMO_TABLE = "mrl_demo"


@dataclass(frozen=True)
class DemoOptions:
    rows: int = 50_000
    full_dim: int = 1536
    prefix_dim: int = 512
    queries: int = 200
    k: int = 10
    oversample: int = 8
    seed: int = 0


# A returned row within this cosine distance of the k-th true neighbour counts as found:
# pgvector and numpy both sum float32 products, and may differ in the sixth decimal.
TIE_TOLERANCE = 1e-5


@dataclass(frozen=True)
class LatencyStats:
    """Recall@k against the true k nearest rows (numpy brute force) and latency in milliseconds."""

    recall: float
    mean_ms: float
    p95_ms: float

    @classmethod
    def of(cls, recalls: list[float], seconds: list[float]) -> LatencyStats:
        ms = np.asarray(seconds) * 1000
        return cls(float(np.mean(recalls)), float(ms.mean()), float(np.percentile(ms, 95)))


@dataclass(frozen=True)
class DemoReport:
    options: DemoOptions
    load_seconds: float
    load_rows_per_second: float
    index_seconds: float
    exact: LatencyStats
    adaptive: LatencyStats
    prefix_only: LatencyStats
    table_bytes: int
    prefix_index_bytes: int
    full_vectors_bytes: int
    prefix_vectors_bytes: int
    index_warnings: list[str] = field(default_factory=list)

    @property
    def speedup(self) -> float:
        return self.exact.mean_ms / self.adaptive.mean_ms if self.adaptive.mean_ms else 0.0

    @property
    def estimated_full_index_bytes(self) -> int:
        """A full-dimension HNSW index (vector(N)) estimated from the measured prefix index:
        the same graph, with each stored vector N float32 instead of P float16."""
        return self.prefix_index_bytes + self.full_vectors_bytes - self.prefix_vectors_bytes


class _TrueNeighbours:
    """The true k nearest rows of each query, by numpy over every row, to score results by."""

    def __init__(
        self, embeddings: npt.NDArray[np.float32], external_ids: list[str],
        queries: npt.NDArray[np.float32], k: int,
    ) -> None:
        self._embeddings = embeddings
        self._norms = np.linalg.norm(embeddings, axis=1).astype(np.float64)
        self._rows = {eid: i for i, eid in enumerate(external_ids)}
        self.k = min(k, len(embeddings))
        unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        self._queries = unit.astype(np.float64)
        self._kth = np.empty(len(queries))
        for start in range(0, len(queries), 64):  # (rows x 64) similarities at a time
            sims = (embeddings @ unit[start:start + 64].T.astype(np.float32)) / self._norms[:, None]
            self._kth[start:start + 64] = 1 - np.partition(sims, -self.k, axis=0)[-self.k]

    def recall(self, query: int, found: list[SearchResult]) -> float:
        """Share of the query's k true nearest rows among ``found`` (ties count as found)."""
        rows = [self._rows[r.external_id] for r in found if r.external_id in self._rows]
        sims = self._embeddings[rows].astype(np.float64) @ self._queries[query]
        distances = 1 - sims / self._norms[rows]
        return int(np.count_nonzero(distances <= self._kth[query] + TIE_TOLERANCE)) / self.k


Step = Callable[[str], None]
Progress = Callable[[str, int, int | None], None]


def _noop_step(_: str) -> None:
    pass


def _noop_progress(_: str, __: int, ___: int | None) -> None:
    pass


def run_demo(
    conn: psycopg.Connection[Any],
    options: DemoOptions | None = None,
    *,
    on_step: Step = _noop_step,
    on_progress: Progress = _noop_progress,
) -> DemoReport:
    """Load, index and compare. ``on_step(label)`` marks each phase; ``on_progress(label,
    done, total)`` reports progress inside a phase."""
    options = options or DemoOptions()
    config = TableConfig(DEMO_TABLE, full_dim=options.full_dim, prefix_dim=options.prefix_dim)

    on_step(f"generating {options.rows:,} x {options.full_dim} Matryoshka-like vectors")
    corpus = make_corpus(options.rows, options.full_dim, seed=options.seed)
    queries = make_queries(options.queries, options.full_dim, seed=options.seed)

    on_step(f"creating table {DEMO_TABLE} without its HNSW index (load first, index after)")
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(config.table))
    install(conn, config)
    drop_hnsw_index(conn, config)

    on_step("loading rows with binary COPY")
    load = ingest_arrays(
        conn, config, corpus.embeddings,
        external_ids=corpus.external_ids, metadatas=corpus.metadata,
        contents=[f"synthetic document {i}" for i in range(options.rows)],
        on_progress=lambda done: on_progress("load", done, options.rows),
    )

    on_step("building the prefix HNSW index")

    def index_progress(p: IndexProgress) -> None:
        on_progress("index", p.done, p.total)

    index = build_hnsw_index(conn, config, on_progress=index_progress)
    conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(config.table))

    on_step(f"finding the true {options.k} nearest rows of each query with numpy")
    truth = _TrueNeighbours(corpus.embeddings, corpus.external_ids, queries, options.k)

    on_step(
        f"running {options.queries} queries: exact, adaptive {options.oversample}x, prefix only"
    )
    for query in queries[:5]:  # warm the caches the same way for every method
        exact_search(conn, config, query, k=options.k)
        search(conn, config, query, k=options.k, oversample=options.oversample)
    timings: dict[str, list[float]] = {"exact": [], "adaptive": [], "prefix": []}
    recalls: dict[str, list[float]] = {"exact": [], "adaptive": [], "prefix": []}
    for i, query in enumerate(queries):
        t0 = time.perf_counter()
        exact = exact_search(conn, config, query, k=options.k)
        t1 = time.perf_counter()
        adaptive = search(conn, config, query, k=options.k, oversample=options.oversample)
        t2 = time.perf_counter()
        prefix = search(conn, config, query, k=options.k, oversample=1)
        t3 = time.perf_counter()
        for name, found, seconds in (
            ("exact", exact, t1 - t0), ("adaptive", adaptive, t2 - t1), ("prefix", prefix, t3 - t2)
        ):
            timings[name].append(seconds)
            recalls[name].append(truth.recall(i, found))
        on_progress("queries", i + 1, options.queries)

    sizes = conn.execute(
        sql.SQL(
            "SELECT pg_table_size({t}::regclass), pg_relation_size({i}::regclass), "
            "sum(pg_column_size(embedding)), sum(pg_column_size(embedding_prefix)) FROM {table}"
        ).format(
            t=sql.Literal(config.qualified_name),
            i=sql.Literal(config.hnsw_index_name),
            table=config.table,
        )
    ).fetchone()
    if sizes is None:
        raise DatabaseError(f"could not read the sizes of {config.qualified_name}")
    return DemoReport(
        options=options,
        load_seconds=load.seconds,
        load_rows_per_second=load.rows_per_second,
        index_seconds=index.seconds,
        exact=LatencyStats.of(recalls["exact"], timings["exact"]),
        adaptive=LatencyStats.of(recalls["adaptive"], timings["adaptive"]),
        prefix_only=LatencyStats.of(recalls["prefix"], timings["prefix"]),
        table_bytes=int(sizes[0]),
        prefix_index_bytes=int(sizes[1]),
        full_vectors_bytes=int(sizes[2]),
        prefix_vectors_bytes=int(sizes[3]),
        index_warnings=list(index.warnings),
    )
