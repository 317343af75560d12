"""``mrl-pg adopt``: adaptive search on a table you already have; ``--release`` undoes it."""

from __future__ import annotations

import sys
from typing import Any

import click
import psycopg

from mrl_pg.cli._app import dsn_option
from mrl_pg.cli._progress import IndexProgressBar
from mrl_pg.config import (
    DEFAULT_HNSW_EF_CONSTRUCTION,
    DEFAULT_HNSW_M,
    TableConfig,
    validate_identifier,
    validate_table_name,
)
from mrl_pg.db import connect
from mrl_pg.errors import InvalidConfigError
from mrl_pg.index.adopt import adopt_table, release_table
from mrl_pg.schema.catalog import CLI, describe_existing_table, describe_table
from mrl_pg.schema.search_function import SEARCH_FUNCTION_ARGS


def _columns(text: str | None, option: str) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(part.strip() for part in text.split(","))
    if not all(names):
        raise click.BadParameter(f"expected comma-separated column names, got {text!r}",
                                 param_hint=option)
    return names


@click.command(name="adopt")
@click.argument("table")
@click.option("--embedding", default=None, metavar="COLUMN",
              help="The vector(N) or halfvec(N) column to search (default: what an earlier "
                   "adoption recorded, else 'embedding').")
@click.option("--prefix-dim", type=int, default=None,
              help="Leading dimensions the HNSW index holds (default: what an earlier "
                   "adoption recorded, else 512); must be below N.")
@click.option("--schema", default=None, help="Schema of the table (default: search_path).")
@click.option("--key", default=None, metavar="COL[,COL...]",
              help="Columns that identify a row (default: the primary key; else name the "
                   "columns of a unique constraint). Ingest upserts on them.")
@click.option("--columns", default=None, metavar="COL[,COL...]",
              help="Columns a search returns (default: every column but vectors).")
@click.option("--metadata", default=None, metavar="COLUMN",
              help="A jsonb column that `search --filter` matches by containment.")
@click.option("--tenant-column", "--tenant", "tenant", default=None, metavar="COLUMN",
              help="The tenant column: `search --tenant VALUE` scopes to it, and an ingest "
                   "never overwrites another tenant's row.")
@click.option("--m", "hnsw_m", type=int, default=DEFAULT_HNSW_M, show_default=True,
              help="HNSW neighbours per node of a new index.")
@click.option("--ef-construction", "hnsw_ef_construction", type=int,
              default=DEFAULT_HNSW_EF_CONSTRUCTION,
              show_default=True, help="HNSW candidate list size while building a new index.")
@click.option("--maintenance-work-mem", metavar="SIZE", default=None,
              help="Memory for the index build, e.g. 2GB (default: the estimated graph "
                   "plus 25%, within a quarter of RAM).")
@click.option("--rebuild", is_flag=True,
              help="When the table is adopted with another --prefix-dim or --embedding: build "
                   "the new index beside the old one and swap them, with the search "
                   "function, in one short transaction (searches never run unindexed).")
@click.option("--release", is_flag=True,
              help="Undo an adoption instead: drop the index, the search function and the "
                   "saved tuning; the table and its rows stay as they are.")
@dsn_option
def adopt(table: str, embedding: str | None, prefix_dim: int | None, schema: str | None,
          key: str | None, columns: str | None, metadata: str | None, tenant: str | None,
          hnsw_m: int, hnsw_ef_construction: int, maintenance_work_mem: str | None,
          rebuild: bool, release: bool, dsn: str) -> None:
    """Add adaptive search to an existing TABLE without copying or rewriting it.

    Builds an HNSW index on the re-normalized prefix of the embedding column
    (CREATE INDEX CONCURRENTLY: writers carry on) and the search function
    mrl_search_TABLE. Running it again keeps a valid index, keeps what the last
    adoption recorded for every option left out (key, columns, metadata,
    tenant, embedding, prefix) and recreates the function, grants kept, after
    the table's columns changed; another --prefix-dim or --embedding is refused
    (release first, or --rebuild to swap in a new index). Afterwards search,
    index and ingest take just --table TABLE. `mrl-pg adopt --release TABLE`
    removes both again.
    """
    validate_table_name(table)
    if schema is not None:
        validate_identifier(schema, what="schema name")
    with connect(dsn, autocommit=True) as conn:
        if release:
            _release(conn, table, schema)
            return
        config = describe_existing_table(
            conn, table, embedding=embedding, prefix_dim=prefix_dim, schema=schema,
            key=_columns(key, "--key"), columns=_columns(columns, "--columns"),
            metadata=metadata, tenant=tenant, hnsw_m=hnsw_m,
            hnsw_ef_construction=hnsw_ef_construction, spelling=CLI)
        bar = IndexProgressBar() if sys.stderr.isatty() else None
        try:
            report = adopt_table(conn, config, maintenance_work_mem=maintenance_work_mem,
                                 on_progress=bar.update if bar else None, rebuild=rebuild)
        finally:
            if bar:
                bar.close()
    click.echo(f"adopted {config.qualified_name}: {config.embedding_type}({config.full_dim}) "
               f"column {config.embedding_column}, prefix {config.prefix_dim}, key "
               f"({', '.join(config.key)})"
               + (f", tenant column {config.tenant_column}" if config.tenant_column else ""))
    for line in report.lines():
        click.echo(f"  {line}")


def _release(conn: psycopg.Connection[Any], table: str, schema: str | None) -> None:
    # Releasing needs nothing but the names; a table with nothing adopted is a no-op,
    # so a second `--release` (a retried deploy script) succeeds.
    names = TableConfig(table, full_dim=2, prefix_dim=1, schema=schema, prefix_column=None,
                        adopted=True)
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                          (names.table.as_string(conn),)).fetchone()
    if not (exists and exists[0]):
        raise InvalidConfigError(f"table {names.qualified_name} does not exist")
    try:
        described = describe_table(conn, table, schema=schema, spelling=CLI)
    except InvalidConfigError:  # never adopted, released, or changed since: names will do
        described = None
    if described is not None and not described.adopted:
        raise InvalidConfigError(
            f"{described.qualified_name} is a table mrl_pg created, not an adopted one: "
            "there is nothing to release")
    config = described or names
    function = conn.execute("SELECT to_regprocedure(%s) IS NOT NULL", (
        config.qualified(config.search_function_name).as_string(conn)
        + f"({SEARCH_FUNCTION_ARGS})",)).fetchone()
    had_function = bool(function and function[0])
    dropped = release_table(conn, config)
    if not (dropped or had_function):
        click.echo(f"{config.qualified_name}: nothing adopted (no index "
                   f"{config.hnsw_index_name}, no function {config.search_function_name}); "
                   "nothing to release")
        return
    click.echo(f"released {config.qualified_name}: function {config.search_function_name} "
               + ("dropped" if had_function else "was not there") + f", index "
               f"{config.hnsw_index_name} " + ("dropped" if dropped else "was not there")
               + "; rows untouched")


COMMANDS = [adopt]
