"""``mrl-pg index build|status|drop``: the prefix HNSW index after a bulk load."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import click
import psycopg

from ..config import TableConfig
from ..db import connect
from ..errors import DatabaseError
from ..index import (
    build_hnsw_index,
    drop_hnsw_index,
    index_status,
)
from ._app import dsn_option, table_options
from ._progress import IndexProgressBar


@click.group()
def index() -> None:
    """Build, inspect or drop the table's prefix HNSW index."""


@index.command()
@dsn_option
@table_options
@click.option("--m", "hnsw_m", type=int, default=TableConfig.hnsw_m, show_default=True,
              help="HNSW neighbours per node (2*m on the ground layer).")
@click.option("--ef-construction", "hnsw_ef_construction", type=int,
              default=TableConfig.hnsw_ef_construction, show_default=True,
              help="HNSW candidate list size while building.")
@click.option("--maintenance-work-mem", metavar="SIZE", default=None,
              help="Memory for the build, e.g. 2GB (default: the estimated graph plus 25%, "
                   "within a quarter of RAM).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Parallel maintenance workers (default: CPUs - 1).")
@click.option("--concurrently", is_flag=True,
              help="Keep the table readable and writable during the build (slower); the old "
                   "index serves searches until the new one replaces it.")
def build(
    dsn: str,
    config: TableConfig,
    hnsw_m: int,
    hnsw_ef_construction: int,
    maintenance_work_mem: str | None,
    workers: int | None,
    concurrently: bool,
) -> None:
    """Rebuild the HNSW index from the table's rows; run it after a bulk load."""
    config = dataclasses.replace(config, hnsw_m=hnsw_m, hnsw_ef_construction=hnsw_ef_construction)
    bar = IndexProgressBar() if sys.stderr.isatty() else None
    try:
        with _connect(dsn) as conn:
            report = build_hnsw_index(
                conn,
                config,
                dsn=dsn,
                maintenance_work_mem=maintenance_work_mem,
                parallel_workers=workers,
                concurrently=concurrently,
                on_progress=bar.update if bar else None,
                on_warning=bar.warn if bar else _warn,
            )
    finally:
        if bar:
            bar.close()
    workers_text = f"{report.parallel_workers} worker" + (
        "" if report.parallel_workers == 1 else "s")
    click.echo(
        f"built {config.hnsw_index_name} on {config.qualified_name}: {report.rows:,} rows "
        f"in {report.seconds:.1f} s, index {_size(report.index_bytes)} "
        f"(maintenance_work_mem {_size(report.maintenance_work_mem)}, up to {workers_text})"
    )


@index.command()
@dsn_option
@table_options
def status(dsn: str | None, config: TableConfig) -> None:
    """Say whether the HNSW index exists and is valid, with its size and estimated row count."""
    with _connect(dsn) as conn:
        st = index_status(conn, config)
    if not st.exists:
        click.echo(f"{config.hnsw_index_name}: missing (run `mrl-pg index build`)")
        return
    rows = ("rows not yet estimated" if st.estimated_rows is None
            else f"about {st.estimated_rows:,} rows (planner estimate, refreshed by ANALYZE)")
    state = "valid" if st.valid else "INVALID (rebuild it with `mrl-pg index build`)"
    click.echo(f"{config.hnsw_index_name}: {state}, {_size(st.bytes)}, {rows}\n{st.definition}")


@index.command()
@dsn_option
@table_options
@click.option("--concurrently", is_flag=True, help="Do not block the table's readers and writers.")
def drop(dsn: str | None, config: TableConfig, concurrently: bool) -> None:
    """Drop the HNSW index, e.g. before a large bulk load."""
    with _connect(dsn) as conn:
        dropped = drop_hnsw_index(conn, config, concurrently=concurrently)
    name = config.hnsw_index_name
    click.echo(f"dropped {name}" if dropped else f"{name} did not exist", err=True)


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def _connect(dsn: str | None) -> psycopg.Connection[Any]:
    try:
        return connect(dsn)
    except psycopg.Error as exc:
        detail = " ".join(str(exc).split())
        raise DatabaseError(f"could not connect to the database: {detail}") from exc


def _size(n: int) -> str:
    for unit, factor in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n} bytes"


COMMANDS = [index]
