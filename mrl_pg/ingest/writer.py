"""Writing one batch into a table mrl_pg created: binary COPY straight into an empty table,
else staging and an upsert on ``external_id`` (per tenant, with a tenant column)."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from mrl_pg.config import TableConfig
from mrl_pg.errors import DatabaseError, InvalidConfigError
from mrl_pg.ingest.batches import _Batch

_COLUMNS = ("external_id", "content", "metadata")
_COPY_TYPES = ["text", "text", "jsonb", "vector"]


class _Writer:
    """Writes batches: straight into an empty table, else through staging and an upsert."""

    def __init__(
        self, conn: psycopg.Connection[Any], config: TableConfig, *, tenant: str | None = None
    ) -> None:
        self._conn = conn
        self._config = config
        self._tenant = tenant
        self._staging = sql.Identifier("pg_temp", f"mrl_pg_staging_{uuid.uuid4().hex[:12]}")
        self._staging_exists = False
        self.direct = False
        embedding = sql.Identifier(config.embedding_column)
        tenant_column = [config.tenant_column] if config.tenant_column else []
        columns = sql.SQL(", ").join(
            [*(sql.Identifier(c) for c in [*tenant_column, *_COLUMNS]), embedding]
        )
        self._copy_types = ["text"] * len(tenant_column) + _COPY_TYPES
        self._copy_direct = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT BINARY)").format(
            config.table, columns
        )
        self._copy_staging = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT BINARY)").format(
            self._staging, columns
        )
        self._create_staging = sql.SQL(
            "CREATE TEMP TABLE {} ({}external_id text, content text, metadata jsonb, "
            "{} vector({})) ON COMMIT DROP"
        ).format(self._staging, sql.SQL("").join(
            sql.SQL("{} text, ").format(sql.Identifier(c)) for c in tenant_column),
            embedding, sql.Literal(config.full_dim))
        self._truncate_staging = sql.SQL("TRUNCATE {}").format(self._staging)
        # ``xmax = 0`` holds for a freshly inserted row version only, so it tells
        # inserts from updates; rows the WHERE clause skips are not returned at all.
        self._upsert = sql.SQL(
            "WITH written AS ("
            "INSERT INTO {table} AS t ({columns}) SELECT {columns} FROM {staging} "
            "ON CONFLICT ({key}) DO UPDATE SET content = EXCLUDED.content, "
            "metadata = EXCLUDED.metadata, {embedding} = EXCLUDED.{embedding} "
            "WHERE (t.content, t.metadata, t.{embedding}) IS DISTINCT FROM "
            "(EXCLUDED.content, EXCLUDED.metadata, EXCLUDED.{embedding}) "
            "RETURNING (xmax = 0) AS inserted) "
            "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) "
            "FROM written"
        ).format(table=config.table, columns=columns, staging=self._staging, embedding=embedding,
                 key=sql.SQL(", ").join(sql.Identifier(c) for c in config.upsert_key))

    def prepare(self) -> None:
        """Check the table against the configuration; copy directly if it is empty."""
        with self._conn.cursor(row_factory=tuple_row) as cur:
            self.direct = self._check_table(cur)

    def _check_table(self, cur: psycopg.Cursor[tuple[Any, ...]]) -> bool:
        config = self._config
        found = cur.execute(
            "SELECT a.attname, a.atttypmod FROM pg_attribute a"
            " WHERE a.attrelid = to_regclass(%s) AND a.attname = ANY(%s) AND NOT a.attisdropped",
            (config.table.as_string(self._conn),
             [config.embedding_column, config.stored_prefix_column]),
        ).fetchall()
        typmods: dict[str, int] = dict(found)
        if not typmods:
            exists = cur.execute("SELECT to_regclass(%s) IS NOT NULL",
                                 (config.table.as_string(self._conn),)).fetchone()
            if not exists or not exists[0]:
                raise DatabaseError(f"table {config.qualified_name} does not exist")
        n = typmods.get(config.embedding_column)
        p = typmods.get(config.stored_prefix_column)
        if (n, p) != (config.full_dim, config.prefix_dim):
            raise InvalidConfigError(
                f"table {config.qualified_name} has vector({n}) embeddings and a halfvec({p}) "
                f"prefix, but the configuration says full_dim={config.full_dim}, "
                f"prefix_dim={config.prefix_dim}"
            )
        empty = cur.execute(
            sql.SQL("SELECT NOT EXISTS (SELECT FROM {})").format(config.table)
        ).fetchone()
        # Ids are unique within a load, so into an empty table every row is new and
        # needs no staging; a concurrent writer of the same ids makes the load fail.
        return bool(empty and empty[0])

    def new_transaction(self) -> None:
        self._staging_exists = False

    def write(self, batch: _Batch) -> tuple[int, int]:
        """Write one batch; returns (inserted, updated)."""
        with self._conn.cursor(row_factory=tuple_row) as cur:
            if self.direct:
                self._copy(cur, self._copy_direct, batch)
                return len(batch.external_ids), 0
            cur.execute(self._truncate_staging if self._staging_exists else self._create_staging)
            self._staging_exists = True
            self._copy(cur, self._copy_staging, batch)
            counts = cur.execute(self._upsert).fetchone()
        if counts is None:
            raise DatabaseError(f"the upsert into {self._config.qualified_name} returned no counts")
        return int(counts[0]), int(counts[1])

    def _copy(self, cur: psycopg.Cursor[Any], statement: sql.Composed, batch: _Batch) -> None:
        rows: Any = zip(batch.external_ids, batch.contents, batch.metadatas, batch.embeddings,
                        strict=True)
        if self._config.tenant_column:
            rows = ((self._tenant, *row) for row in rows)
        with cur.copy(statement) as copy:
            copy.set_types(self._copy_types)
            for row in rows:
                copy.write_row(row)
