"""``mrl-pg bench``: every search method side by side, on the same data and server.

One run loads the vectors into an MRL table (prefix HNSW index built after the
load, timed), builds the single-pass HNSW index on the full embedding beside
it (timed, with the prefix index's m and ef_construction unless ``full_ef_construction``
says otherwise; same memory and worker policy), finds each
query's true neighbours with numpy, then times exact search, single-pass HNSW
over an ef_search sweep, the Supabase recipe, prefix-only HNSW and adaptive
search in interleaved rounds (see :func:`mrl_pg.bench.run.measure`).
Every plan is checked first: a method whose plan skips its index stops the
run with :class:`PlanGuardError`. Nothing here prints; progress goes to callbacks.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from mrl_pg.bench.methods import (
    ADAPTIVE,
    EXACT,
    MAX_VECTOR_INDEX_DIM,
    PREFIX_ONLY,
    SINGLE_PASS,
    BenchTable,
    Method,
    PlanGuardError,
    default_methods,
    stage_methods,
    tuned_method,
)
from mrl_pg.bench.powerlaw import make_powerlaw_queries, make_powerlaw_rows
from mrl_pg.bench.report import (
    DataInfo,
    Environment,
    IndexInfo,
    MethodResult,
    RowsSweepReport,
    SearchBenchReport,
    SweepPoint,
    TuneSummary,
    confirm_candidates,
    search_markdown,
    sweep_markdown,
    to_json,
)
from mrl_pg.bench.run import Measurement, Progress, TrueNeighbours, measure, recall_of
from mrl_pg.bench.synthetic import make_corpus, make_queries
from mrl_pg.config import PGVECTOR_DEFAULT_M, TableConfig
from mrl_pg.db import connect
from mrl_pg.errors import DatabaseError, InvalidConfigError, InvalidVectorError
from mrl_pg.index.build import (
    IndexProgress,
    build_hnsw_index,
    default_maintenance_work_mem,
    default_parallel_workers,
    drop_hnsw_index,
    estimate_hnsw_bytes,
)
from mrl_pg.index.progress import ProgressPoller
from mrl_pg.index.tune import TuneOptions, tune
from mrl_pg.ingest.load import ingest_arrays
from mrl_pg.schema.install import install
from mrl_pg.schema.tables import forget_tuning_ddl
from mrl_pg.statement.query import MAX_EF_SEARCH
from mrl_pg.statement.stages import BinaryPrefixHnsw
from mrl_pg.vectors import load_npy

__all__ = [
    "SearchBenchOptions",
    "BenchData",
    "SearchBenchReport",
    "RowsSweepReport",
    "MethodResult",
    "IndexInfo",
    "PlanGuardError",
    "synthetic_data",
    "GENERATORS",
    "kept_table_name",
    "file_data",
    "run_search_bench",
    "run_rows_sweep",
    "to_json",
    "search_markdown",
    "sweep_markdown",
]

Step = Callable[[str], None]


@dataclass(frozen=True)
class SearchBenchOptions:
    """How to run the benchmark. The sweeps name the ef_search and oversample values tried."""

    prefix_dim: int = 512
    k: int = 10
    rounds: int = 3
    clients: tuple[int, ...] = (1, 2)
    seed: int = 0
    ef_search: tuple[int, ...] = (40, 60, 80, 100, 120, 160, 200, 300, 400, 600, 800)
    prefix_ef_search: tuple[int, ...] = (40, 60, 80, 120, 160, 200)
    oversample: tuple[int, ...] = (1, 2, 3, 4, 6, 8)
    adaptive_ef_search: tuple[int, ...] = (40, 60, 80, 120, 160, 200)
    buffer_sample: int = 20
    full_halfvec: bool | None = None
    """Index the full embedding as halfvec; None: only above pgvector's 2,000-dim vector limit."""
    table: str = "mrl_bench_search"
    keep_table: bool = False
    tune: bool = True
    """Run ``mrl-pg tune`` on the table first and measure its choice as a user runs it."""
    tune_queries: int = 200
    target_recall: float = 0.99
    full_ef_construction: int | None = None
    """ef_construction of the single-pass index; None: the prefix index's
    (``TableConfig.hnsw_ef_construction``), so both graphs get the same build effort."""
    confirm_rounds: int = 5
    """Rounds of the confirm run (0: none): the frontier's candidates timed again, alone."""
    exact: bool = True
    """Measure exact search too (a sequential scan: the slowest method by far)."""
    reuse: bool = False
    """Keep the table and its indexes after the run, and use them as they are when a later
    run finds the same rows (checked) and the same index builds there: no load, no build."""
    binary_stage: bool = False
    """Also build the binary-quantized prefix index
    (:class:`~mrl_pg.statement.stages.BinaryPrefixHnsw`)
    and measure adaptive search through it over the oversample x adaptive ef_search grid."""

    def __post_init__(self) -> None:
        if self.confirm_rounds < 0:
            raise InvalidConfigError(
                f"confirm_rounds must be 0 or more, got {self.confirm_rounds}")
        for name in ("rounds", "k", "buffer_sample"):
            if getattr(self, name) < 1:
                raise InvalidConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if (self.full_ef_construction is not None
                and not 2 * PGVECTOR_DEFAULT_M <= self.full_ef_construction <= 1000):
            raise InvalidConfigError(
                f"full_ef_construction must be between {2 * PGVECTOR_DEFAULT_M} (twice m) and "
                f"1000, got {self.full_ef_construction}")
        if not self.clients or min(self.clients) < 1:
            raise InvalidConfigError(f"clients must be positive counts, got {self.clients}")
        for name in ("ef_search", "prefix_ef_search", "adaptive_ef_search", "oversample"):
            values = getattr(self, name)
            if not values or min(values) < 1:
                raise InvalidConfigError(f"{name} must be positive values, got {values}")
        for name in ("ef_search", "prefix_ef_search", "adaptive_ef_search"):
            if max(getattr(self, name)) > MAX_EF_SEARCH:
                raise InvalidConfigError(
                    f"{name} values must be at most {MAX_EF_SEARCH} (pgvector's limit), "
                    f"got {getattr(self, name)}")


@dataclass(frozen=True)
class BenchData:
    """Rows to load and held-out queries; ``source`` is "synthetic" or the rows' file."""

    vectors: npt.NDArray[np.float32]
    queries: npt.NDArray[np.float32]
    external_ids: list[str]
    source: str
    queries_source: str
    seed: int

    @property
    def full_dim(self) -> int:
        return int(self.vectors.shape[1])

    def head(self, rows: int) -> BenchData:
        """The first ``rows`` rows, same queries."""
        return replace(self, vectors=self.vectors[:rows], external_ids=self.external_ids[:rows])


GENERATORS = ("mrl", "powerlaw")
"""``mrl``: :mod:`mrl_pg.bench.synthetic` (the project's); ``powerlaw``:
:mod:`mrl_pg.bench.powerlaw` (64 Zipf-sized clusters, power-law spectrum, heavy tails)."""


def synthetic_data(
    rows: int, full_dim: int, queries: int, *, seed: int = 0, generator: str = "mrl",
) -> BenchData:
    """Seeded Matryoshka-like rows and queries drawn apart from them, from ``generator``
    (one of :data:`GENERATORS`)."""
    if rows < 1 or queries < 1:
        raise InvalidConfigError(f"rows and queries must be positive, got {rows} and {queries}")
    if generator not in GENERATORS:
        raise InvalidConfigError(f"generator must be one of {GENERATORS}, got {generator!r}")
    if generator == "powerlaw":
        return BenchData(vectors=make_powerlaw_rows(rows, full_dim, seed=seed),
                         queries=make_powerlaw_queries(queries, full_dim, seed=seed),
                         external_ids=[f"doc-{i:07d}" for i in range(rows)],
                         source="synthetic powerlaw", queries_source="synthetic", seed=seed)
    corpus = make_corpus(rows, full_dim, seed=seed)
    return BenchData(vectors=corpus.embeddings, queries=make_queries(queries, full_dim, seed=seed),
                     external_ids=corpus.external_ids, source="synthetic",
                     queries_source="synthetic", seed=seed)


def kept_table_name(data: BenchData, generator: str | None) -> str:
    """The table ``--reuse`` keeps ``data`` in: one per generator (or file), size and seed."""
    kind = generator or "file"
    return f"mrl_bench_{kind}_{len(data.vectors)}x{data.full_dim}_s{data.seed}"


def _load_npy(path: Path | str, what: str) -> npt.NDArray[np.float32]:
    array = load_npy(path, what)
    if array.ndim != 2 or array.shape[0] < 1:
        raise InvalidVectorError(f"{what} {str(path)!r} must be a 2-D array, got {array.shape}")
    return np.ascontiguousarray(array, dtype=np.float32)


def file_data(
    vectors: Path | str, queries: Path | str, *, rows: int | None = None,
    query_count: int | None = None,
) -> BenchData:
    """Real embeddings from two ``.npy`` files (rows and held-out queries, same width)."""
    matrix = _load_npy(vectors, "vectors file")
    asked = _load_npy(queries, "queries file")
    if asked.shape[1] != matrix.shape[1]:
        raise InvalidVectorError(
            f"queries have {asked.shape[1]} dimensions but the vectors have {matrix.shape[1]}")
    matrix = matrix[:rows] if rows else matrix
    asked = asked[:query_count] if query_count else asked
    return BenchData(vectors=matrix, queries=asked,
                     external_ids=[f"row-{i:08d}" for i in range(len(matrix))],
                     source=str(vectors), queries_source=str(queries), seed=0)


def _noop_step(_: str) -> None:
    pass


def _data_info(data: BenchData, rows: int, options: SearchBenchOptions) -> DataInfo:
    return DataInfo(source=data.source, rows=rows, full_dim=data.full_dim,
                    prefix_dim=options.prefix_dim, queries=len(data.queries), k=options.k,
                    seed=data.seed, queries_source=data.queries_source)


def _environment(conn: psycopg.Connection[Any], command: str | None) -> Environment:
    def one(query: str) -> str:
        row = conn.execute(query).fetchone()
        return str(row[0]) if row else "unknown"

    settings = conn.execute(
        "SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name = ANY(%s)"
        " ORDER BY name",
        (["shared_buffers", "effective_cache_size", "work_mem", "max_parallel_workers_per_gather",
          "max_parallel_maintenance_workers", "jit"],),
    ).fetchall()
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    return Environment(
        command=command,
        started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        cpu_count=os.cpu_count() or 1,
        usable_cpus=usable,
        ram_bytes=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        platform=platform.platform(),
        python=platform.python_version(),
        postgresql=one("SHOW server_version"),
        pgvector=one("SELECT extversion FROM pg_extension WHERE extname = 'vector'"),
        server_settings={str(name): str(value) for name, value in settings},
        load_average_start=_load_average(),
    )


def _load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _align(n: int) -> int:
    return (n + 7) & ~7


def _full_graph_bytes(rows: int, table: BenchTable) -> int:
    # build_hnsw_index sizes memory from the prefix graph; the full one differs only in
    # the vector each element keeps: N float32 (or float16) instead of P float16.
    config = table.config
    width = 2 if table.full_halfvec else 4
    per_row = _align(8 + width * config.full_dim) - _align(8 + 2 * config.prefix_dim)
    return estimate_hnsw_bytes(rows, config) + rows * per_row


def _build_full_index(
    conn: psycopg.Connection[Any], dsn: str, table: BenchTable, rows: int,
    on_progress: Progress,
) -> IndexInfo:
    """The single-pass index, under build_hnsw_index's memory and parallel-worker policy."""
    memory = default_maintenance_work_mem(_full_graph_bytes(rows, table))
    workers = default_parallel_workers()

    def report(p: IndexProgress) -> None:
        on_progress("full index", p.done, p.total)

    poller = ProgressPoller(dsn, conn.info.backend_pid, report, 0.5)
    poller.rows = rows
    with conn.transaction():
        conn.execute("SELECT set_config('maintenance_work_mem', %s, true), "
                     "set_config('max_parallel_maintenance_workers', %s, true)",
                     (f"{memory // 1024}kB", str(workers)))
        with poller:
            started = time.perf_counter()
            conn.execute(table.full_index_ddl())
            seconds = time.perf_counter() - started
    return _index_info(conn, table.config, table.full_index_name, "full", seconds, memory,
                       workers)


def _index_info(
    conn: psycopg.Connection[Any], config: TableConfig, name: str, role: str, seconds: float,
    memory: int, workers: int,
) -> IndexInfo:
    row = conn.execute("SELECT pg_relation_size(c.oid), pg_get_indexdef(c.oid) FROM pg_class c "
                       "WHERE c.oid = to_regclass(%s)",
                       (config.qualified(name).as_string(conn),)).fetchone()
    if row is None:
        raise DatabaseError(f"index {name} of {config.qualified_name} was not built")
    return IndexInfo(name=name, role=role, definition=str(row[1]), bytes=int(row[0]),
                     build_seconds=seconds, maintenance_work_mem=memory, parallel_workers=workers)


@dataclass(frozen=True)
class _Loaded:
    table: BenchTable
    load_seconds: float
    table_bytes: int
    indexes: dict[str, IndexInfo]


def _load(
    conn: psycopg.Connection[Any], dsn: str, data: BenchData, options: SearchBenchOptions,
    *, full_index: bool, on_step: Step, on_progress: Progress,
) -> _Loaded:
    rows = len(data.vectors)
    config = TableConfig(options.table, full_dim=data.full_dim, prefix_dim=options.prefix_dim)
    halfvec = (options.full_halfvec if options.full_halfvec is not None
               else data.full_dim > MAX_VECTOR_INDEX_DIM)
    table = BenchTable(config, full_halfvec=halfvec,
                       full_ef_construction=options.full_ef_construction)
    if options.reuse:
        kept = _reusable(conn, table, data, full_index=full_index,
                         binary_stage=options.binary_stage)
        if kept is not None:
            on_step(f"reusing {config.name}: same rows, same index builds (no load, no build)")
            return kept
    on_step(f"loading {rows:,} x {data.full_dim} rows into {config.name} (index deferred)")
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(config.table))
    install(conn, config, with_search_function=False)
    drop_hnsw_index(conn, config)
    load = ingest_arrays(conn, config, data.vectors, external_ids=data.external_ids,
                         on_progress=lambda done: on_progress("load", done, rows))
    on_step(f"building the prefix HNSW index (halfvec({config.prefix_dim}))")
    prefix = build_hnsw_index(
        conn, config, dsn=dsn,
        on_progress=lambda p: on_progress("prefix index", p.done, p.total))
    indexes = {config.hnsw_index_name: _index_info(
        conn, config, config.hnsw_index_name, "prefix", prefix.seconds,
        prefix.maintenance_work_mem, prefix.parallel_workers)}
    if options.binary_stage:
        stage = BinaryPrefixHnsw()
        on_step(f"building the binary-quantized prefix index (bit({config.prefix_dim}))")
        started = time.perf_counter()
        conn.execute(stage.index_ddl(config))
        indexes[stage.index_name(config)] = _index_info(
            conn, config, stage.index_name(config), "binary prefix",
            time.perf_counter() - started, 0, 0)
    if full_index:
        kind = f"halfvec({config.full_dim})" if halfvec else f"vector({config.full_dim})"
        on_step(f"building the single-pass HNSW index on the full embedding ({kind})")
        indexes[table.full_index_name] = _build_full_index(conn, dsn, table, rows, on_progress)
    on_step("VACUUM ANALYZE")
    conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(config.table))
    size = conn.execute("SELECT pg_table_size(to_regclass(%s))",
                        (config.table.as_string(conn),)).fetchone()
    return _Loaded(table=table, load_seconds=load.seconds,
                   table_bytes=int(size[0]) if size else 0, indexes=indexes)


def _reusable(
    conn: psycopg.Connection[Any], table: BenchTable, data: BenchData, *, full_index: bool,
    binary_stage: bool,
) -> _Loaded | None:
    """The kept table, when it holds exactly ``data``'s rows (count, and the first and last
    rows' vectors) and every index this run needs, built as this run would build it."""
    config = table.config
    found = conn.execute("SELECT to_regclass(%s)", (config.table.as_string(conn),)).fetchone()
    if found is None or found[0] is None:
        return None
    count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(config.table)).fetchone()
    if count is None or int(count[0]) != len(data.vectors):
        return None
    for i in (0, len(data.vectors) - 1):
        row = conn.execute(
            sql.SQL("SELECT {} FROM {} WHERE external_id = %s").format(
                sql.Identifier(config.embedding_column), config.table),
            (data.external_ids[i],)).fetchone()
        if row is None or not np.allclose(np.asarray(row[0].to_numpy(), dtype=np.float32),
                                          data.vectors[i], atol=1e-6):
            return None
    wanted: dict[str, tuple[str, str | None]] = {config.hnsw_index_name: ("prefix", None)}
    if full_index:
        m, ef = table.full_build
        wanted[table.full_index_name] = ("full", f"(m='{m}', ef_construction='{ef}')")
    if binary_stage:
        wanted[BinaryPrefixHnsw().index_name(config)] = ("binary prefix", None)
    indexes = {}
    for name, (role, build) in wanted.items():
        try:
            info = _index_info(conn, config, name, role, 0.0, 0, 0)
        except DatabaseError:
            return None
        if build is not None and build not in info.definition:
            return None
        indexes[name] = replace(info, reused=True)
    size = conn.execute("SELECT pg_table_size(to_regclass(%s))",
                        (config.table.as_string(conn),)).fetchone()
    return _Loaded(table=table, load_seconds=0.0, table_bytes=int(size[0]) if size else 0,
                   indexes=indexes)


def _drop(conn: psycopg.Connection[Any], options: SearchBenchOptions) -> None:
    # Best effort: a failed drop must not hide the error that ended the run, and the
    # next run drops the table before loading anyway.
    if not (options.keep_table or options.reuse) and not conn.closed:
        with contextlib.suppress(psycopg.Error):
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(
                sql.Identifier(options.table)))
            conn.execute(forget_tuning_ddl(TableConfig(options.table)))


def _options_dict(options: SearchBenchOptions, **extra: Any) -> dict[str, Any]:
    return asdict(options) | extra


def _methods(table: BenchTable, options: SearchBenchOptions) -> list[Method]:
    methods = default_methods(table, ef_search=options.ef_search,
                              prefix_ef_search=options.prefix_ef_search,
                              oversample=options.oversample,
                              adaptive_ef_search=options.adaptive_ef_search, k=options.k)
    if not options.exact:
        methods = [m for m in methods if m.family != EXACT]
    if options.binary_stage:
        methods += stage_methods(table, BinaryPrefixHnsw(), oversample=options.oversample,
                                 ef_search=options.adaptive_ef_search)
    return methods


def _clients(dsn: str, options: SearchBenchOptions) -> list[psycopg.Connection[Any]]:
    return [connect(dsn, autocommit=True) for _ in range(max(options.clients))]


def run_search_bench(
    dsn: str,
    data: BenchData,
    options: SearchBenchOptions | None = None,
    *,
    command: str | None = None,
    on_step: Step = _noop_step,
    on_progress: Progress | None = None,
) -> SearchBenchReport:
    """Load ``data``, build both indexes, and measure every method (:func:`default_methods`).

    ``dsn`` must name a database with the ``vector`` extension; the table
    (``options.table``) is dropped afterwards unless ``keep_table``.
    ``command`` is recorded in the report (the command line that ran it).
    """
    options = options or SearchBenchOptions()
    progress: Progress = on_progress or (lambda _label, _done, _total: None)
    started = time.perf_counter()
    conns = _clients(dsn, options)
    try:
        environment = _environment(conns[0], command)
        loaded = _load(conns[0], dsn, data, options, full_index=True, on_step=on_step,
                       on_progress=progress)
        on_step(f"finding the true {options.k} nearest rows of {len(data.queries)} queries "
                "with numpy")
        truth = TrueNeighbours(data.vectors, data.external_ids, data.queries, options.k)
        methods = _methods(loaded.table, options)
        tuning = None
        if options.tune:
            on_step(f"mrl-pg tune --target-recall {options.target_recall} on "
                    f"{options.tune_queries} rows of the table")
            tuning, tuned = _tune(conns[0], loaded.table, options, progress)
            methods += tuned
        on_step(f"measuring {len(methods)} methods, {options.rounds} interleaved rounds")
        measured = measure(
            conns, loaded.table, methods, data.queries, truth, loaded.indexes, k=options.k,
            rounds=options.rounds, clients=options.clients, seed=options.seed,
            buffer_sample=options.buffer_sample, on_progress=progress)
        confirmed = None
        if options.confirm_rounds:
            confirmed = _confirm(conns, loaded, methods, measured.results, data, truth, options,
                                 on_step, progress)
    finally:
        try:
            _drop(conns[0], options)
        finally:
            for conn in conns:
                conn.close()
    return SearchBenchReport(
        confirmed=confirmed.results if confirmed else [],
        confirm_round_orders=confirmed.round_orders if confirmed else [],
        kind="search", data=_data_info(data, len(data.vectors), options),
        environment=replace(environment, load_average_end=_load_average()),
        options=_options_dict(options),
        load_seconds=loaded.load_seconds, table_bytes=loaded.table_bytes,
        indexes=list(loaded.indexes.values()), methods=measured.results,
        round_orders=measured.round_orders, seconds=time.perf_counter() - started,
        tuning=tuning,
        warnings=[] if tuning is None or tuning.recommended else [
            f"mrl-pg tune found no setting reaching recall {options.target_recall}"],
    )


def _confirm(
    conns: list[psycopg.Connection[Any]], loaded: _Loaded, methods: list[Method],
    results: list[MethodResult], data: BenchData, truth: TrueNeighbours,
    options: SearchBenchOptions, on_step: Step, progress: Progress,
) -> Measurement:
    """Time the frontier's candidates again, alone, in ``confirm_rounds`` rounds."""
    lookup = {m.name: m for m in methods}
    lookup |= {m.forced().name: m.forced() for m in methods if m.family == SINGLE_PASS}
    names = confirm_candidates(results, k=options.k)
    chosen = [lookup[name] for name in names if name in lookup]
    on_step(f"confirm run: {len(chosen)} candidates, {options.confirm_rounds} interleaved "
            "rounds")
    return measure(conns, loaded.table, chosen, data.queries, truth, loaded.indexes,
                   k=options.k, rounds=options.confirm_rounds, clients=options.clients,
                   seed=options.seed + 1, buffer_sample=options.buffer_sample,
                   on_progress=progress)


def _tune(
    conn: psycopg.Connection[Any], table: BenchTable, options: SearchBenchOptions,
    progress: Progress,
) -> tuple[TuneSummary, list[Method]]:
    report = tune(conn, table.config, TuneOptions(
        k=options.k, target_recall=options.target_recall, queries=options.tune_queries,
        rounds=1, seed=options.seed), on_progress=progress)
    best = report.recommended
    summary = TuneSummary(
        target_recall=options.target_recall, queries=report.queries,
        recommended=None if best is None else {"oversample": best.tuning.oversample,
                                               "ef_search": best.tuning.ef_search},
        recall_on_rows=None if best is None else best.min_recall, seconds=report.seconds)
    return summary, [] if best is None else [tuned_method(table, best.tuning)]


def _tuned_single_pass(
    conn: psycopg.Connection[Any], table: BenchTable, methods: list[Method],
    data: BenchData, truth: TrueNeighbours, options: SearchBenchOptions,
) -> Method:
    """The single-pass setting with the smallest ef_search reaching the adaptive default's
    recall (the largest tried when none does): single-pass HNSW tuned to the same recall."""
    default = next(m for m in methods if m.product_default)
    target = recall_of(conn, table, default, data.queries, options.k, truth)
    singles = sorted((m for m in methods if m.family == SINGLE_PASS),
                     key=lambda m: m.ef_search or 0)
    for method in singles:
        if recall_of(conn, table, method, data.queries, options.k, truth) >= target:
            return replace(method, name=f"{method.name} (tuned)")
    return replace(singles[-1], name=f"{singles[-1].name} (tuned, short of the recall)")


def run_rows_sweep(
    dsn: str,
    data: BenchData,
    sizes: Sequence[int],
    options: SearchBenchOptions | None = None,
    *,
    command: str | None = None,
    on_step: Step = _noop_step,
    on_progress: Progress | None = None,
) -> RowsSweepReport:
    """At each table size (the first ``n`` rows of ``data``): adaptive as shipped, single-pass
    HNSW tuned to its recall, and prefix-only at pgvector's default ef_search."""
    options = options or SearchBenchOptions()
    progress: Progress = on_progress or (lambda _label, _done, _total: None)
    sizes = sorted(set(sizes))
    if not sizes or sizes[0] < 1 or sizes[-1] > len(data.vectors):
        raise InvalidConfigError(
            f"row counts must be between 1 and {len(data.vectors):,}, got {list(sizes)}")
    started = time.perf_counter()
    conns = _clients(dsn, options)
    points = []
    try:
        environment = _environment(conns[0], command)
        for rows in sizes:
            subset = data.head(rows)
            on_step(f"{rows:,} rows")
            loaded = _load(conns[0], dsn, subset, options, full_index=True, on_step=on_step,
                           on_progress=progress)
            truth = TrueNeighbours(subset.vectors, subset.external_ids, subset.queries,
                                   options.k)
            every = _methods(loaded.table, options)
            on_step("tuning single-pass ef_search to the adaptive recall")
            chosen = [
                next(m for m in every if m.family == ADAPTIVE and m.product_default),
                _tuned_single_pass(conns[0], loaded.table, every, subset, truth, options),
                next(m for m in every if m.family == PREFIX_ONLY),
            ]
            on_step(f"measuring {len(chosen)} methods at {rows:,} rows")
            measured = measure(
                conns, loaded.table, chosen, subset.queries, truth, loaded.indexes,
                k=options.k, rounds=options.rounds, clients=options.clients, seed=options.seed,
                buffer_sample=options.buffer_sample, on_progress=progress)
            points.append(SweepPoint(rows=rows, load_seconds=loaded.load_seconds,
                                     table_bytes=loaded.table_bytes,
                                     indexes=list(loaded.indexes.values()),
                                     methods=measured.results,
                                     round_orders=measured.round_orders))
    finally:
        try:
            _drop(conns[0], options)
        finally:
            for conn in conns:
                conn.close()
    return RowsSweepReport(
        kind="rows-sweep", data=_data_info(data, sizes[-1], options),
        environment=replace(environment, load_average_end=_load_average()),
        options=_options_dict(options, sizes=list(sizes)), points=points,
        seconds=time.perf_counter() - started,
    )
