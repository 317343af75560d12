"""``mrl-pg index build|status|drop``: the prefix HNSW index after a bulk load."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import click
import psycopg

from mrl_pg.cli._app import TableChoice, dsn_option, table_options
from mrl_pg.cli._progress import IndexProgressBar
from mrl_pg.config import DEFAULT_HNSW_EF_CONSTRUCTION, DEFAULT_HNSW_M
from mrl_pg.db import connect
from mrl_pg.errors import DatabaseError, InvalidConfigError
from mrl_pg.index.build import (
    build_hnsw_index,
    drop_hnsw_index,
    index_status,
)


@click.group()
def index() -> None:
    """Build, inspect or drop the table's prefix HNSW index."""


@index.command()
@dsn_option
@table_options
@click.option("--m", "hnsw_m", type=int, default=None,
              help="HNSW neighbours per node (2*m on the ground layer; default: the "
                   f"index's current setting, else {DEFAULT_HNSW_M}).")
@click.option("--ef-construction", "hnsw_ef_construction", type=int, default=None,
              help="HNSW candidate list size while building (default: the index's current "
                   f"setting, else {DEFAULT_HNSW_EF_CONSTRUCTION}).")
@click.option("--maintenance-work-mem", metavar="SIZE", default=None,
              help="Memory for the build, e.g. 2GB (default: the estimated graph plus 25%, "
                   "within a quarter of RAM).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Parallel maintenance workers (default: CPUs - 1).")
@click.option("--concurrently/--no-concurrently", default=None,
              help="Keep the table readable and writable during the build (slower); the old "
                   "index serves searches until the new one replaces it. Default: on for an "
                   "adopted table, off for a table mrl_pg created.")
def build(
    dsn: str,
    table: TableChoice,
    hnsw_m: int | None,
    hnsw_ef_construction: int | None,
    maintenance_work_mem: str | None,
    workers: int | None,
    concurrently: bool | None,
) -> None:
    """Rebuild the HNSW index from the table's rows; run it after a bulk load.

    On an adopted table this rebuilds the index on the embedding's prefix
    expression, concurrently unless --no-concurrently.
    """
    bar = IndexProgressBar() if sys.stderr.isatty() else None
    try:
        with _connect(dsn) as conn:
            config = table.resolve(conn)
            config = dataclasses.replace(
                config,
                hnsw_m=config.hnsw_m if hnsw_m is None else hnsw_m,
                hnsw_ef_construction=config.hnsw_ef_construction if hnsw_ef_construction is None
                else hnsw_ef_construction)
            report = build_hnsw_index(
                conn,
                config,
                dsn=dsn,
                maintenance_work_mem=maintenance_work_mem,
                parallel_workers=workers,
                concurrently=config.adopted if concurrently is None else concurrently,
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
def status(dsn: str | None, table: TableChoice) -> None:
    """Say whether the HNSW index exists and is valid, with its size and estimated row count."""
    with _connect(dsn) as conn:
        config = table.resolve(conn)
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
def drop(dsn: str | None, table: TableChoice, concurrently: bool) -> None:
    """Drop the HNSW index, e.g. before a large bulk load.

    Not for an adopted table, whose adoption lives on its index: release it
    with `mrl-pg adopt --release` instead.
    """
    with _connect(dsn) as conn:
        config = table.resolve(conn)
        if config.adopted:
            raise InvalidConfigError(
                f"{config.qualified_name} is adopted, and its index records the adoption: "
                f"rebuild it with `mrl-pg index build`, or remove it with "
                f"`mrl-pg adopt --release {config.name}`")
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
