"""Throughput benchmarks: bulk load against a plain COPY, and HNSW index build time.

Each benchmark makes its own tables (``mrl_bench_*``) and drops them after.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from mrl_pg.bench.synthetic import SyntheticCorpus, make_corpus
from mrl_pg.config import TableConfig
from mrl_pg.index.build import build_hnsw_index, drop_hnsw_index
from mrl_pg.ingest.load import ingest_arrays
from mrl_pg.schema.install import install

__all__ = ["LoadBenchmark", "IndexBenchmark", "bench_load", "bench_index"]

_COPY_TABLE = "mrl_bench_plain_copy"
_LOAD_TABLE = "mrl_bench_load"
_INDEX_TABLE = "mrl_bench_index"


@dataclass(frozen=True)
class LoadBenchmark:
    rows: int
    full_dim: int
    plain_copy_seconds: float
    ingest_seconds: float
    reload_seconds: float
    """The same rows loaded again: staging COPY + upsert, every row found unchanged."""

    @property
    def plain_copy_rows_per_second(self) -> float:
        return self.rows / self.plain_copy_seconds

    @property
    def ingest_rows_per_second(self) -> float:
        return self.rows / self.ingest_seconds

    @property
    def reload_rows_per_second(self) -> float:
        return self.rows / self.reload_seconds

    @property
    def ratio(self) -> float:
        """Ingest rate as a fraction of the plain COPY rate (1.0 = as fast)."""
        return self.plain_copy_seconds / self.ingest_seconds


@dataclass(frozen=True)
class IndexBenchmark:
    rows: int
    seconds: float
    index_bytes: int
    maintenance_work_mem: int
    parallel_workers: int


def _drop(conn: psycopg.Connection[Any], *tables: str) -> None:
    for table in tables:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(table)))


def _plain_copy(conn: psycopg.Connection[Any], corpus: SyntheticCorpus, dim: int) -> float:
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (external_id text, content text, metadata jsonb, embedding vector({}))"
        ).format(sql.Identifier(_COPY_TABLE), sql.Literal(dim))
    )
    statement = sql.SQL(
        "COPY {} (external_id, content, metadata, embedding) FROM STDIN WITH (FORMAT BINARY)"
    ).format(sql.Identifier(_COPY_TABLE))
    started = time.perf_counter()
    with conn.transaction(), conn.cursor() as cur, cur.copy(statement) as copy:
        copy.set_types(["text", "text", "jsonb", "vector"])
        for i, vector in enumerate(corpus.embeddings):
            copy.write_row((corpus.external_ids[i], f"synthetic document {i}",
                            Jsonb(corpus.metadata[i]), vector))
    return time.perf_counter() - started


def bench_load(
    conn: psycopg.Connection[Any], *, rows: int = 50_000, full_dim: int = 1536,
    prefix_dim: int = 512, batch_size: int = 5000, seed: int = 0,
) -> LoadBenchmark:
    """Load the same synthetic rows: a plain binary COPY into an unindexed table, then
    :func:`mrl_pg.ingest.ingest_arrays` into an MRL table with its HNSW index deferred,
    twice (the second run is the upsert path, finding every row unchanged)."""
    corpus = make_corpus(rows, full_dim, seed=seed)
    config = TableConfig(_LOAD_TABLE, full_dim=full_dim, prefix_dim=prefix_dim)
    _drop(conn, _COPY_TABLE, _LOAD_TABLE)
    try:
        plain = _plain_copy(conn, corpus, full_dim)
        install(conn, config, with_search_function=False)
        drop_hnsw_index(conn, config)
        conn.execute("CHECKPOINT")  # both loads start with no dirty buffers to write
        contents = [f"synthetic document {i}" for i in range(rows)]
        seconds = []
        for _ in range(2):  # first load into the empty table, then an idempotent re-run
            started = time.perf_counter()
            ingest_arrays(
                conn, config, corpus.embeddings, external_ids=corpus.external_ids,
                contents=contents, metadatas=corpus.metadata, batch_size=batch_size,
            )
            seconds.append(time.perf_counter() - started)
    finally:
        _drop(conn, _COPY_TABLE, _LOAD_TABLE)
    return LoadBenchmark(rows=rows, full_dim=full_dim, plain_copy_seconds=plain,
                         ingest_seconds=seconds[0], reload_seconds=seconds[1])


def bench_index(
    conn: psycopg.Connection[Any], *, sizes: Sequence[int] = (50_000, 100_000),
    full_dim: int = 1536, prefix_dim: int = 512, seed: int = 0,
    on_size: Callable[[int], None] | None = None,
) -> list[IndexBenchmark]:
    """Build the prefix HNSW index (mrl_pg's defaults) on tables of each size."""
    results = []
    config = TableConfig(_INDEX_TABLE, full_dim=full_dim, prefix_dim=prefix_dim)
    try:
        for rows in sizes:
            if on_size is not None:
                on_size(rows)
            corpus = make_corpus(rows, full_dim, seed=seed)
            _drop(conn, _INDEX_TABLE)
            install(conn, config, with_search_function=False)
            drop_hnsw_index(conn, config)
            ingest_arrays(conn, config, corpus.embeddings, external_ids=corpus.external_ids)
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(config.table))
            report = build_hnsw_index(conn, config)
            results.append(IndexBenchmark(
                rows=rows, seconds=report.seconds, index_bytes=report.index_bytes,
                maintenance_work_mem=report.maintenance_work_mem,
                parallel_workers=report.parallel_workers,
            ))
    finally:
        _drop(conn, _INDEX_TABLE)
    return results
