"""Building the prefix HNSW index after a bulk load, with progress, and reading its state.

Loading rows first and indexing afterwards is much faster than keeping HNSW up
to date row by row. pgvector builds the graph in memory as long as it fits in
``maintenance_work_mem`` and in parallel with ``max_parallel_maintenance_workers``;
:func:`build_hnsw_index` sets both for the build only, sizes the memory to the
estimated graph, and reports what happened.

A rebuild never leaves the table without an index: the non-concurrent one
replaces the index in a single transaction, the concurrent one builds the new
index beside the old and swaps them only once it is valid.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.pq import TransactionStatus

from mrl_pg.config import TableConfig, validate_identifier
from mrl_pg.errors import DatabaseError, InvalidConfigError, MrlPgError
from mrl_pg.index.memory import (
    _KB,
    _MB,
    _size,
    default_maintenance_work_mem,
    default_parallel_workers,
    estimate_hnsw_bytes,
    fits_in_memory,
)
from mrl_pg.index.progress import IndexProgress, ProgressPoller
from mrl_pg.locks import lock_error
from mrl_pg.schema.adoption import adoption_comment_ddl
from mrl_pg.statement.prefix import hnsw_index_ddl

__all__ = [
    "IndexProgress",
    "IndexBuildReport",
    "IndexStatus",
    "PHASE_DONE",
    "build_hnsw_index",
    "drop_hnsw_index",
    "index_status",
    "estimate_hnsw_bytes",
    "fits_in_memory",
    "default_maintenance_work_mem",
    "default_parallel_workers",
]

PHASE_DONE = "done"
"""Phase of the last :class:`IndexProgress`, sent once the index is built."""

_REBUILD_SUFFIX = "_rebuild"
_MAX_IDENTIFIER_BYTES = 63

@dataclass(frozen=True)
class IndexBuildReport:
    """What :func:`build_hnsw_index` did.

    ``maintenance_work_mem`` is in bytes; ``parallel_workers`` is the
    ``max_parallel_maintenance_workers`` the build ran with (PostgreSQL
    launches fewer for small tables). ``warnings`` holds the memory estimate's
    warning and every NOTICE or WARNING the server sent during the build.
    """

    seconds: float
    rows: int
    index_bytes: int
    maintenance_work_mem: int
    parallel_workers: int
    estimated_graph_bytes: int
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class IndexStatus:
    """The HNSW index as the catalog sees it.

    ``valid`` is False after a failed ``CREATE INDEX CONCURRENTLY``.
    ``estimated_rows`` is the catalog's ``reltuples``: the planner's estimate,
    exact right after a build but not updated by later writes until VACUUM or
    ANALYZE; None if never counted.
    """

    exists: bool
    valid: bool
    bytes: int
    estimated_rows: int | None
    definition: str | None = None


def drop_hnsw_index(
    conn: psycopg.Connection[Any], config: TableConfig, *, concurrently: bool = False
) -> bool:
    """Drop the table's HNSW index if it exists; True when there was one to drop.

    ``concurrently`` does not block the table's readers and writers but needs
    a connection outside a transaction block.
    """
    statement = _drop_statement(config, concurrently=concurrently)
    try:
        if concurrently:
            with _autocommit(conn, config):
                existed = _index_oid(conn, config) is not None
                if existed:
                    conn.execute(statement)
        else:
            with conn.transaction():
                existed = _index_oid(conn, config) is not None
                if existed:
                    conn.execute(statement)
    except psycopg.Error as exc:
        raise DatabaseError(
            f"could not drop index {config.hnsw_index_name} on {config.qualified_name}: {exc}"
        ) from exc
    return existed


def index_status(conn: psycopg.Connection[Any], config: TableConfig) -> IndexStatus:
    """Whether the HNSW index exists and is valid, its size on disk and the planner's row estimate.

    Raises ``DatabaseError`` when the table itself does not exist.
    """
    try:
        _require_table(conn, config)
        row = conn.execute(
            "SELECT i.indisvalid, pg_relation_size(c.oid), c.reltuples, pg_get_indexdef(c.oid)"
            " FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid"
            " WHERE c.oid = to_regclass(%s)",
            (_regclass_text(conn, config),),
        ).fetchone()
    except psycopg.Error as exc:
        raise DatabaseError(
            f"could not read index {config.hnsw_index_name} on {config.qualified_name}: {exc}"
        ) from exc
    if row is None:
        return IndexStatus(exists=False, valid=False, bytes=0, estimated_rows=None)
    valid, size, reltuples, definition = row
    return IndexStatus(
        exists=True,
        valid=bool(valid),
        bytes=int(size),
        estimated_rows=int(reltuples) if reltuples is not None and reltuples >= 0 else None,
        definition=str(definition),
    )


def build_hnsw_index(
    conn: psycopg.Connection[Any],
    config: TableConfig,
    *,
    maintenance_work_mem: int | str | None = None,
    parallel_workers: int | None = None,
    concurrently: bool = False,
    on_progress: Callable[[IndexProgress], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    dsn: str | None = None,
    poll_interval: float = 0.2,
) -> IndexBuildReport:
    """(Re)build the table's HNSW index from its rows, as fast as this machine allows.

    ``maintenance_work_mem`` (bytes, or PostgreSQL text such as ``"2GB"``;
    default :func:`default_maintenance_work_mem` of the estimated graph) and
    ``parallel_workers`` (default :func:`default_parallel_workers`) apply to
    this build only. A rebuild never leaves the table without an index.
    Without ``concurrently`` the old index is dropped and the new one built in
    one transaction (joining the caller's, if one is open): a failed build
    keeps the old index, but the table is locked meanwhile. With
    ``concurrently`` readers and writers carry on: the new index is built
    beside the old one under a temporary name, and only once it is valid is
    the old one dropped and the new one renamed to ``config.hnsw_index_name``;
    a failed or cancelled build drops its invalid leftover and keeps the old
    index, and a leftover of an earlier crashed run is dropped first. The
    connection must not be in a transaction block.

    ``on_progress`` is called from a background thread every ``poll_interval``
    seconds in which ``pg_stat_progress_create_index`` changed, then once with
    :data:`PHASE_DONE`; the polling uses a second connection to ``dsn``
    (default: this connection's parameters, password included).
    ``on_warning`` gets each warning as it happens; all are also in the report.

    >>> build_hnsw_index(conn, TableConfig("docs"), maintenance_work_mem="2GB")  # doctest: +SKIP
    IndexBuildReport(seconds=41.2, rows=1000000, ...)
    """
    if parallel_workers is not None and (
        isinstance(parallel_workers, bool) or not isinstance(parallel_workers, int)
        or parallel_workers < 0
    ):
        raise InvalidConfigError(
            f"parallel_workers must be an integer of 0 or more, got {parallel_workers!r}"
        )
    if poll_interval <= 0:
        raise InvalidConfigError(f"poll_interval must be positive, got {poll_interval!r}")
    memory_setting = None if maintenance_work_mem is None else _setting_text(maintenance_work_mem)
    workers = default_parallel_workers() if parallel_workers is None else parallel_workers
    warnings: list[str] = []

    def warn(message: str) -> None:
        warnings.append(message)
        if on_warning is not None:
            on_warning(message)

    create = _create_statement(config, concurrently=concurrently)
    poller = ProgressPoller(dsn or _dsn_of(conn), conn.info.backend_pid, on_progress,
                             poll_interval)
    swap = False
    creating = False
    try:
        with _build_scope(conn, config, concurrently=concurrently) as set_for_build:
            _require_table(conn, config)
            if concurrently:
                _drop_crashed_rebuild(conn, config)
            rows = _count_rows(conn, config)
            estimate = estimate_hnsw_bytes(rows, config)
            set_for_build("maintenance_work_mem",
                          memory_setting or _setting_text(default_maintenance_work_mem(estimate)))
            set_for_build("max_parallel_maintenance_workers", str(workers))
            memory = _setting_bytes(conn, "maintenance_work_mem")
            if not fits_in_memory(rows, config, memory):
                warn(
                    f"the HNSW graph of {rows:,} rows needs about {_size(estimate)} but "
                    f"maintenance_work_mem is {_size(memory)}: pgvector will build the rest "
                    "on disk, many times slower; give it more maintenance_work_mem"
                )
            if _index_oid(conn, config) is not None:
                if concurrently:
                    swap = True
                    create = _create_statement(config, concurrently=True,
                                               name=_rebuild_index_name(config))
                else:
                    conn.execute(_drop_statement(config, concurrently=False))
            poller.rows = rows
            with _server_notices(conn, warn), poller:
                creating = True
                started = time.perf_counter()
                conn.execute(create)
                seconds = time.perf_counter() - started
            if swap:
                conn.execute(_drop_statement(config, concurrently=True))
                conn.execute(_rename_statement(config))
            if config.adopted:  # a rebuilt index carries the adoption's choices again
                conn.execute(adoption_comment_ddl(config))
            status = index_status(conn, config)
    except psycopg.errors.LockNotAvailable as exc:
        if concurrently and creating:
            _recover_concurrent_build(conn, config)
        raise lock_error(
            f"could not build index {config.hnsw_index_name}", conn, config,
            open_transactions=concurrently,
            why="a concurrent build waits for every transaction older than it to end"
            if concurrently else "a build without CONCURRENTLY waits for the table's writers",
        ) from exc
    except psycopg.Error as exc:
        if concurrently and creating:
            _recover_concurrent_build(conn, config)
        raise DatabaseError(
            f"could not build index {config.hnsw_index_name} on {config.qualified_name}: {exc}"
        ) from exc
    except BaseException:
        if concurrently and creating:
            _recover_concurrent_build(conn, config)
        raise
    for message in poller.warnings:
        warn(message)
    if poller.error is not None:
        raise poller.error
    indexed = status.estimated_rows if status.estimated_rows is not None else rows
    if on_progress is not None:
        on_progress(IndexProgress(PHASE_DONE, indexed, indexed))
    return IndexBuildReport(
        seconds=seconds,
        rows=indexed,
        index_bytes=status.bytes,
        maintenance_work_mem=memory,
        parallel_workers=workers,
        estimated_graph_bytes=estimate,
        warnings=warnings,
    )


@contextmanager
def _build_scope(
    conn: psycopg.Connection[Any], config: TableConfig, *, concurrently: bool
) -> Iterator[Callable[[str, str], None]]:
    """A transaction whose settings are SET LOCAL or, for CONCURRENTLY, autocommit with
    session settings restored afterwards. Yields the function that sets one."""
    if not concurrently:
        with conn.transaction():
            yield lambda name, value: _set_config(conn, name, value, local=True)
        return
    with _autocommit(conn, config):
        old: dict[str, str] = {}

        def set_for_build(name: str, value: str) -> None:
            old.setdefault(name, _current_setting(conn, name))
            _set_config(conn, name, value, local=False)

        try:
            yield set_for_build
        finally:
            if conn.info.transaction_status == TransactionStatus.IDLE:
                for name, value in old.items():
                    _set_config(conn, name, value, local=False)


def _set_config(conn: psycopg.Connection[Any], name: str, value: str, *, local: bool) -> None:
    try:
        conn.execute("SELECT set_config(%s, %s, %s)", (name, value, local))
    except psycopg.errors.InvalidParameterValue as exc:
        raise InvalidConfigError(f"invalid {name} {value!r}: {exc}") from exc


@contextmanager
def _autocommit(conn: psycopg.Connection[Any], config: TableConfig) -> Iterator[None]:
    """Autocommit for statements that cannot run in a transaction block (CONCURRENTLY)."""
    if conn.autocommit:
        yield
        return
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise InvalidConfigError(
            f"a concurrent index operation on {config.qualified_name} cannot run inside a "
            "transaction: commit or roll back first"
        )
    conn.autocommit = True
    try:
        yield
    finally:
        conn.autocommit = False


@contextmanager
def _server_notices(
    conn: psycopg.Connection[Any], warn: Callable[[str], None]
) -> Iterator[None]:
    """Route the server's NOTICEs and WARNINGs during the block to ``warn``."""

    def handler(diag: psycopg.errors.Diagnostic) -> None:
        parts = [diag.message_primary, diag.message_detail, diag.message_hint]
        text = " ".join(p.rstrip(".") + "." for p in parts if p)
        warn(f"{diag.severity_nonlocalized or diag.severity}: {text}")

    conn.add_notice_handler(handler)
    try:
        yield
    finally:
        conn.remove_notice_handler(handler)


def _drop_crashed_rebuild(conn: psycopg.Connection[Any], config: TableConfig) -> None:
    """Deal with the temporary index an earlier concurrent rebuild left when it crashed.

    Dropped, unless it is valid and the configured index is gone: then it is the
    table's only index, and it gets the configured name instead.
    """
    name = _rebuild_index_name(config)
    row = conn.execute(
        "SELECT i.indrelid IS NOT DISTINCT FROM to_regclass(%s),"
        " (SELECT min(p.pid) FROM pg_stat_progress_create_index p"
        "  WHERE p.index_relid = c.oid AND p.pid <> pg_backend_pid())"
        " FROM pg_class c LEFT JOIN pg_index i ON i.indexrelid = c.oid"
        " WHERE c.oid = to_regclass(%s)",
        (config.table.as_string(conn), config.qualified(name).as_string(conn)),
    ).fetchone()
    if row is None:
        return
    ours, builder = row
    if not ours:
        raise DatabaseError(
            f"cannot rebuild the index of {config.qualified_name}: {name} already exists "
            "and is not an index of that table"
        )
    if builder is not None:
        raise DatabaseError(
            f"cannot rebuild the index of {config.qualified_name}: another session "
            f"(backend pid {builder}) is building it; wait for it to finish"
        )
    if _index_validity(conn, config, name) and _index_validity(
        conn, config, config.hnsw_index_name
    ) is None:
        # The crash came between dropping the old index and the rename: the
        # leftover is the only index the table has. Finish the swap.
        conn.execute(_rename_statement(config))
        return
    conn.execute(_drop_statement(config, concurrently=True, name=name))


def _recover_concurrent_build(conn: psycopg.Connection[Any], config: TableConfig) -> None:
    """After a failed concurrent build, keep one valid index under the configured name
    (the old one, or the new one if the old was already dropped) and drop the rest."""
    if conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
        return
    temporary = _rebuild_index_name(config)
    try:
        with _autocommit(conn, config):
            old_valid = _index_validity(conn, config, config.hnsw_index_name)
            new_valid = _index_validity(conn, config, temporary)
            if new_valid and not old_valid:
                if old_valid is not None:
                    conn.execute(_drop_statement(config, concurrently=True))
                conn.execute(_rename_statement(config))
                return
            if new_valid is not None:
                conn.execute(_drop_statement(config, concurrently=True, name=temporary))
            if old_valid is False:
                conn.execute(_drop_statement(config, concurrently=True))
    except (psycopg.Error, MrlPgError):
        pass


def _index_validity(conn: psycopg.Connection[Any], config: TableConfig, name: str) -> bool | None:
    """Whether the index ``name`` of the table is valid; None when the table has no such index."""
    row = conn.execute(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)"
        " AND indrelid = to_regclass(%s)",
        (config.qualified(name).as_string(conn), config.table.as_string(conn)),
    ).fetchone()
    return None if row is None else bool(row[0])


def _rebuild_index_name(config: TableConfig) -> str:
    """The name a concurrent rebuild gives the new index until the swap; at most 63 bytes."""
    base = config.hnsw_index_name[: _MAX_IDENTIFIER_BYTES - len(_REBUILD_SUFFIX)]
    name = base + _REBUILD_SUFFIX
    return name if config.adopted else validate_identifier(name, what="temporary index name")


def _create_statement(
    config: TableConfig, *, concurrently: bool, name: str | None = None
) -> sql.Composed:
    """The schema's HNSW DDL, naming the index ``name`` instead of the configured name."""
    statement = hnsw_index_ddl(config, concurrently=concurrently)
    if name is None:
        return statement
    configured = sql.Identifier(config.hnsw_index_name)
    parts = list(statement)
    if parts.count(configured) != 1:
        raise MrlPgError(
            f"cannot build {config.hnsw_index_name} under the name {name}: "
            "the HNSW index DDL does not name it exactly once"
        )
    return sql.Composed([sql.Identifier(name) if part == configured else part for part in parts])


def _drop_statement(
    config: TableConfig, *, concurrently: bool, name: str | None = None
) -> sql.Composed:
    return sql.SQL("DROP INDEX {}IF EXISTS {}").format(
        sql.SQL("CONCURRENTLY " if concurrently else ""),
        config.qualified(name or config.hnsw_index_name),
    )


def _rename_statement(config: TableConfig) -> sql.Composed:
    return sql.SQL("ALTER INDEX {} RENAME TO {}").format(
        config.qualified(_rebuild_index_name(config)), sql.Identifier(config.hnsw_index_name)
    )


def _require_table(conn: psycopg.Connection[Any], config: TableConfig) -> None:
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (config.table.as_string(conn),)
    ).fetchone()
    if row is None or not row[0]:
        raise DatabaseError(f"table {config.qualified_name} does not exist")


def _index_oid(conn: psycopg.Connection[Any], config: TableConfig) -> int | None:
    row = conn.execute(
        "SELECT to_regclass(%s)::oid", (_regclass_text(conn, config),)
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def _regclass_text(conn: psycopg.Connection[Any], config: TableConfig) -> str:
    return config.qualified(config.hnsw_index_name).as_string(conn)


def _count_rows(conn: psycopg.Connection[Any], config: TableConfig) -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE {} IS NOT NULL").format(
            config.table, sql.Identifier(config.embedding_column)
        )
    ).fetchone()
    return int(row[0]) if row else 0


def _current_setting(conn: psycopg.Connection[Any], name: str) -> str:
    row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
    if row is None:
        raise DatabaseError(f"could not read the setting {name}: the server returned no row")
    return str(row[0])


def _setting_bytes(conn: psycopg.Connection[Any], name: str) -> int:
    row = conn.execute("SELECT pg_size_bytes(current_setting(%s))", (name,)).fetchone()
    if row is None:
        raise DatabaseError(f"could not read the setting {name}: the server returned no row")
    return int(row[0])


def _setting_text(value: int | str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidConfigError(
            f"maintenance_work_mem must be bytes or text such as '2GB', got {value!r}"
        )
    if isinstance(value, int):
        if value < _MB:
            raise InvalidConfigError(
                f"maintenance_work_mem {value} bytes is below PostgreSQL's minimum of 1MB"
            )
        return f"{value // _KB}kB"
    return value.strip()


def _dsn_of(conn: psycopg.Connection[Any]) -> str:
    """This connection's parameters; ``info.dsn`` leaves the password out, so add it back."""
    password = conn.info.password
    return make_conninfo(conn.info.dsn, password=password) if password else conn.info.dsn
