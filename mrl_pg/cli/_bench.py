"""``mrl-pg bench``: measured load and index-build throughput on this machine."""

from __future__ import annotations

import click

from ..bench import bench_index, bench_load
from ..db import connect
from ..migrate import upgrade
from ._app import dsn_option


@click.command()
@dsn_option
@click.option("--rows", type=int, default=50_000, show_default=True,
              help="Rows for the load benchmark.")
@click.option("--index-rows", default="50000,100000", show_default=True,
              help="Comma-separated table sizes for the index-build benchmark.")
@click.option("--skip-index", is_flag=True, help="Only run the load benchmark.")
def bench(dsn: str, rows: int, index_rows: str, skip_index: bool) -> None:
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


COMMANDS = [bench]
