"""``mrl-pg ingest``: load a JSONL, CSV or Parquet file into a table."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from ..config import DEFAULT_TABLE, TableConfig
from ..db import connect
from ..errors import MrlPgError
from ..ingest import IngestReport, ingest_file
from ..install import install
from ..readers import count_records, detect_format
from ._app import dsn_option, table_options
from ._progress import IndexProgressBar, progress_bar

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
def ingest(
    file: Path,
    format_: str | None,
    batch_size: int,
    config: TableConfig,
    dsn: str | None,
    create: bool,
    commit_each_batch: bool,
    defer_index: bool,
    model: str | None,
    lock_timeout: float,
    re_embed: bool,
) -> None:
    """Insert or update the records of FILE (.jsonl, .ndjson, .csv or .parquet).

    Each record has external_id (required), content, metadata (a JSON object)
    and embedding (an array of --dim numbers). Records without an embedding
    are embedded from their content. Rows are matched on external_id;
    unchanged rows are not rewritten, so loading a file again is cheap.
    """
    detect_format(file, format_)
    if file.stat().st_size == 0:
        raise click.ClickException(f"{file} is empty: nothing to load")
    embedder = _LazyEmbedder(model, config.full_dim)
    with connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET lock_timeout = {}").format(
            sql.Literal(f"{round(lock_timeout * 1000)}ms")))
        if not _table_exists(conn, config):
            if not create:
                hint = ("run `mrl-pg migrate` to create it, or pass --create"
                        if config.name == DEFAULT_TABLE and config.schema is None
                        else "pass --create to create it")
                raise click.ClickException(
                    f"table {config.qualified_name} does not exist: {hint}"
                )
            install(conn, config)
            click.echo(f"created table {config.qualified_name}", err=True)
        try:
            if defer_index:
                _load_deferring_index(conn, config, file, format_, batch_size, embedder,
                                      commit_each_batch, not re_embed)
            else:
                _load(conn, config, file, format_, batch_size, embedder, commit_each_batch,
                      not re_embed)
        finally:
            embedder.close()


def _load(
    conn: psycopg.Connection[Any],
    config: TableConfig,
    file: Path,
    format_: str | None,
    batch_size: int,
    embedder: _LazyEmbedder,
    commit_each_batch: bool,
    reuse_embeddings: bool,
) -> IngestReport:
    total = _cheap_count(file, format_) if sys.stderr.isatty() else None
    with progress_bar(total, file.name) as bar:
        report = ingest_file(
            conn, config, file,
            format=format_, batch_size=batch_size, embedder=embedder,
            commit_each_batch=commit_each_batch, reuse_embeddings=reuse_embeddings,
            on_progress=lambda done: bar.update(done - bar.n),
        )
    click.echo(_summary(file, report), err=True)
    return report


def _load_deferring_index(
    conn: psycopg.Connection[Any],
    config: TableConfig,
    file: Path,
    format_: str | None,
    batch_size: int,
    embedder: _LazyEmbedder,
    commit_each_batch: bool,
    reuse_embeddings: bool,
) -> None:
    from ..index import drop_hnsw_index

    dropped = drop_hnsw_index(conn, config)
    try:
        _load(conn, config, file, format_, batch_size, embedder, commit_each_batch,
              reuse_embeddings)
    except BaseException:
        if dropped:
            click.echo(f"load failed; rebuilding the HNSW index of {config.qualified_name}",
                       err=True)
            _build_index(conn, config)
        raise
    _build_index(conn, config)


def _build_index(conn: psycopg.Connection[Any], config: TableConfig) -> None:
    from ..index import build_hnsw_index

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
            from ..embeddings import EmbeddingClient

            if self._model is None:
                self._client = EmbeddingClient(dimensions=self.dimensions)
            else:
                self._client = EmbeddingClient(model=self._model, dimensions=self.dimensions)
        result: npt.NDArray[np.float32] = self._client.embed(texts)
        return result

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _table_exists(conn: psycopg.Connection[Any], config: TableConfig) -> bool:
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (config.table.as_string(conn),)
    ).fetchone()
    return bool(row and row[0])


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
