"""Running a load: the transaction rules every ingest follows, whatever the table.

By default the whole load is one transaction. The embedding service is
never called while a transaction of ours is open: an API call can take
minutes, and an open transaction holds back vacuum for as long. Batches
that need embeddings are embedded first, parked in a temporary file, and
then written in one transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg.pq import TransactionStatus

from mrl_pg.config import TableConfig
from mrl_pg.embeddings import Embedder
from mrl_pg.errors import (
    DatabaseError,
    EmbeddingError,
    IngestError,
    InvalidConfigError,
    InvalidVectorError,
    LockTimeoutError,
    one_line,
)
from mrl_pg.ingest.batches import Embedded, _Spool
from mrl_pg.locks import lock_error
from mrl_pg.vectors import as_embedding

ProgressCallback = Callable[[int], None]

B = TypeVar("B", bound=Embedded)
B_contra = TypeVar("B_contra", bound=Embedded, contravariant=True)


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


class Writer(Protocol[B_contra]):
    """Writes checked, embedded batches into one table."""

    @property
    def direct(self) -> bool:
        """True when rows go straight into an empty table (nothing stored to reuse)."""

    def prepare(self) -> None: ...

    def new_transaction(self) -> None: ...

    def write(self, batch: B_contra) -> tuple[int, int]: ...


# Fills a batch's missing embeddings: (batch, reuse stored embeddings).
Fill = Callable[[B, bool], None]


def run_load(
    conn: psycopg.Connection[Any],
    config: TableConfig,
    batches: Iterator[B],
    *,
    writer: Writer[B],
    fill: Fill[B],
    source: object,
    embedder: Embedder | None,
    reuse_embeddings: bool,
    commit_each_batch: bool,
    on_progress: ProgressCallback | None,
) -> IngestReport:
    """Embed and write ``batches`` under the transaction rules of :func:`mrl_pg.ingest_records`."""
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
    started = time.perf_counter()
    rows = inserted = updated = batch_count = 0

    def embed(batch: B) -> None:
        with database_errors(f"could not load {batch.span}", conn, config):
            fill(batch, reuse_embeddings and not writer.direct)

    def write(batch: B) -> None:
        nonlocal rows, inserted, updated, batch_count
        with database_errors(f"could not load {batch.span}", conn, config):
            added, changed = writer.write(batch)
        rows += len(batch.lines)
        inserted += added
        updated += changed
        batch_count += 1

    def progress() -> None:
        if on_progress is not None:
            on_progress(rows)

    where = f"could not load {source}" if source else "could not load the records"
    with database_errors(where, conn, config):
        if conn.adapters.types.get("vector") is None:
            with reading(conn):
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
            with reading(conn):
                writer.prepare()  # refuse a wrong table before any embedding is paid for
            with _Spool[B]() as spool:
                for batch in batches:
                    embed(batch)
                    spool.append(batch)
                with conn.transaction():
                    writer.prepare()
                    for batch in spool:
                        write(batch)
                        progress()
    return IngestReport(
        rows_read=rows,
        inserted=inserted,
        updated=updated,
        unchanged=rows - inserted - updated,
        batches=batch_count,
        seconds=time.perf_counter() - started,
    )


@contextmanager
def reading(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """A read that leaves no transaction open behind it."""
    # Outside autocommit a read begins a transaction implicitly, which would then
    # stay idle in transaction through the next embedding call.
    if conn.autocommit or conn.info.transaction_status != TransactionStatus.IDLE:
        yield
    else:
        with conn.transaction():
            yield


@contextmanager
def database_errors(
    what: str, conn: psycopg.Connection[Any] | None = None, config: TableConfig | None = None
) -> Iterator[None]:
    """Driver errors as one-line :class:`~mrl_pg.errors.DatabaseError` starting with ``what``."""
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
        raise DatabaseError(f"{what}: {one_line(exc)}") from exc


def check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidConfigError(f"batch_size must be a positive integer, got {batch_size!r}")


def embed_missing(
    batch: Embedded,
    missing: list[int],
    texts: list[str],
    embedder: Embedder | None,
    config: TableConfig,
    *,
    source: str | Path | None,
    what: str,
) -> None:
    """Fill ``batch.embeddings[i]`` for each ``i`` in ``missing`` from ``texts`` (one each).

    ``what`` names the text the embeddings come from, for the error when
    there is no embedder.
    """
    if not missing:
        return
    if embedder is None:
        raise IngestError(
            f"no embedding, and no embedder was given to compute one from the {what}",
            path=source, line=batch.lines[missing[0]],
        )
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


def check_tenant(config: TableConfig, tenant: Any) -> str | None:
    """``tenant`` checked against the table: required with a tenant column, refused without."""
    if config.tenant_column is None:
        if tenant is not None:
            raise InvalidConfigError(
                f"a tenant was given, but table {config.qualified_name} has no tenant column")
        return None
    if tenant is None:
        raise InvalidConfigError(
            f"table {config.qualified_name} has the tenant column {config.tenant_column!r}: "
            "name the tenant the rows belong to")
    if not isinstance(tenant, str) or not tenant.strip() or "\x00" in tenant:
        raise InvalidConfigError(f"the tenant must be a non-empty string, got {tenant!r}")
    return tenant
