"""``mrl-pg bench``: every search method side by side; ``mrl-pg bench-load``: load rates."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from mrl_pg.bench.load import bench_index, bench_load
from mrl_pg.bench.search import (
    GENERATORS,
    BenchData,
    RowsSweepReport,
    SearchBenchOptions,
    SearchBenchReport,
    file_data,
    kept_table_name,
    run_rows_sweep,
    run_search_bench,
    search_markdown,
    sweep_markdown,
    synthetic_data,
    to_json,
)
from mrl_pg.cli._app import dsn_option
from mrl_pg.cli._progress import progress_bar
from mrl_pg.config import PGVECTOR_DEFAULT_EF_CONSTRUCTION
from mrl_pg.db import connect
from mrl_pg.migrate import upgrade


def _counts(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part.strip()) for part in text.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}",
                                 param_hint=option) from None
    if not values or min(values) < 1:
        raise click.BadParameter(f"expected positive integers, got {text!r}", param_hint=option)
    return values


def _command_line(ctx: click.Context) -> str:
    # Rebuilt from the parsed options (every value, defaults included), without the DSN,
    # which may hold a password.
    parts = ["mrl-pg", ctx.info_name or "bench"]
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if isinstance(param, click.Option) and value is False and param.secondary_opts:
            parts.append(param.secondary_opts[0])  # --no-exact, --no-tune
            continue
        if not isinstance(param, click.Option) or param.name == "dsn" or value in (None, False):
            continue
        parts.append(param.opts[0] if value is True else f"{param.opts[0]} {value}")
    return " ".join(parts)


class _Progress:
    """Elapsed-time step lines and one progress bar per phase, all on stderr."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.bars: dict[str, Any] = {}

    def step(self, label: str) -> None:
        self.close()
        click.echo(f"{time.perf_counter() - self.started:7.1f}s  {label}", err=True)

    def progress(self, label: str, done: int, total: int | None) -> None:
        bar = self.bars.get(label)
        if bar is None:
            unit = {"load": "rows"}.get(label, "tuples" if "index" in label else "steps")
            bar = self.bars[label] = progress_bar(total, label, unit=unit)
        if total is not None and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def _write(out: Path, report: SearchBenchReport | RowsSweepReport, markdown: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(to_json(report) + "\n")
    (out / "bench.md").write_text(markdown)
    try:
        from mrl_pg.bench.plot import plot_search, plot_sweep

        if isinstance(report, SearchBenchReport):
            plot_search(report, out / "bench.png")
        else:
            plot_sweep(report, out / "bench.png")
    except ImportError:
        click.echo("note: matplotlib is not installed, so bench.png was skipped "
                   "(pip install 'mrl_pg[bench]')", err=True)
        return
    click.echo(f"wrote {out / 'bench.json'}, {out / 'bench.md'} and {out / 'bench.png'}",
               err=True)


@click.command()
@dsn_option
@click.option("--rows", default=None, metavar="N[,N...]",
              help="Rows to load (default 100000, or every row of --vectors); several "
                   "comma-separated sizes run the growth sweep instead (adaptive default, "
                   "single-pass tuned to its recall, prefix-only at each size).")
@click.option("--queries", "query_count", type=int, default=200, show_default=True,
              help="Queries to time: drawn apart from the synthetic rows, or the first N "
                   "of --queries-file (which must not repeat rows of --vectors).")
@click.option("--dim", "full_dim", type=int, default=1536, show_default=True,
              help="Width of the synthetic vectors (1536 or 3072 like OpenAI's models; "
                   "above 2000 the single-pass index is on halfvec).")
@click.option("--prefix-dim", type=int, default=512, show_default=True,
              help="Prefix dimension of the MRL table's HNSW index.")
@click.option("--generator", type=click.Choice(GENERATORS), default="mrl", show_default=True,
              help="Synthetic data: mrl (the project's generator: 200 Gaussian clusters) or "
                   "powerlaw (64 Zipf-sized clusters, power-law spectrum, heavy tails).")
@click.option("--confirm-rounds", type=int, default=5, show_default=True,
              help="Time the frontier's candidates again, alone, in this many interleaved "
                   "rounds (0: report the sweep's figures).")
@click.option("--exact/--no-exact", default=True, show_default=True,
              help="Measure exact search (a sequential scan of every row) too.")
@click.option("--reuse", is_flag=True,
              help="Keep the loaded table and both indexes (one table per generator, size and "
                   "seed, or per file), and reuse them on later runs when the rows and index "
                   "builds match: no load, no build. Point --dsn (or MRL_PG_HOME) at a "
                   "persistent data directory.")
@click.option("--memory-bound", "memory_bound", type=click.Path(file_okay=False, path_type=Path),
              default=None, metavar="SERVER_HOME",
              help="Memory-bound mode: restart the embedded server whose data is under "
                   "SERVER_HOME (dedicated to benchmarks) with debug_io_direct = data and "
                   "shared_buffers at each --cache-fractions of the full index; warm-up, then "
                   "interleaved rounds of adaptive and single-pass search; then cold queries. "
                   "Its settings are put back at the end. Implies --reuse; --dsn is ignored.")
@click.option("--cache-fractions", default="1/8,1/4,1/2", show_default=True,
              help="Memory-bound shared_buffers sizes, as fractions of the full index (sizes "
                   "that cannot hold the prefix index are skipped).")
@click.option("--cold-queries", type=int, default=20, show_default=True,
              help="Memory-bound: queries per setting run cold (0: none).")
@click.option("--pgbench", "pgbench_seconds", type=int, default=None, metavar="SECONDS",
              help="pgbench mode: the table's SQL function (as tuned) and single-pass SELECTs "
                   "under pgbench -c N -T SECONDS, queries picked at random from a table of "
                   "the held-out queries; implies --reuse.")
@click.option("--pgbench-clients", default="1,2", show_default=True,
              help="pgbench mode: client counts.")
@click.option("--pgbench-ef-search", default="40,60,80,120,200", show_default=True,
              help="pgbench mode: hnsw.ef_search values of the single-pass scripts.")
@click.option("--vectors", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Real embeddings to load instead: an (n, dim) .npy file.")
@click.option("--queries-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Query embeddings for --vectors: an (m, dim) .npy file.")
@click.option("--rounds", type=int, default=3, show_default=True,
              help="Interleaved rounds; every method runs once per round, QPS is the median.")
@click.option("--clients", default="1,2", show_default=True,
              help="Client counts to measure QPS with (one connection and thread each).")
@click.option("--ef-search", default="40,60,80,100,120,160,200,300,400,600,800",
              show_default=True,
              help="hnsw.ef_search values for single-pass HNSW on the full embedding.")
@click.option("--prefix-ef-search", default="40,60,80,120,160,200", show_default=True,
              help="hnsw.ef_search values for prefix-only HNSW (LIMIT k; it also runs at "
                   "every pool and ef_search of the adaptive grid).")
@click.option("--oversample", default="1,2,3,4,6,8", show_default=True,
              help="Oversample values for the adaptive grid.")
@click.option("--adaptive-ef-search", default="40,60,80,120,160,200", show_default=True,
              help="ef_search values for the adaptive grid (besides mrl_pg's own rule).")
@click.option("--buffer-sample", type=int, default=20, show_default=True,
              help="Queries run under EXPLAIN (ANALYZE, BUFFERS) per method.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory for bench.json, bench.md and bench.png.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the synthetic data and of the round order.")
@click.option("--keep-table", is_flag=True, help="Keep the benchmark table afterwards.")
@click.option("--tune/--no-tune", "run_tune", default=True, show_default=True,
              help="Run mrl-pg tune on rows of the table first and measure its choice "
                   "as a user runs it.")
@click.option("--target-recall", type=float, default=0.99, show_default=True,
              help="Target recall for the tune step.")
@click.option("--full-ef-construction", type=int, default=None,
              help="ef_construction of the single-pass index on the full embedding "
                   "(default: the prefix index's, so both graphs get the same build effort; "
                   f"{PGVECTOR_DEFAULT_EF_CONSTRUCTION} is pgvector's default).")
@click.option("--binary-stage", is_flag=True,
              help="Also build a binary-quantized prefix index and measure adaptive search "
                   "through it (judge it on real embeddings only).")
def bench(dsn: str, rows: str | None, query_count: int, full_dim: int, prefix_dim: int,
          vectors: Path | None, queries_file: Path | None, rounds: int, clients: str,
          ef_search: str, prefix_ef_search: str, oversample: str, adaptive_ef_search: str,
          buffer_sample: int, out: Path | None, seed: int, keep_table: bool, run_tune: bool,
          target_recall: float, full_ef_construction: int | None, binary_stage: bool,
          generator: str, confirm_rounds: int, exact: bool, reuse: bool,
          memory_bound: Path | None, cache_fractions: str,
          cold_queries: int, pgbench_seconds: int | None, pgbench_clients: str,
          pgbench_ef_search: str) -> None:
    """Compare exact, single-pass HNSW, the Supabase recipe, prefix-only and adaptive search
    side by side on the same data and server, in interleaved rounds.

    Prints a markdown table (recall@10, QPS with 1 and 2 clients, p50/p99, buffers per
    query, index size and build time); --out also writes JSON and a recall-vs-QPS plot.
    The defaults (100,000 x 1536, 200 queries, 3 rounds) are estimated at 7 to 10 minutes
    on 2 cores.
    """
    ctx = click.get_current_context()
    sizes = _counts(rows, "--rows") if rows else None
    fractions = _fractions(cache_fractions)
    if (vectors is None) != (queries_file is None):
        raise click.UsageError("--vectors and --queries-file go together")
    options = SearchBenchOptions(
        prefix_dim=prefix_dim, rounds=rounds, clients=_counts(clients, "--clients"), seed=seed,
        ef_search=_counts(ef_search, "--ef-search"),
        prefix_ef_search=_counts(prefix_ef_search, "--prefix-ef-search"),
        oversample=_counts(oversample, "--oversample"),
        adaptive_ef_search=_counts(adaptive_ef_search, "--adaptive-ef-search"),
        buffer_sample=buffer_sample, keep_table=keep_table, tune=run_tune,
        target_recall=target_recall, full_ef_construction=full_ef_construction,
        binary_stage=binary_stage, reuse=reuse, exact=exact, confirm_rounds=confirm_rounds,
    )
    ui = _Progress()
    ui.step("migrating the database to head")
    if memory_bound is not None:
        from mrl_pg.server import EmbeddedServer

        dsn = EmbeddedServer(memory_bound).start()
    upgrade(dsn)
    largest = max(sizes) if sizes else None
    data: BenchData
    if vectors is not None and queries_file is not None:
        ui.step(f"reading {vectors} and {queries_file}")
        data = file_data(vectors, queries_file, rows=largest, query_count=query_count)
    else:
        ui.step(f"generating {largest or 100_000:,} x {full_dim} Matryoshka-like vectors "
                f"({generator} generator)")
        data = synthetic_data(largest or 100_000, full_dim, query_count, seed=seed,
                              generator=generator)
    if reuse or memory_bound is not None or pgbench_seconds is not None:
        options = replace(options, reuse=True, table=kept_table_name(
            data, None if vectors is not None else generator))
    command = _command_line(ctx)
    if memory_bound is not None:
        _memory_bound(memory_bound, data, options, fractions, cold_queries, rounds,
                      command, ui, out)
        return
    if pgbench_seconds is not None:
        from mrl_pg.bench.pgbench import run_pgbench_bench

        markdown = run_pgbench_bench(
            dsn, data, options, ef_search=_counts(pgbench_ef_search, "--pgbench-ef-search"),
            clients=_counts(pgbench_clients, "--pgbench-clients"), seconds=pgbench_seconds,
            command=command, on_step=ui.step)
        ui.step("done")
        click.echo(markdown, nl=False)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / "pgbench.md").write_text(markdown)
        return
    report: SearchBenchReport | RowsSweepReport
    if sizes and len(sizes) > 1:
        report = run_rows_sweep(dsn, data, sizes, options, command=command,
                                on_step=ui.step, on_progress=ui.progress)
        markdown = sweep_markdown(report)
    else:
        report = run_search_bench(dsn, data, options, command=command,
                                  on_step=ui.step, on_progress=ui.progress)
        markdown = search_markdown(report)
    ui.step("done")
    click.echo(markdown, nl=False)
    if out is not None:
        _write(out, report, markdown)


def _fractions(text: str) -> tuple[float, ...]:
    values = []
    for part in text.split(","):
        part = part.strip()
        try:
            top, _, bottom = part.partition("/")
            values.append(float(top) / float(bottom) if bottom else float(top))
        except (ValueError, ZeroDivisionError):
            raise click.BadParameter(f"expected fractions like 1/4, got {part!r}",
                                     param_hint="--cache-fractions") from None
    return tuple(values)


def _memory_bound(home: Path, data: BenchData, options: SearchBenchOptions,
                  fractions: tuple[float, ...],
                  cold_queries: int, rounds: int, command: str, ui: _Progress,
                  out: Path | None) -> None:
    from mrl_pg.bench.memory import MemoryBoundOptions, memory_markdown, run_memory_bound

    memory = MemoryBoundOptions(cache_fractions=fractions, rounds=rounds,
                                cold_queries=cold_queries)
    report = run_memory_bound(home, data, options, memory, command=command, on_step=ui.step,
                              on_progress=ui.progress)
    ui.step("done")
    markdown = memory_markdown(report)
    click.echo(markdown, nl=False)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(to_json(report) + "\n")  # type: ignore[arg-type]
        (out / "bench.md").write_text(markdown)


@click.command("bench-load")
@dsn_option
@click.option("--rows", type=int, default=50_000, show_default=True,
              help="Rows for the load benchmark.")
@click.option("--index-rows", default="50000,100000", show_default=True,
              help="Comma-separated table sizes for the index-build benchmark.")
@click.option("--skip-index", is_flag=True, help="Only run the load benchmark.")
def bench_load_command(dsn: str, rows: int, index_rows: str, skip_index: bool) -> None:
    """Measure bulk-load rows/s against a plain COPY, and HNSW build time (1536-d, 512 prefix)."""
    sizes = [int(s) for s in index_rows.split(",") if s.strip()]
    upgrade(dsn)  # the vector extension and mrl_pg's schema, as the demo does
    with connect(dsn, autocommit=True) as conn:
        click.echo(f"loading {rows:,} x 1536 rows twice (plain COPY, then mrl-pg ingest)",
                   err=True)
        load = bench_load(conn, rows=rows)
        click.echo(
            f"plain binary COPY (unindexed table): {load.plain_copy_rows_per_second:,.0f} rows/s "
            f"({load.plain_copy_seconds:.1f} s)\n"
            f"mrl_pg ingest_arrays into an empty MRL table, HNSW deferred: "
            f"{load.ingest_rows_per_second:,.0f} rows/s ({load.ingest_seconds:.1f} s)\n"
            f"ratio: {load.ratio:.2f}\n"
            f"re-run of the same rows (staging COPY + upsert, all unchanged): "
            f"{load.reload_rows_per_second:,.0f} rows/s ({load.reload_seconds:.1f} s)"
        )
        if skip_index:
            return
        for result in bench_index(
            conn, sizes=sizes,
            on_size=lambda n: click.echo(f"building the index on {n:,} rows", err=True),
        ):
            click.echo(
                f"HNSW build, {result.rows:,} rows: {result.seconds:.1f} s, "
                f"{result.index_bytes / 2**20:.0f} MB (maintenance_work_mem "
                f"{result.maintenance_work_mem / 2**20:.0f} MB, "
                f"{result.parallel_workers} parallel workers)"
            )


COMMANDS = [bench, bench_load_command]
