"""Bulk loading: checked batches, binary COPY, one upsert per batch, all or nothing.

Each batch is copied in PostgreSQL's binary format into a temporary staging
table and merged with one ``INSERT ... ON CONFLICT (external_id) DO UPDATE``
(``(tenant, external_id)`` in a table with a tenant column) that skips rows
whose content, metadata and embedding are unchanged, so loading the same
file twice writes no new row versions. Into an empty table the rows are
copied straight in, which is as fast as a plain ``COPY``. An adopted table
(:mod:`mrl_pg.index.adopt`) takes records of its own columns instead
(:mod:`mrl_pg.ingest.adopted`). By default the whole load is one transaction.

The embedding service is never called while a transaction of ours is open:
an API call can take minutes, and an open transaction holds back vacuum for
as long. Records that need an embedding are embedded first, parked in a
temporary file, and then written in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy.typing as npt
import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from mrl_pg.config import TableConfig
from mrl_pg.embeddings import Embedder
from mrl_pg.errors import IngestError, InvalidConfigError
from mrl_pg.ingest.batches import _Batch
from mrl_pg.ingest.readers import Record, _show, check_columns, parse_record, read_records
from mrl_pg.ingest.run import (
    IngestReport,
    ProgressCallback,
    check_batch_size,
    check_tenant,
    embed_missing,
    reading,
    run_load,
)
from mrl_pg.ingest.writer import _Writer
from mrl_pg.vectors import FloatArray, as_embedding_matrix

__all__ = ["Embedder", "IngestReport", "ingest_arrays", "ingest_file", "ingest_records"]


def ingest_file(
    conn: psycopg.Connection[Any],
    config: TableConfig,
    path: str | Path,
    *,
    format: str | None = None,
    batch_size: int = 1000,
    embedder: Embedder | None = None,
    commit_each_batch: bool = False,
    reuse_embeddings: bool = True,
    on_progress: ProgressCallback | None = None,
    tenant: str | None = None,
    text_column: str | None = None,
) -> IngestReport:
    """Load a JSONL, CSV or Parquet file (see :func:`mrl_pg.ingest.readers.read_records`).

    Same options as :func:`ingest_records`; errors name the file and line.

    >>> ingest_file(conn, TableConfig("docs"), "docs.jsonl", embedder=client)  # doctest: +SKIP
    IngestReport(rows_read=1000, inserted=1000, updated=0, unchanged=0, batches=1, ...)
    """
    if config.adopted:
        from mrl_pg.ingest.adopted import ingest_table_file

        return ingest_table_file(
            conn, config, path, format=format, batch_size=batch_size, embedder=embedder,
            commit_each_batch=commit_each_batch, reuse_embeddings=reuse_embeddings,
            on_progress=on_progress, tenant=tenant, text_column=text_column)
    _managed_text_column(config, text_column)
    tenant = check_tenant(config, tenant)
    with closing(read_records(path, config, format=format)) as records:
        return _ingest(
            conn, config, records,
            checked=True, source=path, batch_size=batch_size, embedder=embedder,
            commit_each_batch=commit_each_batch, reuse_embeddings=reuse_embeddings,
            on_progress=on_progress, tenant=tenant,
        )


def ingest_records(
    conn: psycopg.Connection[Any],
    config: TableConfig,
    records: Iterable[Record | Mapping[str, Any]],
    *,
    batch_size: int = 1000,
    embedder: Embedder | None = None,
    commit_each_batch: bool = False,
    reuse_embeddings: bool = True,
    on_progress: ProgressCallback | None = None,
    source: str | Path | None = None,
    tenant: str | None = None,
    text_column: str | None = None,
) -> IngestReport:
    """Insert or update records (dicts with the fields of :class:`~mrl_pg.ingest.readers.Record`).

    Rows are matched on ``external_id``; a row whose content, metadata and
    embedding are all unchanged is not written. Records without an embedding
    get one from ``embedder.embed(contents)``, except that with
    ``reuse_embeddings`` a row already stored with the same content keeps its
    stored embedding (no paid call on re-runs; pass False after changing model).

    A table with a tenant column needs ``tenant``, the tenant every record of
    the load belongs to: rows are then matched on (tenant, external_id), so
    two tenants' ``"art-1"`` are two rows. An adopted table
    (:func:`mrl_pg.index.adopt.adopt_table`) takes dicts of its own columns instead,
    matched on its key, and ``text_column`` names the column a missing
    embedding is computed from; a row of another tenant is never overwritten.

    By default the whole load is one transaction: any bad record, embedding
    failure or database error leaves the table as it was. With an
    ``embedder``, every record is read, checked and embedded first, with no
    transaction open while the embedding service is called, and the embedded
    batches wait in a temporary file (under ``TMPDIR``) until one transaction
    writes them all; without one, batches are written as they are read, in a
    single pass. ``commit_each_batch`` embeds a batch, then writes and commits
    it, and so on; a failure then keeps the earlier batches. A connection
    already inside the caller's transaction is joined instead (and rolls back
    with it), and embedding calls then run inside that transaction: commit
    first to avoid it.

    ``on_progress`` is called after each batch is written with the number of
    rows written so far. ``source`` names the records in error messages.
    """
    if config.adopted:
        from mrl_pg.ingest.adopted import ingest_table_records

        return ingest_table_records(
            conn, config, records, batch_size=batch_size, embedder=embedder,
            commit_each_batch=commit_each_batch, reuse_embeddings=reuse_embeddings,
            on_progress=on_progress, source=source, tenant=tenant, text_column=text_column)
    _managed_text_column(config, text_column)
    tenant = check_tenant(config, tenant)
    return _ingest(
        conn, config, records,
        checked=False, source=source, batch_size=batch_size, embedder=embedder,
        commit_each_batch=commit_each_batch, reuse_embeddings=reuse_embeddings,
        on_progress=on_progress, tenant=tenant,
    )


def ingest_arrays(
    conn: psycopg.Connection[Any],
    config: TableConfig,
    embeddings: npt.ArrayLike,
    *,
    external_ids: Sequence[str],
    contents: Sequence[str | None] | None = None,
    metadatas: Sequence[Mapping[str, Any] | None] | None = None,
    batch_size: int = 5000,
    commit_each_batch: bool = False,
    on_progress: ProgressCallback | None = None,
    tenant: str | None = None,
) -> IngestReport:
    """Load an ``(n, full_dim)`` array with its ids: the fast path for generated data.

    The whole array is checked at once with numpy, then copied in binary
    batches. Same insert-or-update, tenant and transaction rules as
    :func:`ingest_records`; errors name the row (from 0). For a table mrl_pg
    created (an adopted one takes :func:`ingest_records`).

    >>> ingest_arrays(conn, config, corpus.embeddings,
    ...               external_ids=corpus.external_ids)  # doctest: +SKIP
    """
    if config.adopted:
        raise InvalidConfigError(
            f"ingest_arrays loads tables mrl_pg created; {config.qualified_name} is adopted: "
            "use ingest_records with dicts of its columns")
    check_batch_size(batch_size)
    tenant = check_tenant(config, tenant)
    matrix = as_embedding_matrix(embeddings, config.full_dim, config.prefix_dim)
    n = matrix.shape[0]
    # numpy string arrays (np.str_) are str subclasses: store them as plain str.
    ids = [str(i) if isinstance(i, str) else i for i in external_ids]
    texts: list[str | None] = [None] * n if contents is None else list(contents)
    metas: list[Any] = [None] * n if metadatas is None else list(metadatas)
    for name, values in (("external_ids", ids), ("contents", texts), ("metadatas", metas)):
        if len(values) != n:
            raise IngestError(f"{name} has {len(values)} items for {n} embeddings")
    metas = check_columns(ids, texts, metas)

    def batches() -> Iterator[_Batch]:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            yield _Batch(
                ids[start:stop], texts[start:stop], metas[start:stop], list(matrix[start:stop]),
                f"rows {start}-{stop - 1}", lines=list(range(start, stop)),
            )

    return _run(conn, config, batches(), source=None, embedder=None, reuse_embeddings=False,
                commit_each_batch=commit_each_batch, on_progress=on_progress, tenant=tenant)


def _managed_text_column(config: TableConfig, text_column: str | None) -> None:
    if text_column not in (None, "content"):
        raise InvalidConfigError(
            f"table {config.qualified_name} embeds its content column; text_column "
            f"{text_column!r} is for adopted tables")


def _ingest(
    conn: psycopg.Connection[Any],
    config: TableConfig,
    records: Iterable[Record | Mapping[str, Any]],
    *,
    checked: bool,
    source: str | Path | None,
    batch_size: int,
    embedder: Embedder | None,
    commit_each_batch: bool,
    reuse_embeddings: bool,
    on_progress: ProgressCallback | None,
    tenant: str | None,
) -> IngestReport:
    check_batch_size(batch_size)
    batches = _record_batches(records, config, checked=checked, source=source,
                              batch_size=batch_size)
    return _run(conn, config, batches, source=source, embedder=embedder,
                reuse_embeddings=reuse_embeddings, commit_each_batch=commit_each_batch,
                on_progress=on_progress, tenant=tenant)


def _run(
    conn: psycopg.Connection[Any],
    config: TableConfig,
    batches: Iterator[_Batch],
    *,
    source: str | Path | None,
    embedder: Embedder | None,
    reuse_embeddings: bool,
    commit_each_batch: bool,
    on_progress: ProgressCallback | None,
    tenant: str | None,
) -> IngestReport:
    fill = partial(_fill_embeddings, conn, config, embedder=embedder, source=source,
                   tenant=tenant)
    return run_load(conn, config, batches, writer=_Writer(conn, config, tenant=tenant),
                    fill=fill, source=source, embedder=embedder,
                    reuse_embeddings=reuse_embeddings, commit_each_batch=commit_each_batch,
                    on_progress=on_progress)


def _record_batches(
    records: Iterable[Record | Mapping[str, Any]],
    config: TableConfig,
    *,
    checked: bool,
    source: str | Path | None,
    batch_size: int,
) -> Iterator[_Batch]:
    seen: dict[str, int] = {}
    batch: list[Record] = []
    for ordinal, item in enumerate(records, start=1):
        if isinstance(item, Record):
            line = ordinal if item.line is None else item.line
            record = item if checked else parse_record(
                {"external_id": item.external_id, "content": item.content,
                 "metadata": item.metadata, "embedding": item.embedding},
                config, path=source, line=line,
            )
        else:
            line = ordinal
            record = parse_record(item, config, path=source, line=line)
        first = seen.setdefault(record.external_id, line)
        if first != line:
            also = f"line {first}" if source else f"record {first}"
            raise IngestError(
                f"duplicate external_id {_show(record.external_id)}, also on {also}",
                path=source, line=line,
            )
        batch.append(record if record.line == line else replace(record, line=line))
        if len(batch) == batch_size:
            yield _records_batch(batch, source)
            batch = []
    if batch:
        yield _records_batch(batch, source)


def _records_batch(records: list[Record], source: str | Path | None) -> _Batch:
    lines = [r.line if r.line is not None else 0 for r in records]
    unit = "lines" if source else "records"
    span = f"{f'{source} ' if source else ''}{unit} {lines[0]}-{lines[-1]}"
    return _Batch(
        [r.external_id for r in records],
        [r.content for r in records],
        [r.metadata for r in records],
        [r.embedding for r in records],
        span,
        lines,
    )


def _fill_embeddings(
    conn: psycopg.Connection[Any],
    config: TableConfig,
    batch: _Batch,
    reuse: bool,
    *,
    embedder: Embedder | None,
    source: str | Path | None,
    tenant: str | None,
) -> None:
    missing = [i for i, e in enumerate(batch.embeddings) if e is None]
    if not missing:
        return
    if reuse:
        with reading(conn):
            stored = _stored_embeddings(
                conn, config,
                [batch.external_ids[i] for i in missing], [batch.contents[i] for i in missing],
                tenant,
            )
        for i in missing:
            batch.embeddings[i] = stored.get(batch.external_ids[i])
        missing = [i for i in missing if batch.embeddings[i] is None]
    embed_missing(batch, missing, [batch.contents[i] or "" for i in missing], embedder, config,
                  source=source, what="content")


def _stored_embeddings(
    conn: psycopg.Connection[Any],
    config: TableConfig,
    external_ids: list[str],
    contents: list[str | None],
    tenant: str | None,
) -> dict[str, FloatArray]:
    """Stored embeddings of rows whose external_id and content both match (in the tenant)."""
    query = sql.SQL(
        "SELECT t.external_id, t.{embedding} FROM {table} AS t"
        " JOIN unnest(%s::text[], %s::text[]) AS s(external_id, content)"
        " ON t.external_id = s.external_id AND t.content = s.content"
    ).format(embedding=sql.Identifier(config.embedding_column), table=config.table)
    params: list[Any] = [external_ids, contents]
    if config.tenant_column is not None:
        query = sql.SQL("{} AND t.{} = %s").format(query, sql.Identifier(config.tenant_column))
        params.append(tenant)
    with conn.cursor(binary=True, row_factory=tuple_row) as cur:
        rows = cur.execute(query, params).fetchall()
    return {external_id: vector.to_numpy() for external_id, vector in rows}
