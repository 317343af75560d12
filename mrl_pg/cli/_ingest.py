"""``mrl-pg ingest``: load a JSONL, CSV or Parquet file into a table."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from mrl_pg.cli._app import TableChoice, dsn_option, table_options
from mrl_pg.cli._progress import IndexProgressBar, progress_bar
from mrl_pg.config import DEFAULT_TABLE, TableConfig
from mrl_pg.db import connect
from mrl_pg.errors import InvalidConfigError, MrlPgError
from mrl_pg.ingest.load import IngestReport, ingest_file
from mrl_pg.ingest.readers import count_records, detect_format
from mrl_pg.schema.install import install

# Counting records before loading gives the progress bar an ETA; above this
# size the extra pass over a text file costs more than the ETA is worth.
_COUNT_LIMIT_BYTES = 256 * 1024 * 1024


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "format_", type=click.Choice(["jsonl", "ndjson", "csv", "parquet"]),
              default=None, help="File format (default: from the extension).")
@click.option("--batch-size", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Rows per COPY and upsert.")
@table_options
@dsn_option
@click.option("--create", is_flag=True,
              help="Create the table, its indexes and search function if it does not exist.")
@click.option("--commit-each-batch", is_flag=True,
              help="Commit every batch; a failure keeps the batches before it "
                   "(default: all or nothing).")
@click.option("--defer-index", is_flag=True,
              help="Load without the HNSW index and build it afterwards (much faster for "
                   "large loads; searches fall back to exact scans meanwhile).")
@click.option("--model", default=None,
              help="Embedding model for records without an embedding "
                   "(default: text-embedding-3-small; OPENAI_API_KEY, OPENAI_BASE_URL).")
@click.option("--lock-timeout", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Seconds to wait for a row or table lock held by another transaction "
                   "before failing (0: wait forever).")
@click.option("--re-embed", is_flag=True,
              help="Embed every record without an embedding, even when the stored row has "
                   "the same content (use after changing model).")
@click.option("--tenant", default=None, metavar="VALUE",
              help="The tenant every record belongs to, for a table with a tenant column: "
                   "rows are matched within the tenant, and another tenant's row is never "
                   "overwritten.")
@click.option("--tenant-column", default=None, metavar="NAME",
              help="With --create: give the new table a tenant column (then --tenant is "
                   "needed), so an external_id is unique per tenant.")
@click.option("--text-column", default=None, metavar="COLUMN",
              help="Adopted table: the text column a record without an embedding is "
                   "embedded from.")
def ingest(
    file: Path,
    format_: str | None,
    batch_size: int,
    table: TableChoice,
    dsn: str | None,
    create: bool,
    commit_each_batch: bool,
    defer_index: bool,
    model: str | None,
    lock_timeout: float,
    re_embed: bool,
    tenant: str | None,
    tenant_column: str | None,
    text_column: str | None,
) -> None:
    """Insert or update the records of FILE (.jsonl, .ndjson, .csv or .parquet).

    Into a table mrl_pg created, each record has external_id (required),
    content, metadata (a JSON object) and embedding (an array of --dim
    numbers); records without an embedding are embedded from their content,
    and rows are matched on external_id (per --tenant with a tenant column).

    Into an adopted table (`mrl-pg adopt`), a record's fields are the table's
    own columns, the embedding column included or computed from
    --text-column; rows are matched on the table's key, and only the columns
    a record gives are updated.

    Unchanged rows are not rewritten, so loading a file again is cheap. All
    or nothing: a bad record writes no row.
    """
    detect_format(file, format_)
    if file.stat().st_size == 0:
        raise click.ClickException(f"{file} is empty: nothing to load")
    with connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET lock_timeout = {}").format(
            sql.Literal(f"{round(lock_timeout * 1000)}ms")))
        config = _table(conn, table, create=create, tenant_column=tenant_column)
        if config.adopted and defer_index:
            raise InvalidConfigError(
                f"--defer-index would drop the index of the adopted table "
                f"{config.qualified_name}, which its searches and its adoption depend on; "
                "load it without --defer-index")
        embedder = _LazyEmbedder(model, config.full_dim)
        options = _Options(format_, batch_size, commit_each_batch, not re_embed, tenant,
                           text_column)
        try:
            if defer_index:
                _load_deferring_index(conn, config, file, embedder, options)
            else:
                _load(conn, config, file, embedder, options)
        finally:
            embedder.close()


@dataclass(frozen=True)
class _Options:
    format: str | None
    batch_size: int
    commit_each_batch: bool
    reuse_embeddings: bool
    tenant: str | None
    text_column: str | None


def _table(
    conn: psycopg.Connection[Any], table: TableChoice, *, create: bool,
    tenant_column: str | None,
) -> TableConfig:
    if table.exists(conn):
        config = table.resolve(conn)
        if tenant_column is not None and tenant_column != config.tenant_column:
            have = (f"the tenant column {config.tenant_column!r}" if config.tenant_column
                    else "no tenant column")
            raise InvalidConfigError(
                f"table {config.qualified_name} exists with {have}; --tenant-column "
                f"{tenant_column!r} only applies to a table --create makes")
        return config
    config = table.new_config(tenant_column=tenant_column)
    if not create:
        hint = ("run `mrl-pg migrate` to create it, or pass --create"
                if config.name == DEFAULT_TABLE and config.schema is None
                and tenant_column is None else "pass --create to create it")
        raise click.ClickException(f"table {config.qualified_name} does not exist: {hint}")
    install(conn, config)
    click.echo(f"created table {config.qualified_name}", err=True)
    return config


def _load(
    conn: psycopg.Connection[Any],
    config: TableConfig,
    file: Path,
    embedder: _LazyEmbedder,
    options: _Options,
) -> IngestReport:
    total = _cheap_count(file, options.format) if sys.stderr.isatty() else None
    with progress_bar(total, file.name) as bar:
        report = ingest_file(
            conn, config, file,
            format=options.format, batch_size=options.batch_size, embedder=embedder,
            commit_each_batch=options.commit_each_batch,
            reuse_embeddings=options.reuse_embeddings, tenant=options.tenant,
            text_column=options.text_column,
            on_progress=lambda done: bar.update(done - bar.n),
        )
    click.echo(_summary(file, report), err=True)
    return report


def _load_deferring_index(
    conn: psycopg.Connection[Any],
    config: TableConfig,
    file: Path,
    embedder: _LazyEmbedder,
    options: _Options,
) -> None:
    from mrl_pg.index.build import drop_hnsw_index

    dropped = drop_hnsw_index(conn, config)
    try:
        _load(conn, config, file, embedder, options)
    except BaseException:
        if dropped:
            click.echo(f"load failed; rebuilding the HNSW index of {config.qualified_name}",
                       err=True)
            _build_index(conn, config)
        raise
    _build_index(conn, config)


def _build_index(conn: psycopg.Connection[Any], config: TableConfig) -> None:
    from mrl_pg.index.build import build_hnsw_index

    bar = IndexProgressBar() if sys.stderr.isatty() else None
    try:
        built = build_hnsw_index(
            conn, config, on_progress=bar.update if bar else None,
            on_warning=bar.warn if bar else lambda m: click.echo(f"warning: {m}", err=True),
        )
    finally:
        if bar:
            bar.close()
    click.echo(f"built the HNSW index of {config.qualified_name} ({built.rows:,} rows) "
               f"in {built.seconds:.1f} s", err=True)


class _LazyEmbedder:
    """Creates the embedding client on first use, so files with embeddings need no API key."""

    def __init__(self, model: str | None, dimensions: int) -> None:
        self.dimensions = dimensions
        self._model = model
        self._client: Any = None

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if self._client is None:
            from mrl_pg.embeddings import EmbeddingClient

            if self._model is None:
                self._client = EmbeddingClient(dimensions=self.dimensions)
            else:
                self._client = EmbeddingClient(model=self._model, dimensions=self.dimensions)
        result: npt.NDArray[np.float32] = self._client.embed(texts)
        return result

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _cheap_count(file: Path, format_: str | None) -> int | None:
    try:
        if detect_format(file, format_) != "parquet" and file.stat().st_size > _COUNT_LIMIT_BYTES:
            return None
        return count_records(file, format=format_)
    except (MrlPgError, OSError):
        return None


def _summary(file: Path, report: IngestReport) -> str:
    return (
        f"{file}: read {report.rows_read:,} rows: {report.inserted:,} inserted, "
        f"{report.updated:,} updated, {report.unchanged:,} unchanged "
        f"in {report.seconds:.1f} s ({report.rows_per_second:,.0f} rows/s)"
    )


COMMANDS = [ingest]
