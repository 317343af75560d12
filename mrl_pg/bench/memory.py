"""``mrl-pg bench --memory-bound``: the regime where the table and the full index outgrow the cache.

A dedicated embedded server is restarted with ``debug_io_direct = data``
(PostgreSQL's switch to bypass the OS page cache, so shared buffers are the
only cache) and, in turn, each ``shared_buffers`` size between the prefix
index's size and the full index's. At each size the methods run warm-up
rounds, then timed interleaved rounds (:func:`mrl_pg.bench.run.measure`):
the steady state of a table bigger than its cache. Then, cold: before each
query every relation of the table is evicted
(``pg_buffercache_evict_relation`` and ``posix_fadvise(POSIX_FADV_DONTNEED)``
on its files) and the query timed alone. The server's own settings are put
back at the end.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from mrl_pg.bench.methods import ADAPTIVE, SINGLE_PASS, BenchTable, Method, run_method
from mrl_pg.bench.report import DataInfo, Environment, IndexInfo, MethodResult
from mrl_pg.bench.run import Progress, TrueNeighbours, measure
from mrl_pg.db import connect
from mrl_pg.errors import InvalidConfigError, ServerError
from mrl_pg.server import EmbeddedServer

__all__ = [
    "MemoryBoundOptions",
    "CachePoint",
    "ColdResult",
    "MemoryBoundReport",
    "memory_methods",
    "cache_sizes",
    "restart_with",
    "table_relations",
    "evict",
    "run_cache_point",
    "run_cold",
    "run_memory_bound",
    "memory_markdown",
    "MEMORY_TARGET",
]

MB = 2**20
_IO_DIRECT = "debug_io_direct"
_SETTINGS = ("shared_buffers", _IO_DIRECT)


@dataclass(frozen=True)
class MemoryBoundOptions:
    """Cache sizes (fractions of the full index), rounds, and the settings compared."""

    cache_fractions: tuple[float, ...] = (1 / 8, 1 / 4, 1 / 2)
    warmup_rounds: int = 2
    rounds: int = 3
    adaptive: tuple[tuple[int, int], ...] = ((1, 40), (2, 40), (2, 80), (3, 40), (4, 80),
                                             (8, 160))
    """``(oversample, ef_search)`` pairs of adaptive search."""
    single_pass: tuple[int, ...] = (40, 60, 80, 120, 200)
    """ef_search values of single-pass HNSW."""
    cold_queries: int = 20
    buffer_sample: int = 10
    headroom_mb: int = 32
    """A cache must hold the prefix index plus this much; smaller sizes are skipped."""

    def __post_init__(self) -> None:
        if not self.cache_fractions or not all(0 < f < 1 for f in self.cache_fractions):
            raise InvalidConfigError(
                f"cache fractions must be between 0 and 1, got {self.cache_fractions}")
        for name in ("warmup_rounds", "rounds", "cold_queries", "buffer_sample"):
            if getattr(self, name) < (0 if name in ("warmup_rounds", "cold_queries") else 1):
                raise InvalidConfigError(f"{name} is out of range: {getattr(self, name)}")


def memory_methods(table: BenchTable, options: MemoryBoundOptions) -> list[Method]:
    """Adaptive search at each ``(oversample, ef_search)`` and single-pass at each ef_search."""
    prefix = table.config.hnsw_index_name
    return ([Method(f"{ADAPTIVE} {o}x ef={ef}", ADAPTIVE, prefix, ef_search=ef, oversample=o)
             for o, ef in options.adaptive]
            + [Method(f"{SINGLE_PASS} ef={ef}", SINGLE_PASS, table.full_index_name,
                      ef_search=ef) for ef in options.single_pass])


def cache_sizes(full_index_bytes: int, prefix_index_bytes: int,
                options: MemoryBoundOptions) -> tuple[list[tuple[float, int]], list[str]]:
    """``(fraction, shared_buffers in MB)`` for each fraction of the full index whose cache
    holds the prefix index (with headroom), and why each other fraction was skipped."""
    kept, skipped = [], []
    need = prefix_index_bytes / MB + options.headroom_mb
    for fraction in options.cache_fractions:
        size = int(full_index_bytes * fraction / MB)
        if size < need:
            skipped.append(f"1/{round(1 / fraction)} of the full index ({size} MB) cannot hold "
                           f"the {prefix_index_bytes / MB:.0f} MB prefix index")
        else:
            kept.append((fraction, size))
    return kept, skipped


def _server_settings(conn: psycopg.Connection[Any]) -> dict[str, str | None]:
    rows = conn.execute("SELECT name, setting, unit, source FROM pg_settings "
                        "WHERE name = ANY(%s)", (list(_SETTINGS),)).fetchall()
    out: dict[str, str | None] = {}
    for name, _setting, _unit, source in rows:
        out[str(name)] = None  # reset unless ALTER SYSTEM had set it
        if source == "configuration file":
            shown = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
            out[str(name)] = str(shown[0]) if shown else None
    return out


def restart_with(server: EmbeddedServer, settings: dict[str, str | None]) -> str:
    """``ALTER SYSTEM`` each setting (None: reset), restart the server, return its DSN."""
    with psycopg.connect(server.url(), autocommit=True) as conn:
        for name, value in settings.items():
            if value is None:
                conn.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name)))
            else:
                conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(
                    sql.Identifier(name), sql.Literal(value)))
    server.stop()
    return server.start()


def table_relations(conn: psycopg.Connection[Any], table: BenchTable) -> list[str]:
    """The table, its TOAST table and every index of either, as regclass names."""
    rows = conn.execute(
        """WITH t AS (SELECT c.oid, c.reltoastrelid FROM pg_class c WHERE c.oid = %s::regclass)
SELECT r::regclass::text FROM (
    SELECT oid AS r FROM t
    UNION ALL SELECT reltoastrelid FROM t WHERE reltoastrelid <> 0
    UNION ALL SELECT indexrelid FROM pg_index, t
        WHERE indrelid IN (t.oid, t.reltoastrelid)) AS rels""",
        (table.config.table.as_string(conn),)).fetchall()
    return [str(r[0]) for r in rows]


def _relation_files(conn: psycopg.Connection[Any], relations: Sequence[str]) -> list[Path]:
    data = conn.execute("SHOW data_directory").fetchone()
    root = Path(str(data[0])) if data else Path()
    files = []
    for relation in relations:
        row = conn.execute("SELECT pg_relation_filepath(%s::regclass)", (relation,)).fetchone()
        if row is None or row[0] is None:
            continue
        base = root / str(row[0])
        segment = 0
        while True:  # 1 GB segments: base, base.1, base.2, ...
            path = base if segment == 0 else base.with_name(f"{base.name}.{segment}")
            if not path.exists():
                break
            files.append(path)
            segment += 1
    return files


def evict(conn: psycopg.Connection[Any], relations: Sequence[str], files: Sequence[Path]) -> int:
    """Drop every relation's pages from shared buffers and from the OS page cache;
    the buffers evicted."""
    evicted = 0
    for relation in relations:
        row = conn.execute("SELECT buffers_evicted FROM pg_buffercache_evict_relation(%s)",
                           (relation,)).fetchone()
        evicted += int(row[0]) if row else 0
    for path in files:
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    return evicted


@dataclass(frozen=True)
class CachePoint:
    """The steady state at one cache size: every method after warm-up rounds."""

    fraction: float
    shared_buffers_mb: int
    io_direct: str
    """``SHOW debug_io_direct`` on the restarted server (``data`` when the OS cache is off)."""
    methods: list[MethodResult]
    round_orders: list[list[str]]
    seconds: float


@dataclass(frozen=True)
class ColdResult:
    """One method's queries, each run with nothing of the table cached."""

    name: str
    family: str
    recall: float
    median_ms: float
    p90_ms: float
    queries: int


@dataclass(frozen=True)
class MemoryBoundReport:
    kind: str
    data: DataInfo
    environment: Environment
    options: dict[str, Any]
    indexes: list[IndexInfo]
    table_bytes: int
    points: list[CachePoint]
    skipped: list[str]
    cold: list[ColdResult]
    cold_shared_buffers_mb: int | None
    seconds: float
    warnings: list[str] = field(default_factory=list)


def run_cache_point(
    server: EmbeddedServer, table: BenchTable, methods: list[Method],
    queries: np.ndarray[Any, Any], truth: TrueNeighbours, indexes: dict[str, IndexInfo], *,
    fraction: float, size_mb: int, options: MemoryBoundOptions, k: int, seed: int,
    on_progress: Progress,
) -> CachePoint:
    """Restart with ``size_mb`` of shared buffers and direct I/O; warm up, then time."""
    started = time.perf_counter()
    dsn = restart_with(server, {"shared_buffers": f"{size_mb}MB", _IO_DIRECT: "data"})
    with connect(dsn, autocommit=True) as conn:
        shown = conn.execute("SHOW debug_io_direct").fetchone()
        io_direct = str(shown[0]) if shown else ""
        if options.warmup_rounds:
            measure([conn], table, methods, queries, truth, indexes, k=k,
                    rounds=options.warmup_rounds, clients=(1,), seed=seed + 1, buffer_sample=1,
                    on_progress=lambda label, done, total: on_progress(
                        f"warm-up {label}", done, total))
        measured = measure([conn], table, methods, queries, truth, indexes, k=k,
                           rounds=options.rounds, clients=(1,), seed=seed,
                           buffer_sample=options.buffer_sample, warmup=0, count_io=True,
                           on_progress=on_progress)
    return CachePoint(fraction=fraction, shared_buffers_mb=size_mb, io_direct=io_direct,
                      methods=measured.results, round_orders=measured.round_orders,
                      seconds=time.perf_counter() - started)


def run_cold(
    conn: psycopg.Connection[Any], table: BenchTable, methods: list[Method],
    queries: np.ndarray[Any, Any], truth: TrueNeighbours, *, k: int,
    on_progress: Callable[[str, int, int | None], None],
) -> list[ColdResult]:
    """Each query of each method with every relation of the table evicted first."""
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_buffercache")
    relations = table_relations(conn, table)
    files = _relation_files(conn, relations)
    results = []
    for done, method in enumerate(methods):
        on_progress("cold", done, len(methods))
        run_method(conn, table, method, queries[0], k)  # the connection's settings, once
        spans, recalls = [], []
        for i, query in enumerate(queries):
            evict(conn, relations, files)
            started = time.perf_counter()
            found = run_method(conn, table, method, query, k)
            spans.append(time.perf_counter() - started)
            recalls.append(truth.recall(i, found))
        ms = np.asarray(spans) * 1000
        results.append(ColdResult(name=method.name, family=method.family,
                                  recall=float(np.mean(recalls)),
                                  median_ms=float(np.median(ms)),
                                  p90_ms=float(np.percentile(ms, 90)), queries=len(queries)))
    on_progress("cold", len(methods), len(methods))
    return results


def check_server(server: EmbeddedServer) -> None:
    """The memory-bound mode restarts the server: it must be a running embedded one."""
    if not server.status().running:
        raise ServerError(f"no embedded server runs in {server.pgdata}")


def run_memory_bound(
    server_home: Path | str,
    data: Any,
    options: Any,
    memory: MemoryBoundOptions | None = None,
    *,
    command: str | None = None,
    on_step: Callable[[str], None] = lambda _: None,
    on_progress: Progress | None = None,
) -> MemoryBoundReport:
    """Load ``data`` into the embedded server under ``server_home`` (or reuse the kept
    table), then measure each cache size and the cold case; the server's settings are put
    back afterwards. ``options`` is a :class:`~mrl_pg.bench.search.SearchBenchOptions`."""
    from dataclasses import asdict, replace

    from mrl_pg.bench.search import _data_info, _environment, _load, _load_average

    memory = memory or MemoryBoundOptions()
    progress: Progress = on_progress or (lambda _label, _done, _total: None)
    started = time.perf_counter()
    server = EmbeddedServer(server_home)
    dsn = server.start()
    options = replace(options, reuse=True)
    with connect(dsn, autocommit=True) as conn:
        environment = _environment(conn, command)
        original = _server_settings(conn)
        loaded = _load(conn, dsn, data, options, full_index=True, on_step=on_step,
                       on_progress=progress)
    table = loaded.table
    full = loaded.indexes[table.full_index_name]
    prefix = loaded.indexes[table.config.hnsw_index_name]
    sizes, skipped = cache_sizes(full.bytes, prefix.bytes, memory)
    on_step(f"finding the true {options.k} nearest rows of {len(data.queries)} queries")
    truth = TrueNeighbours(data.vectors, data.external_ids, data.queries, options.k)
    methods = memory_methods(table, memory)
    points: list[CachePoint] = []
    cold: list[ColdResult] = []
    cold_size = None
    warnings = list(skipped)
    try:
        for fraction, size in sizes:
            on_step(f"shared_buffers {size} MB (1/{round(1 / fraction)} of the "
                    f"{full.bytes / MB:.0f} MB full index), debug_io_direct = data: "
                    f"{memory.warmup_rounds} warm-up rounds, {memory.rounds} timed rounds")
            point = run_cache_point(server, table, methods, data.queries, truth,
                                    loaded.indexes, fraction=fraction, size_mb=size,
                                    options=memory, k=options.k, seed=options.seed,
                                    on_progress=progress)
            if point.io_direct != "data":
                warnings.append(f"debug_io_direct is {point.io_direct!r}, not 'data': the OS "
                                "page cache still served reads at this size")
            points.append(point)
        if memory.cold_queries and sizes:
            cold_size = sizes[0][1]
            on_step(f"cold: {memory.cold_queries} queries per method, every relation evicted "
                    f"before each (shared_buffers {cold_size} MB)")
            dsn = restart_with(server, {"shared_buffers": f"{cold_size}MB",
                                        _IO_DIRECT: "data"})
            with connect(dsn, autocommit=True) as conn:
                cold = run_cold(conn, table, methods, data.queries[:memory.cold_queries],
                                truth, k=options.k, on_progress=progress)
    finally:
        on_step("restarting the server with its own settings")
        restart_with(server, original)
    return MemoryBoundReport(
        kind="memory-bound", data=_data_info(data, len(data.vectors), options),
        environment=replace(environment, load_average_end=_load_average()),
        options=asdict(options) | {"memory": asdict(memory)},
        indexes=list(loaded.indexes.values()), table_bytes=loaded.table_bytes, points=points,
        skipped=skipped, cold=cold, cold_shared_buffers_mb=cold_size,
        seconds=time.perf_counter() - started, warnings=warnings)


MEMORY_TARGET = 5.0
"""Issue 20: adaptive search at >= 5x single-pass QPS at equal recall, full index not cached."""


def _cell(m: MethodResult | None) -> str:
    if m is None:
        return "none reached it"
    return (f"{m.name}: {m.recall:.3f}, {m.qps[1]:,.1f} QPS, "
            f"{_reads(m)} reads/q")


def _reads(m: MethodResult) -> str:
    return f"{m.pass_reads:,.0f}" if m.pass_reads is not None else f"{m.buffers_read:,.0f}*"


def memory_markdown(report: MemoryBoundReport) -> str:
    """Per cache size the equal-recall frontier (QPS and shared reads per query) and every
    setting; then the cold queries."""
    from mrl_pg.bench.report import _header, _mb, frontier

    rounds = int(report.options.get("memory", {}).get("rounds", 0))
    sizes = {i.role: i.bytes for i in report.indexes}
    lines = ["## mrl-pg bench --memory-bound", ""] + _header(
        report.data, report.environment, rounds) + [
        "",
        f"Server restarted with `debug_io_direct = data` (no OS page cache: shared buffers "
        f"are the only cache) at each `shared_buffers` size; prefix index "
        f"{_mb(sizes.get('prefix', 0))}, full index {_mb(sizes.get('full', 0))}, table "
        f"{_mb(report.table_bytes)}. "
        f"{report.options.get('memory', {}).get('warmup_rounds', 0)} warm-up rounds, then "
        "interleaved timed rounds (1 client, median QPS); reads and hits = the database's "
        "blks_read and blks_hit per query over the timed passes (a value marked * is from "
        "EXPLAIN ANALYZE BUFFERS on a sample run after the rounds, which depends on the "
        "method sampled before it).", ""]
    k = report.data.k
    for point in report.points:
        lines += [f"### shared_buffers {point.shared_buffers_mb} MB "
                  f"(1/{round(1 / point.fraction)} of the full index; debug_io_direct = "
                  f"{point.io_direct or 'off'})", "",
                  f"| recall@{k} >= | adaptive (fastest) | single-pass (fastest) | "
                  "adaptive / single-pass QPS | target >= 5x |", "|---|---|---|---|---|"]
        for row in frontier(point.methods, k=k):
            ratio = row.qps_ratio
            verdict = ("" if ratio is None
                       else "MET" if ratio >= MEMORY_TARGET else "MISSED")
            lines.append(f"| {row.target} | {_cell(row.adaptive)} | "
                         f"{_cell(row.single_pass)} | "
                         f"{'' if ratio is None else f'{ratio:.2f}x'} | {verdict} |")
        lines += ["", f"| setting | recall@{k} | QPS | p50 ms | hits/query | reads/query |",
                  "|---|---|---|---|---|---|"]
        for m in point.methods:
            hits = (f"{m.pass_hits:,.0f}" if m.pass_hits is not None
                    else f"{m.buffers_hit:,.0f}*")
            lines.append(f"| {m.name} | {m.recall:.3f} | {m.qps[1]:,.1f} | {m.p50_ms:.2f} | "
                         f"{hits} | {_reads(m)} |")
        lines.append("")
    if report.cold:
        lines += [f"### Cold: every relation evicted before each query "
                  f"(pg_buffercache_evict_relation + POSIX_FADV_DONTNEED; shared_buffers "
                  f"{report.cold_shared_buffers_mb} MB)", "",
                  f"| setting | recall@{k} | median ms | p90 ms | queries |",
                  "|---|---|---|---|---|"]
        lines += [f"| {c.name} | {c.recall:.3f} | {c.median_ms:.1f} | {c.p90_ms:.1f} | "
                  f"{c.queries} |" for c in report.cold]
        lines.append("")
    lines += [f"- skipped: {s}" for s in report.skipped]
    lines += [f"- warning: {w}" for w in report.warnings if w not in report.skipped]
    lines.append(f"- whole run {report.seconds:.0f} s")
    if report.environment.command:
        lines += ["", f"`{report.environment.command}`"]
    return "\n".join(lines) + "\n"
