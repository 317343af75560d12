"""Writing a batch into an adopted table: text COPY into staging, one upsert on the key.

The staging table is made from the table's own columns (``CREATE TABLE AS
... WITH NO DATA``), so PostgreSQL parses every value into the column's own
type. The upsert updates only the columns a record gave, skips rows that
would not change, and, where a tenant column is not part of the key, never
touches a row of another tenant: such a row makes the whole load fail.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from mrl_pg.config import TableConfig
from mrl_pg.errors import DatabaseError, IngestError, InvalidConfigError
from mrl_pg.vectors import FloatArray

_LINE = "mrl_pg_line"
# Types without an equality operator are compared as text.
_COMPARED_AS_TEXT = {"json", "xml", "point", "line", "lseg", "box", "path", "polygon", "circle"}
_COPY_CONTEXT = re.compile(r"\bline (\d+)(?:, column ([^:]+))?")


@dataclass
class RowBatch:
    """Checked records of an adopted table: column values, embeddings, texts to embed."""

    rows: list[dict[str, Any]]
    embeddings: list[FloatArray | None]
    texts: list[str | None]
    span: str
    lines: list[int]


class TableWriter:
    """Writes :class:`RowBatch` es; records with different columns go in separate statements."""

    direct = False  # always through staging: the table is someone's live table

    def __init__(
        self, conn: psycopg.Connection[Any], config: TableConfig, *, source: str | Path | None
    ) -> None:
        self._conn = conn
        self._config = config
        self._source = source
        self._prefix = f"mrl_pg_staging_{uuid.uuid4().hex[:12]}"
        self._staging: dict[tuple[str, ...], sql.Identifier] = {}
        column_types = config.filterable_columns
        self._types = {name: entry[2] for name, entry in column_types.items()}
        tenant = config.tenant_column
        self._guard_tenant = tenant is not None and tenant not in config.upsert_key

    def prepare(self) -> None:
        """Check the table still has the embedding column the configuration describes."""
        config = self._config
        with self._conn.cursor(row_factory=tuple_row) as cur:
            found = cur.execute(
                "SELECT t.typname, a.atttypmod FROM pg_attribute AS a"
                " JOIN pg_type AS t ON t.oid = a.atttypid"
                " WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND NOT a.attisdropped",
                (config.table.as_string(self._conn), config.embedding_column),
            ).fetchone()
            if found is None:
                exists = cur.execute("SELECT to_regclass(%s) IS NOT NULL",
                                     (config.table.as_string(self._conn),)).fetchone()
                if not exists or not exists[0]:
                    raise DatabaseError(f"table {config.qualified_name} does not exist")
        if found is None or tuple(found) != (config.embedding_type, config.full_dim):
            actual = "no such column" if found is None else f"{found[0]}({found[1]})"
            raise InvalidConfigError(
                f"embedding column {config.embedding_column!r} of {config.qualified_name} is "
                f"{actual}, but the configuration says "
                f"{config.embedding_type}({config.full_dim})")

    def new_transaction(self) -> None:
        self._staging.clear()  # ON COMMIT DROP took them

    def write(self, batch: RowBatch) -> tuple[int, int]:
        """Write one batch; returns (inserted, updated)."""
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, row in enumerate(batch.rows):
            columns = (*(c for c in self._types if c in row), self._config.embedding_column)
            groups.setdefault(columns, []).append(i)
        inserted = updated = 0
        with self._conn.cursor(row_factory=tuple_row) as cur:
            for columns, positions in groups.items():
                staging = self._stage(cur, columns, batch, positions)
                counts = cur.execute(self._upsert(columns, staging)).fetchone()
                if counts is None:
                    raise DatabaseError(
                        f"the upsert into {self._config.qualified_name} returned no counts")
                inserted += int(counts[0])
                updated += int(counts[1])
                if self._guard_tenant and all(k in columns for k in self._config.upsert_key):
                    self._refuse_other_tenants(cur, staging)
        return inserted, updated

    def _stage(
        self, cur: psycopg.Cursor[Any], columns: tuple[str, ...], batch: RowBatch,
        positions: list[int],
    ) -> sql.Identifier:
        names = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        staging = self._staging.get(columns)
        if staging is None:
            staging = sql.Identifier("pg_temp", f"{self._prefix}_{len(self._staging)}")
            cur.execute(sql.SQL(
                "CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {}, 0 AS {} FROM {} WITH NO DATA"
            ).format(staging, names, sql.Identifier(_LINE), self._config.table))
            self._staging[columns] = staging
        else:
            cur.execute(sql.SQL("TRUNCATE {}").format(staging))
        embedding = self._config.embedding_column
        copy_sql = sql.SQL("COPY {} ({}, {}) FROM STDIN").format(
            staging, names, sql.Identifier(_LINE))
        try:
            with cur.copy(copy_sql) as copy:
                for i in positions:
                    row = batch.rows[i]
                    copy.write_row([*(batch.embeddings[i] if c == embedding else row[c]
                                      for c in columns), batch.lines[i]])
        except psycopg.errors.DataError as exc:
            raise self._value_error(exc, batch, positions) from exc
        return staging

    def _value_error(
        self, exc: psycopg.errors.DataError, batch: RowBatch, positions: list[int]
    ) -> Exception:
        # COPY says which of its lines and which column; name the record instead.
        match = _COPY_CONTEXT.search(exc.diag.context or "")
        message = " ".join((exc.diag.message_primary or str(exc)).split())
        if match is None or not 1 <= int(match[1]) <= len(positions):
            return DatabaseError(f"could not load {batch.span}: {message}")
        column = f"{match[2].strip()}: " if match[2] else ""
        return IngestError(f"{column}{message}", path=self._source,
                           line=batch.lines[positions[int(match[1]) - 1]])

    def _upsert(self, columns: tuple[str, ...], staging: sql.Identifier) -> sql.Composed:
        config = self._config
        names = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        changing = [c for c in columns if c not in config.upsert_key]
        action: sql.Composable
        if changing:
            def compared(alias: str, column: str) -> sql.Composable:
                ref = sql.SQL("{}.{}").format(sql.SQL(alias), sql.Identifier(column))
                if self._types.get(column) in _COMPARED_AS_TEXT:
                    return sql.SQL("{}::text").format(ref)
                return ref

            guard = (sql.SQL("t.{c} = EXCLUDED.{c} AND ").format(
                c=sql.Identifier(config.tenant_column or "")) if self._guard_tenant
                else sql.SQL(""))
            action = sql.SQL(
                "DO UPDATE SET {sets} WHERE {guard}ROW({old}) IS DISTINCT FROM ROW({new})"
            ).format(
                sets=sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(
                    c=sql.Identifier(c)) for c in changing),
                guard=guard,
                old=sql.SQL(", ").join(compared("t", c) for c in changing),
                new=sql.SQL(", ").join(compared("EXCLUDED", c) for c in changing))
        else:
            action = sql.SQL("DO NOTHING")
        # ``xmax = 0`` holds for a freshly inserted row version only, so it tells
        # inserts from updates; rows the WHERE clause skips are not returned at all.
        # A key GENERATED ALWAYS AS IDENTITY refuses a given value, even for a record that
        # only updates its row, unless the INSERT says OVERRIDING SYSTEM VALUE (a no-op for
        # a table without such a column).
        return sql.SQL(
            "WITH written AS ("
            "INSERT INTO {table} AS t ({names}) OVERRIDING SYSTEM VALUE "
            "SELECT {names} FROM {staging} ORDER BY {line} "
            "ON CONFLICT ({key}) {action} RETURNING (xmax = 0) AS inserted) "
            "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) "
            "FROM written"
        ).format(table=config.table, names=names, staging=staging, line=sql.Identifier(_LINE),
                 key=sql.SQL(", ").join(sql.Identifier(c) for c in config.upsert_key),
                 action=action)

    def _refuse_other_tenants(self, cur: psycopg.Cursor[Any], staging: sql.Identifier) -> None:
        # After the upsert a row with a record's key holds the record's tenant, unless the
        # row belonged to another tenant and the guard left it alone.
        config = self._config
        key = config.upsert_key
        tenant = sql.Identifier(config.tenant_column or "")
        found = cur.execute(sql.SQL(
            "SELECT s.{line}, concat_ws(', ', {values}) FROM {staging} AS s "
            "JOIN {table} AS t ON {join} WHERE t.{tenant} IS DISTINCT FROM s.{tenant} "
            "ORDER BY s.{line} LIMIT 1"
        ).format(
            line=sql.Identifier(_LINE), staging=staging, table=config.table, tenant=tenant,
            values=sql.SQL(", ").join(sql.SQL("s.{}::text").format(sql.Identifier(k))
                                      for k in key),
            join=sql.SQL(" AND ").join(sql.SQL("t.{c} = s.{c}").format(c=sql.Identifier(k))
                                       for k in key),
        )).fetchone()
        if found is not None:
            raise IngestError(
                f"({', '.join(key)})=({found[1]}) is a row of another tenant: an ingest never "
                f"overwrites another tenant's row, so nothing was written",
                path=self._source, line=int(found[0]))
