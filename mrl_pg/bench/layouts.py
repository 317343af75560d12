"""The two prefix layouts side by side: a stored generated column, or an expression index.

    python -m mrl_pg.bench.layouts [--rows 100000] [--dim 1536] [--prefix-dim 512]
                                 [--queries 200] [--rounds 5] [--buffer-sample 20]

Both hold the same prefix, ``l2_normalize(subvector(embedding, 1, P))::halfvec(P)``:

- "column": a table mrl_pg creates (:func:`mrl_pg.install`), loaded with
  :func:`mrl_pg.ingest_arrays`, whose STORED generated ``halfvec(P)`` column carries an
  HNSW index (:func:`mrl_pg.index.build_hnsw_index`, built after the load);
- "expression": the user's own ``(id bigint PRIMARY KEY, embedding vector(N))``,
  loaded with COPY and adopted (:func:`mrl_pg.index.adopt.adopt_table`): an HNSW index on the
  prefix expression, no new column.

The same vectors go into both tables, in a database of its own (dropped at the end),
both present at once. Then, with the product defaults (no tuning row, oversample and
ef_search unset): a plan check and shared buffers per query from a sample of
``EXPLAIN (ANALYZE, BUFFERS)`` (a plan that does not walk its HNSW index stops the
run), recall@10 against exact search on the same table, and latency and QPS with one
client in interleaved rounds (the layouts take turns; the first of each round
alternates). Progress goes to stderr, the figures to stdout.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from mrl_pg import TableConfig, ingest_arrays, install
from mrl_pg import psycopg as client
from mrl_pg.bench.search import PlanGuardError
from mrl_pg.bench.synthetic import make_corpus, make_queries
from mrl_pg.db import configure_connection
from mrl_pg.index.adopt import adopt_table
from mrl_pg.index.build import build_hnsw_index, drop_hnsw_index
from mrl_pg.schema.catalog import table_config
from mrl_pg.statement.plans import plan_nodes, uses_index
from mrl_pg.statement.tuning import DEFAULT_TUNING

COLUMN, EXPRESSION = "column", "expression"
TABLES = {COLUMN: "layout_column", EXPRESSION: "layout_expression"}
DATABASE = "mrl_pg_layouts_bench"
SEED = 0

Step = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# --- building the two tables -------------------------------------------------------------

@dataclass(frozen=True)
class Layout:
    """One table holding the vectors: how long it took to load and index, and its sizes."""

    name: str
    config: TableConfig
    load_seconds: float = 0.0
    index_seconds: float = 0.0
    index_bytes: int = 0
    table_bytes: int = 0
    """``pg_table_size``: heap, TOAST, free space and visibility maps; no index."""
    heap_bytes: int = 0
    toast_bytes: int = 0
    total_bytes: int = 0
    """``pg_total_relation_size``: the table and all its indexes."""

    def row_numbers(self, results: Sequence[client.SearchResult]) -> list[int]:
        """Which loaded row (from 0) each result is: both tables number rows alike."""
        key = "id" if self.config.adopted else "external_id"
        return [int(r[key]) for r in results]


def _table(schema: str | None, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name) if schema else sql.Identifier(name)


def load_column(
    conn: psycopg.Connection[Any], vectors: npt.NDArray[np.float32], prefix_dim: int, *,
    schema: str | None = None, name: str = TABLES[COLUMN],
) -> Layout:
    """Create mrl_pg's table (HNSW index dropped until :func:`index_column`) and ingest."""
    config = TableConfig(name, full_dim=int(vectors.shape[1]), prefix_dim=prefix_dim,
                         schema=schema)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(config.table))
    install(conn, config, with_search_function=False)
    drop_hnsw_index(conn, config)
    started = time.perf_counter()
    ingest_arrays(conn, config, vectors, external_ids=[str(i) for i in range(len(vectors))])
    seconds = time.perf_counter() - started
    conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(config.table))
    return Layout(COLUMN, config, load_seconds=seconds)


def load_expression(
    conn: psycopg.Connection[Any], vectors: npt.NDArray[np.float32], *,
    schema: str | None = None, name: str = TABLES[EXPRESSION],
) -> float:
    """Create the user's plain table and COPY the vectors in (one transaction); seconds."""
    table = _table(schema, name)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(table))
    conn.execute(sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, embedding vector({}))").format(
        table, sql.Literal(int(vectors.shape[1]))))
    copy = sql.SQL("COPY {} (id, embedding) FROM STDIN (FORMAT BINARY)").format(table)
    started = time.perf_counter()
    with conn.transaction(), conn.cursor() as cur, cur.copy(copy) as out:
        out.set_types(["int8", "vector"])
        for i, vector in enumerate(vectors):
            out.write_row((i, vector))
    seconds = time.perf_counter() - started
    conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(table))
    return seconds


def index_column(conn: psycopg.Connection[Any], layout: Layout, dsn: str) -> Layout:
    """Build the HNSW index on the stored column (a plain CREATE INDEX, as ``mrl-pg index
    build`` does on mrl_pg's own table) and record the sizes."""
    report = build_hnsw_index(conn, layout.config, dsn=dsn)
    return _with_sizes(conn, replace(layout, index_seconds=report.seconds))


def adopt_expression(
    conn: psycopg.Connection[Any], load_seconds: float, prefix_dim: int, *,
    schema: str | None = None, name: str = TABLES[EXPRESSION],
) -> Layout:
    """Adopt the plain table (CREATE INDEX CONCURRENTLY on the prefix expression, as
    ``adopt_table`` always builds it) and record the sizes."""
    config = table_config(conn, name, embedding="embedding", prefix_dim=prefix_dim,
                                    schema=schema)
    report = adopt_table(conn, config)
    if report.index is None:
        raise RuntimeError(f"{config.qualified_name} already had its index; nothing was built")
    return _with_sizes(conn, Layout(EXPRESSION, config, load_seconds=load_seconds,
                                    index_seconds=report.index.seconds))


def _with_sizes(conn: psycopg.Connection[Any], layout: Layout) -> Layout:
    config = layout.config
    row = conn.execute(
        "SELECT pg_relation_size(to_regclass(%(index)s)), pg_table_size(c.oid), "
        "pg_relation_size(c.oid), coalesce(pg_table_size(nullif(c.reltoastrelid, 0)), 0), "
        "pg_total_relation_size(c.oid) FROM pg_class c WHERE c.oid = to_regclass(%(table)s)",
        {"index": config.qualified(config.hnsw_index_name).as_string(conn),
         "table": config.table.as_string(conn)}).fetchone()
    if row is None or row[0] is None:
        raise RuntimeError(f"{config.qualified_name} or its HNSW index is missing")
    index, table, heap, toast, total = (int(v) for v in row)
    return replace(layout, index_bytes=index, table_bytes=table, heap_bytes=heap,
                   toast_bytes=toast, total_bytes=total)


def build_layouts(
    conn: psycopg.Connection[Any], dsn: str, vectors: npt.NDArray[np.float32], prefix_dim: int,
    *, schema: str | None = None, on_step: Step = _quiet,
) -> dict[str, Layout]:
    """Both tables from the same vectors: both loads first, then both index builds."""
    rows, dim = vectors.shape
    on_step(f"column: install + ingest_arrays of {rows:,} x {dim}")
    column = load_column(conn, vectors, prefix_dim, schema=schema)
    on_step(f"expression: CREATE TABLE + COPY of {rows:,} x {dim}")
    copied = load_expression(conn, vectors, schema=schema)
    on_step(f"column: HNSW index on the stored halfvec({prefix_dim}) column")
    column = index_column(conn, column, dsn)
    on_step(f"expression: adopt_table (HNSW index on the prefix expression, {prefix_dim})")
    expression = adopt_expression(conn, copied, prefix_dim, schema=schema)
    for layout in (column, expression):
        conn.execute(sql.SQL("ANALYZE {}").format(layout.config.table))
    return {COLUMN: column, EXPRESSION: expression}


def has_column(conn: psycopg.Connection[Any], config: TableConfig, column: str) -> bool:
    """Whether the table has a (live) column of that name."""
    row = conn.execute(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s "
        "AND attnum > 0 AND NOT attisdropped",
        (config.table.as_string(conn), column)).fetchone()
    return bool(row and row[0])


# --- measuring ---------------------------------------------------------------------------

@dataclass
class Figures:
    """What one layout measured: recall, timings over every round, plans and buffers."""

    layout: str
    recall: float = 0.0
    truth: list[list[int]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    round_qps: list[float] = field(default_factory=list)
    buffers: list[float] = field(default_factory=list)
    plans_on_index: int = 0
    plans_checked: int = 0
    stray_plan: list[str] = field(default_factory=list)

    @property
    def qps(self) -> float:
        """Queries per second over all rounds together (one client)."""
        return len(self.latencies) / sum(self.latencies) if self.latencies else 0.0

    def ms(self, percentile: float) -> float:
        return float(np.percentile(np.asarray(self.latencies) * 1000, percentile))

    @property
    def median_buffers(self) -> float:
        return float(statistics.median(self.buffers)) if self.buffers else 0.0


def exact_rows(
    conn: psycopg.Connection[Any], layout: Layout, queries: npt.NDArray[np.float32], k: int,
) -> list[list[int]]:
    """Each query's true top k on this table (:func:`mrl_pg.psycopg.exact_search`)."""
    return [layout.row_numbers(client.exact_search(conn, layout.config, q, k=k))
            for q in queries]


def check_plans(
    conn: psycopg.Connection[Any], layout: Layout, queries: npt.NDArray[np.float32], k: int,
    figures: Figures,
) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) each query: does it walk the HNSW index, and its buffers."""
    for query in queries:
        plan = client.explain(conn, layout.config, query, k=k, analyze=True, as_json=True)
        top = plan[0]["Plan"]  # a node's buffers include its children's and subplans'
        figures.buffers.append(float(top.get("Shared Hit Blocks", 0))
                               + float(top.get("Shared Read Blocks", 0)))
        figures.plans_checked += 1
        if uses_index(plan, layout.config.hnsw_index_name):
            figures.plans_on_index += 1
        elif not figures.stray_plan:
            figures.stray_plan = plan_nodes(plan)


def guard(layouts: dict[str, Layout], figures: dict[str, Figures]) -> None:
    """:class:`PlanGuardError` unless every checked plan walked its layout's HNSW index."""
    stray = [f for f in figures.values() if f.plans_on_index < f.plans_checked]
    if stray:
        raise PlanGuardError(
            "; ".join(f"{f.layout}: {f.plans_checked - f.plans_on_index} of {f.plans_checked} "
                      f"plans do not walk {layouts[f.layout].config.hnsw_index_name}: "
                      f"{' > '.join(f.stray_plan)}" for f in stray),
            method=", ".join(f.layout for f in stray), nodes=stray[0].stray_plan)


def search_rows(
    conn: psycopg.Connection[Any], layout: Layout, queries: npt.NDArray[np.float32], k: int,
) -> list[list[int]]:
    """Adaptive search with the product defaults, untimed: rows found for each query."""
    return [layout.row_numbers(client.search(conn, layout.config, q, k=k)) for q in queries]


def _timed_pass(
    conn: psycopg.Connection[Any], layout: Layout, queries: npt.NDArray[np.float32], k: int,
    figures: Figures,
) -> None:
    started = time.perf_counter()
    for query in queries:
        t0 = time.perf_counter()
        client.search(conn, layout.config, query, k=k)
        figures.latencies.append(time.perf_counter() - t0)
    figures.round_qps.append(len(queries) / (time.perf_counter() - started))


def recall_at(found: list[list[int]], truth: list[list[int]], k: int) -> float:
    """Mean share of each query's true top k that the search returned."""
    return float(np.mean([len(set(f) & set(t)) / min(k, len(t)) if t else 1.0
                          for f, t in zip(found, truth, strict=True)]))


def measure(
    conn: psycopg.Connection[Any], layouts: dict[str, Layout], queries: npt.NDArray[np.float32],
    *, k: int = 10, rounds: int = 3, buffer_sample: int = 20, on_step: Step = _quiet,
) -> dict[str, Figures]:
    """Plans and buffers first (a stray plan stops here), then recall against exact search
    (which also warms the caches), then ``rounds`` timed passes per layout, alternating
    which layout goes first."""
    figures = {name: Figures(name) for name in layouts}
    for name, layout in layouts.items():
        on_step(f"{name}: EXPLAIN (ANALYZE, BUFFERS) of {min(buffer_sample, len(queries))} "
                "queries")
        check_plans(conn, layout, queries[:buffer_sample], k, figures[name])
    guard(layouts, figures)
    for name, layout in layouts.items():
        on_step(f"{name}: exact search and adaptive search of {len(queries)} queries (recall)")
        figures[name].truth = exact_rows(conn, layout, queries, k)
        figures[name].recall = recall_at(search_rows(conn, layout, queries, k),
                                         figures[name].truth, k)
    order = list(layouts)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            on_step(f"round {r + 1}/{rounds}: {name}, {len(queries)} searches")
            _timed_pass(conn, layouts[name], queries, k, figures[name])
    return figures


# --- the report --------------------------------------------------------------------------

def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def report_lines(layouts: dict[str, Layout], figures: dict[str, Figures]) -> list[str]:
    """The side-by-side table, a ratio column expression/column, one row per figure."""
    c, e = layouts[COLUMN], layouts[EXPRESSION]
    fc, fe = figures[COLUMN], figures[EXPRESSION]
    rows: list[tuple[str, str, str, str]] = [
        ("load seconds", f"{c.load_seconds:.1f}", f"{e.load_seconds:.1f}",
         _ratio(e.load_seconds, c.load_seconds)),
        ("index build seconds", f"{c.index_seconds:.1f}", f"{e.index_seconds:.1f}",
         _ratio(e.index_seconds, c.index_seconds)),
        ("HNSW index size", _mib(c.index_bytes), _mib(e.index_bytes),
         _ratio(e.index_bytes, c.index_bytes)),
        ("table size (pg_table_size)", _mib(c.table_bytes), _mib(e.table_bytes),
         _ratio(e.table_bytes, c.table_bytes)),
        ("  of which heap", _mib(c.heap_bytes), _mib(e.heap_bytes), ""),
        ("  of which TOAST", _mib(c.toast_bytes), _mib(e.toast_bytes), ""),
        ("table + all indexes", _mib(c.total_bytes), _mib(e.total_bytes),
         _ratio(e.total_bytes, c.total_bytes)),
        ("exact top 10 same on both", "",
         f"{sum(a == b for a, b in zip(fc.truth, fe.truth, strict=True))}/{len(fc.truth)}", ""),
        ("recall@10 vs exact search", f"{fc.recall:.3f}", f"{fe.recall:.3f}", ""),
        ("QPS, 1 client", f"{fc.qps:,.1f}", f"{fe.qps:,.1f}", _ratio(fe.qps, fc.qps)),
        ("  QPS per round", " ".join(f"{q:.0f}" for q in fc.round_qps),
         " ".join(f"{q:.0f}" for q in fe.round_qps), ""),
        ("p50 ms", f"{fc.ms(50):.2f}", f"{fe.ms(50):.2f}", _ratio(fe.ms(50), fc.ms(50))),
        ("p99 ms", f"{fc.ms(99):.2f}", f"{fe.ms(99):.2f}", _ratio(fe.ms(99), fc.ms(99))),
        ("shared buffers / query (median)", f"{fc.median_buffers:.0f}",
         f"{fe.median_buffers:.0f}", _ratio(fe.median_buffers, fc.median_buffers)),
        ("plans walking the HNSW index", f"{fc.plans_on_index}/{fc.plans_checked}",
         f"{fe.plans_on_index}/{fe.plans_checked}", ""),
    ]
    header = ("figure", COLUMN, EXPRESSION, "expr/col")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]

    def line(r: tuple[str, str, str, str]) -> str:
        return "  ".join([r[0].ljust(widths[0]), *(v.rjust(w) for v, w in zip(r[1:], widths[1:],
                                                                              strict=True))])

    return [line(header), "-" * len(line(header)), *(line(r) for r in rows)]


def _load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--prefix-dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--buffer-sample", type=int, default=20,
                        help="queries run under EXPLAIN (ANALYZE, BUFFERS) per layout")
    parser.add_argument("--dsn", default=None,
                        help="server (default: MRL_PG_DSN, DATABASE_URL or embedded); "
                             f"a database {DATABASE} is created there and dropped")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args()
    if args.rounds < 3 or min(args.rows, args.queries, args.buffer_sample) < 1:
        parser.error("--rounds must be at least 3; --rows, --queries, --buffer-sample positive")
    from mrl_pg.server import resolve_dsn

    began = time.perf_counter()

    def step(message: str) -> None:
        print(f"[{time.perf_counter() - began:6.0f} s] {message}", file=sys.stderr, flush=True)

    server = args.dsn or resolve_dsn(embedded=True)
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(DATABASE)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    dsn = make_conninfo(server, dbname=DATABASE)
    try:
        step(f"generating {args.rows:,} x {args.dim} vectors and {args.queries} queries")
        vectors = make_corpus(args.rows, args.dim, seed=SEED).embeddings
        queries = make_queries(args.queries, args.dim, seed=SEED)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            configure_connection(conn)
            layouts = build_layouts(conn, dsn, vectors, args.prefix_dim, on_step=step)
            del vectors
            try:
                figures = measure(conn, layouts, queries, rounds=args.rounds,
                                  buffer_sample=args.buffer_sample, on_step=step)
            except PlanGuardError as exc:
                print(f"PLAN GUARD FAILED: {exc}", flush=True)
                raise SystemExit(f"plan guard failed: {exc}") from exc
            versions = conn.execute(
                "SELECT current_setting('server_version'), current_setting('shared_buffers'), "
                "(SELECT extversion FROM pg_extension WHERE extname = 'vector')").fetchone()
        _print_report(args, layouts, figures, versions, time.perf_counter() - began)
    finally:
        if not args.keep:
            with psycopg.connect(server, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(DATABASE)))


def _size_note(args: argparse.Namespace, layouts: dict[str, Layout]) -> str:
    column, expression = layouts[COLUMN], layouts[EXPRESSION]
    prefix_bytes = args.rows * (2 * args.prefix_dim + 8)  # halfvec: 2 bytes a dim + header
    rows_per_page = args.rows / max(1, column.heap_bytes // 8192)
    difference = column.table_bytes - expression.table_bytes
    text = (f"table size: the column table stores {_mib(prefix_bytes)} of prefixes "
            f"(halfvec({args.prefix_dim}), {2 * args.prefix_dim + 8} bytes a row) beside the "
            f"full vectors, all inline (toast_tuple_target 8160): {rows_per_page:.2f} rows per "
            f"8 kB heap page; its table is {_mib(abs(difference))} "
            f"{'larger' if difference >= 0 else 'smaller'} than the plain one. ")
    if expression.toast_bytes > expression.heap_bytes:
        text += ("The user's plain table keeps PostgreSQL's default toast_tuple_target, so its "
                 f"vectors ({4 * args.dim + 8} bytes, over 2 kB) were moved out of line to TOAST "
                 "in ~2 kB chunks: a re-rank reads a vector's chunks through the TOAST index "
                 "instead of one heap page per candidate.")
        if rows_per_page < 1.5:
            text += (" With one row per heap page the prefix sits in space the page would "
                     "leave empty anyway, and TOAST's chunks waste about as much, so the sizes "
                     "come out close.")
    else:
        text += "The plain table's vectors (under 2 kB each) stayed inline, no TOAST."
    return text


def _print_report(args: argparse.Namespace, layouts: dict[str, Layout],
                  figures: dict[str, Figures], versions: Any, seconds: float) -> None:
    pg, shared_buffers, pgvector = versions if versions else ("?", "?", "?")
    prefix = f"l2_normalize(subvector(embedding, 1, {args.prefix_dim}))::halfvec({args.prefix_dim})"
    print(f"$ python -m mrl_pg.bench.layouts {shlex.join(sys.argv[1:])}".rstrip())
    print(f"PostgreSQL {pg}, pgvector {pgvector}, shared_buffers {shared_buffers}; "
          f"{os.cpu_count()} CPUs; load average at the end {_load_average()}")
    pool = DEFAULT_TUNING.pool
    print(f"{args.rows:,} rows of vector({args.dim}), the same seeded Matryoshka-like vectors "
          f"in both tables; prefix {prefix}; {args.queries} held-out queries; k=10, product "
          f"defaults (no tuning row: oversample {DEFAULT_TUNING.oversample}, pool {pool}, "
          f"hnsw.ef_search {DEFAULT_TUNING.ef_search_for(pool)})")
    print()
    print("\n".join(report_lines(layouts, figures)))
    print()
    notes = [
        "load: column = mrl_pg.ingest_arrays into the empty table (numpy checks of the "
        "array, binary COPY in 5,000-row batches, the generated prefix column computed per "
        "row, CHECK constraints, primary key, unique external_id and metadata GIN maintained; "
        "HNSW index dropped until after the load); expression = one binary COPY of (id, "
        "embedding) in one transaction, primary key maintained. Neither includes CREATE "
        "TABLE or the VACUUM ANALYZE that follows.",
        "index build: column = build_hnsw_index, a plain CREATE INDEX on the stored column "
        "(what `mrl-pg index build` does on mrl_pg's own table); expression = adopt_table's "
        "CREATE INDEX CONCURRENTLY on the expression (always concurrent: it waits for older "
        "transactions and validates with a second pass), same m, ef_construction, "
        "maintenance_work_mem and worker policy. Each is the CREATE INDEX statement alone. "
        "Rebuilt in the same mode at 100,000 x 1536, the expression index still took longer "
        "(56-62 s against 27-53 s for the column, plain or concurrent): its build reads every "
        "vector, from TOAST, and computes the prefix, where the column's reads the stored one.",
        _size_note(args, layouts),
        "latency and QPS: one client, every query once per round, rounds interleaved (the "
        "layouts take turns, the first of each round alternating); QPS = searches / seconds "
        "over all rounds, p50/p99 over all searches. Other work on this machine adds noise "
        "to these; shared buffers per query (hit + read at the plan's top node, median of "
        f"{args.buffer_sample} EXPLAIN (ANALYZE, BUFFERS) runs per layout) does not: it is "
        "the noise-free figure.",
        "recall@10: each layout against mrl_pg.psycopg.exact_search on its own table (the "
        "'exact top 10' row counts the queries whose true neighbours are the same rows in "
        "both). HNSW draws each element's level at random, so two builds of the same index "
        "differ: at 100,000 x 1536, runs of this benchmark and rebuilds of either index "
        "(plain and concurrent) gave recall@10 between about 0.97 and 0.99 for either "
        "layout; a gap of that size is build variance, not the layout.",
        "plan guard: every sampled plan must walk its layout's HNSW index "
        f"({layouts[COLUMN].config.hnsw_index_name}, "
        f"{layouts[EXPRESSION].config.hnsw_index_name}), or the run stops with an error.",
    ]
    for note in notes:
        print(f"- {note}")
    print()
    print(f"total {seconds:.0f} s")


if __name__ == "__main__":
    main()
