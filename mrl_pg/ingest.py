"""Bulk loading: checked batches, binary COPY, one upsert per batch, all or nothing.

Each batch is copied in PostgreSQL's binary format into a temporary staging
table and merged with one ``INSERT ... ON CONFLICT (external_id) DO UPDATE``
that skips rows whose content, metadata and embedding are unchanged, so
loading the same file twice writes no new row versions. Into an empty table
the rows are copied straight in, which is as fast as a plain ``COPY``.
By default the whole load is one transaction.

The embedding service is never called while a transaction of ours is open:
an API call can take minutes, and an open transaction holds back vacuum for
as long. Records that need an embedding are embedded first, parked in a
temporary file, and then written in one transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

from ._ingest_batches import _Batch, _Spool
from ._ingest_writer import _Writer
from ._locks import lock_error
from .config import TableConfig
from .embeddings import Embedder
from .errors import (
    DatabaseError,
    EmbeddingError,
    IngestError,
    InvalidConfigError,
    InvalidVectorError,
    LockTimeoutError,
)
from .readers import Record, _show, check_columns, parse_record, read_records
from .vectors import FloatArray, as_embedding, as_embedding_matrix

__all__ = ["Embedder", "IngestReport", "ingest_arrays", "ingest_file", "ingest_records"]

ProgressCallback = Callable[[int], None]



@dataclass(frozen=True)
class IngestReport:
    """What a load did: rows read, and how many were inserted, updated or left as they were."""

    rows_read: int
    inserted: int
    updated: int
    unchanged: int
    batches: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        """Rows read per second of the whole load, reading and embedding included."""
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0


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
) -> IngestReport:
    """Load a JSONL, CSV or Parquet file (see :func:`mrl_pg.readers.read_records`).

    Same options as :func:`ingest_records`; errors name the file and line.

    >>> ingest_file(conn, TableConfig("docs"), "docs.jsonl", embedder=client)  # doctest: +SKIP
    IngestReport(rows_read=1000, inserted=1000, updated=0, unchanged=0, batches=1, ...)
    """
    with closing(read_records(path, config, format=format)) as records:
        return _ingest(
            conn, config, records,
            checked=True, source=path, batch_size=batch_size, embedder=embedder,
            commit_each_batch=commit_each_batch, reuse_embeddings=reuse_embeddings,
            on_progress=on_progress,
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
) -> IngestReport:
    """Insert or update records (dicts with the fields of :class:`~mrl_pg.readers.Record`).

    Rows are matched on ``external_id``; a row whose content, metadata and
    embedding are all unchanged is not written. Records without an embedding
    get one from ``embedder.embed(contents)``, except that with
    ``reuse_embeddings`` a row already stored with the same content keeps its
    stored embedding (no paid call on re-runs; pass False after changing model).

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
    return _ingest(
        conn, config, records,
        checked=False, source=source, batch_size=batch_size, embedder=embedder,
        commit_each_batch=commit_each_batch, reuse_embeddings=reuse_embeddings,
        on_progress=on_progress,
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
) -> IngestReport:
    """Load an ``(n, full_dim)`` array with its ids: the fast path for generated data.

    The whole array is checked at once with numpy, then copied in binary
    batches. Same insert-or-update and transaction rules as
    :func:`ingest_records`; errors name the row (from 0).

    >>> ingest_arrays(conn, config, corpus.embeddings,
    ...               external_ids=corpus.external_ids)  # doctest: +SKIP
    """
    _check_batch_size(batch_size)
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
                commit_each_batch=commit_each_batch, on_progress=on_progress)


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
) -> IngestReport:
    _check_batch_size(batch_size)
    batches = _record_batches(records, config, checked=checked, source=source,
                              batch_size=batch_size)
    return _run(conn, config, batches, source=source, embedder=embedder,
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
) -> IngestReport:
    if embedder is not None and embedder.dimensions != config.full_dim:
        raise InvalidConfigError(
            f"the embedder makes {embedder.dimensions}-dimensional embeddings but "
            f"{config.qualified_name} stores {config.full_dim}"
        )
    idle = conn.info.transaction_status == TransactionStatus.IDLE
    if commit_each_batch and not idle:
        raise InvalidConfigError(
            "commit_each_batch needs a connection that is not inside a transaction: "
            "commit or roll back first"
        )
    writer = _Writer(conn, config)
    started = time.perf_counter()
    rows = inserted = updated = batch_count = 0

    def embed(batch: _Batch) -> None:
        with _database_errors(f"could not load {batch.span}", conn, config):
            _fill_embeddings(conn, config, batch, embedder, source=source,
                             reuse=reuse_embeddings and not writer.direct)

    def write(batch: _Batch) -> None:
        nonlocal rows, inserted, updated, batch_count
        with _database_errors(f"could not load {batch.span}", conn, config):
            added, changed = writer.write(batch)
        rows += len(batch.external_ids)
        inserted += added
        updated += changed
        batch_count += 1

    def progress() -> None:
        if on_progress is not None:
            on_progress(rows)

    where = f"could not load {source}" if source else "could not load the records"
    with _database_errors(where, conn, config):
        if conn.adapters.types.get("vector") is None:
            with _reading(conn):
                register_vector(conn)
        if commit_each_batch:
            with conn.transaction():
                writer.prepare()
            for batch in batches:
                embed(batch)
                with conn.transaction():
                    writer.new_transaction()
                    write(batch)
                progress()
        elif embedder is None or not idle:
            # No embedding call can happen outside a transaction here: none is
            # made without an embedder, and the caller's transaction is open anyway.
            with conn.transaction():
                writer.prepare()
                for batch in batches:
                    embed(batch)
                    write(batch)
                    progress()
        else:
            with _reading(conn):
                writer.prepare()  # refuse a wrong table before any embedding is paid for
            with _Spool() as spool:
                for batch in batches:
                    embed(batch)
                    spool.append(batch)
                with conn.transaction():
                    writer.prepare()
                    for batch in spool:
                        write(batch)
                        progress()
    seconds = time.perf_counter() - started
    return IngestReport(
        rows_read=rows,
        inserted=inserted,
        updated=updated,
        unchanged=rows - inserted - updated,
        batches=batch_count,
        seconds=seconds,
    )


@contextmanager
def _reading(conn: psycopg.Connection[Any]) -> Iterator[None]:
    # Outside autocommit a read begins a transaction implicitly, which would then
    # stay idle in transaction through the next embedding call.
    if conn.autocommit or conn.info.transaction_status != TransactionStatus.IDLE:
        yield
    else:
        with conn.transaction():
            yield


def _fill_embeddings(
    conn: psycopg.Connection[Any],
    config: TableConfig,
    batch: _Batch,
    embedder: Embedder | None,
    *,
    source: str | Path | None,
    reuse: bool,
) -> None:
    missing = [i for i, e in enumerate(batch.embeddings) if e is None]
    if not missing:
        return
    if reuse:
        with _reading(conn):
            stored = _stored_embeddings(
                conn, config,
                [batch.external_ids[i] for i in missing], [batch.contents[i] for i in missing],
            )
        for i in missing:
            batch.embeddings[i] = stored.get(batch.external_ids[i])
        missing = [i for i in missing if batch.embeddings[i] is None]
        if not missing:
            return
    if embedder is None:
        raise IngestError(
            "no embedding, and no embedder was given to compute one from the content",
            path=source, line=batch.lines[missing[0]],
        )
    texts = [batch.contents[i] or "" for i in missing]
    try:
        result = embedder.embed(texts)
    except Exception as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise EmbeddingError(f"could not embed {batch.span}: {reason}") from exc
    matrix = np.asarray(result, dtype=np.float32)
    if matrix.shape != (len(texts), config.full_dim):
        raise EmbeddingError(
            f"could not embed {batch.span}: asked for {len(texts)} embeddings of "
            f"{config.full_dim} dimensions, the embedder returned shape {matrix.shape}"
        )
    for i, vector in zip(missing, matrix, strict=True):
        try:
            batch.embeddings[i] = as_embedding(vector, config.full_dim,
                                               prefix_dim=config.prefix_dim)
        except InvalidVectorError as exc:
            where = f"{source}:" if source else "record "
            raise EmbeddingError(
                f"{where}{batch.lines[i]}: the embedder returned an unusable embedding: {exc}"
            ) from exc


def _stored_embeddings(
    conn: psycopg.Connection[Any],
    config: TableConfig,
    external_ids: list[str],
    contents: list[str | None],
) -> dict[str, FloatArray]:
    """Stored embeddings of rows whose external_id and content both match."""
    query = sql.SQL(
        "SELECT t.external_id, t.{embedding} FROM {table} AS t"
        " JOIN unnest(%s::text[], %s::text[]) AS s(external_id, content)"
        " ON t.external_id = s.external_id AND t.content = s.content"
    ).format(embedding=sql.Identifier(config.embedding_column), table=config.table)
    with conn.cursor(binary=True, row_factory=tuple_row) as cur:
        rows = cur.execute(query, (external_ids, contents)).fetchall()
    return {external_id: vector.to_numpy() for external_id, vector in rows}


@contextmanager
def _database_errors(
    what: str, conn: psycopg.Connection[Any] | None = None, config: TableConfig | None = None
) -> Iterator[None]:
    try:
        yield
    except psycopg.errors.LockNotAvailable as exc:
        raise lock_error(what, conn, config) from exc
    except LockTimeoutError as exc:
        # Raised inside the failed transaction, where nothing could be read; the
        # transaction is over now, so say who holds the lock.
        if exc.holders or conn is None or conn.info.transaction_status != TransactionStatus.IDLE:
            raise
        raise lock_error(exc.what, conn, config) from exc.__cause__
    except psycopg.Error as exc:
        raise DatabaseError(f"{what}: {_one_line(exc)}") from exc


def _one_line(exc: psycopg.Error) -> str:
    lines = str(exc).splitlines()
    parts = [exc.diag.message_primary or (lines[0] if lines else type(exc).__name__)]
    if exc.diag.message_detail:
        parts.append(exc.diag.message_detail)
    return " ".join(" ".join(p.split()) for p in parts)


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
