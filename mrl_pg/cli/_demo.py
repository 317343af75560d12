"""``mrl-pg demo``: exact against adaptive search, side by side; ``--text`` embeds real text."""

from __future__ import annotations

import time
from typing import Any

import click

from mrl_pg.cli._app import dsn_option
from mrl_pg.cli._progress import progress_bar
from mrl_pg.db import connect
from mrl_pg.demo.vectors import DemoOptions, DemoReport, run_demo
from mrl_pg.migrate import upgrade


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MB"


def render_report(report: DemoReport, total_seconds: float) -> str:
    """The comparison table printed at the end of the demo."""
    o = report.options
    rows = [
        ("", "exact", f"adaptive {o.oversample}x", "prefix only"),
        ("", f"({o.full_dim}-d scan)", f"({o.prefix_dim}-d HNSW+rerank)",
         f"({o.prefix_dim}-d HNSW)"),
        (f"recall@{o.k}", *(f"{s.recall:.3f}" for s in
                            (report.exact, report.adaptive, report.prefix_only))),
        ("mean latency", *(f"{s.mean_ms:.1f} ms" for s in
                           (report.exact, report.adaptive, report.prefix_only))),
        ("p95 latency", *(f"{s.p95_ms:.1f} ms" for s in
                          (report.exact, report.adaptive, report.prefix_only))),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    table = "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )
    full_index = report.estimated_full_index_bytes
    saved = 1 - report.prefix_index_bytes / full_index if full_index else 0.0
    saved_ms = report.exact.mean_ms - report.adaptive.mean_ms
    lines = [
        f"mrl_pg demo: {o.rows:,} x {o.full_dim} synthetic Matryoshka-like vectors "
        f"(seed {o.seed}), {o.queries} queries, k={o.k}",
        "",
        table,
        f"(recall@{o.k}: share of each query's true {o.k} nearest rows, found by numpy "
        f"over all {o.rows:,} vectors)",
        "",
        f"adaptive is {report.speedup:.0f}x faster than exact at recall@{o.k} "
        f"{report.adaptive.recall:.3f}; re-ranking lifts prefix-only recall "
        f"{report.prefix_only.recall:.3f} -> {report.adaptive.recall:.3f}",
        f"time saved per query: {saved_ms:.1f} ms "
        f"({o.queries} queries: {saved_ms * o.queries / 1000:.1f} s)",
        f"table (heap + TOAST):        {_mb(report.table_bytes)}",
        f"prefix HNSW index:           {_mb(report.prefix_index_bytes)} "
        f"(halfvec({o.prefix_dim}), built in {report.index_seconds:.1f} s)",
        f"full-dim HNSW index (est.):  {_mb(full_index)} (vector({o.full_dim})); "
        f"storage saved: {_mb(full_index - report.prefix_index_bytes)} ({saved:.0%})",
        f"load: {o.rows:,} rows in {report.load_seconds:.1f} s "
        f"({report.load_rows_per_second:,.0f} rows/s); total {total_seconds:.0f} s",
    ]
    lines += [f"warning: {w}" for w in report.index_warnings]
    return "\n".join(lines)


@click.command()
@dsn_option
@click.option("--rows", type=int, default=50_000, show_default=True, help="Corpus size.")
@click.option("--queries", type=int, default=200, show_default=True, help="Queries to run.")
@click.option("--dim", "full_dim", type=int, default=1536, show_default=True,
              help="Full dimension.")
@click.option("--prefix-dim", type=int, default=512, show_default=True,
              help="Prefix dimension.")
@click.option("-k", type=int, default=10, show_default=True, help="Results per query.")
@click.option("--oversample", type=int, default=8, show_default=True,
              help="Candidates per result.")
@click.option("--seed", type=int, default=0, show_default=True, help="Corpus seed.")
@click.option("--text", is_flag=True,
              help="Embed the shipped text corpus with the OpenAI SDK (needs OPENAI_API_KEY, "
                   "or OPENAI_BASE_URL for a compatible server) and answer questions.")
@click.option("--model", default=None, help="Embedding model for --text.")
@click.option("--dimensions", type=int, default=None, help="Embedding dimensions for --text.")
def demo(dsn: str, rows: int, queries: int, full_dim: int, prefix_dim: int, k: int,
         oversample: int, seed: int, text: bool, model: str | None,
         dimensions: int | None) -> None:
    """Load a synthetic corpus, build the index, compare exact and adaptive search.

    Runs on the embedded server unless --dsn / MRL_PG_DSN / DATABASE_URL names one.
    """
    if text:
        from mrl_pg.cli._demo_text import run_text_demo

        run_text_demo(dsn, model=model, dimensions=dimensions, k=min(k, 3))
        return
    started = time.perf_counter()
    click.echo("migrating the database to head", err=True)
    upgrade(dsn)
    options = DemoOptions(rows=rows, full_dim=full_dim, prefix_dim=prefix_dim, queries=queries,
                          k=k, oversample=oversample, seed=seed)
    bars: dict[str, Any] = {}

    def on_step(label: str) -> None:
        for bar in bars.values():
            bar.close()
        bars.clear()
        click.echo(f"{time.perf_counter() - started:6.1f}s  {label}", err=True)

    def on_progress(label: str, done: int, total: int | None) -> None:
        bar = bars.get(label)
        if bar is None:
            unit = {"queries": "q", "index": "tuples"}.get(label, "rows")
            bar = bars[label] = progress_bar(total, label, unit=unit)
        if total is not None and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    with connect(dsn, autocommit=True) as conn:
        report = run_demo(conn, options, on_step=on_step, on_progress=on_progress)
    on_step("done")
    click.echo(render_report(report, time.perf_counter() - started))


COMMANDS = [demo]
