"""Reading an existing table's description from the PostgreSQL catalog."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from mrl_pg.config import (
    DEFAULT_HNSW_EF_CONSTRUCTION,
    DEFAULT_HNSW_M,
    DEFAULT_PREFIX_DIM,
    EMBEDDING_TYPES,
    PGVECTOR_DEFAULT_EF_CONSTRUCTION,
    PGVECTOR_DEFAULT_M,
    ColumnType,
    TableConfig,
    validate_identifier,
)
from mrl_pg.errors import InvalidConfigError
from mrl_pg.schema.adoption import adoption_choices

__all__ = [
    "describe_existing_table", "describe_table", "TableColumn",
]

_VECTOR_TYPES = ("vector", "halfvec", "sparsevec")

_COLUMNS = """
SELECT a.attname, tn.nspname, t.typname, coalesce(at.typname, ''), a.atttypmod,
       a.attgenerated <> '', c.relnamespace::regnamespace::text
FROM pg_attribute AS a
JOIN pg_class AS c ON c.oid = a.attrelid
JOIN pg_type AS t ON t.oid = a.atttypid
JOIN pg_namespace AS tn ON tn.oid = t.typnamespace
LEFT JOIN pg_type AS at ON at.oid = t.typarray
WHERE a.attrelid = %(table)s::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

# Unique, non-partial indexes on plain columns: (is primary, column names in index order).
_UNIQUE_KEYS = """
SELECT i.indisprimary,
       array(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
             JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             ORDER BY k.n)
FROM pg_index AS i
WHERE i.indrelid = %(table)s::regclass AND i.indisunique AND i.indisvalid
  AND i.indpred IS NULL AND NOT (0 = ANY (i.indkey))
ORDER BY i.indisprimary DESC, i.indexrelid
"""


@dataclass(frozen=True)
class TableColumn:
    name: str
    type_schema: str
    type_name: str
    array_type_name: str
    typmod: int
    generated: bool

    @property
    def is_vector(self) -> bool:
        return self.type_name in _VECTOR_TYPES

    @property
    def column_type(self) -> ColumnType:
        return (self.name, self.type_schema, self.type_name, self.array_type_name)


def _table_literal(schema: str | None, table: str) -> str:

    ident = sql.Identifier(schema, table) if schema else sql.Identifier(table)
    return ident.as_string(None)


# The adopted prefix index's expression as pg_get_expr prints it.
_PREFIX_EXPRESSION = re.compile(
    r'\(l2_normalize\(subvector\((?P<column>"(?:[^"]|"")+"|[^\s,()"]+), 1, (?P<p>\d+)\)\)\)'
    r'::halfvec\((?P=p)\)\Z')

_PREFIX_INDEX = """
SELECT pg_get_expr(i.indexprs, i.indrelid), i.indisvalid, c.reloptions,
       obj_description(i.indexrelid, 'pg_class')
FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
WHERE i.indrelid = %(table)s::regclass AND c.relname = %(index)s
"""

_MANAGED_COLUMNS = {"id", "external_id", "content", "metadata", "embedding", "embedding_prefix",
                    "created_at"}


def _unquote(name: str) -> str:
    return name[1:-1].replace('""', '"') if name.startswith('"') else name


def _table_columns(
    conn: psycopg.Connection[Any], table: str, schema: str | None
) -> tuple[str, str, list[tuple[Any, ...]]]:
    """(regclass text, name for messages, the rows of :data:`_COLUMNS`) of an existing table."""
    validate_identifier(table, what="table name")
    if schema is not None:
        validate_identifier(schema, what="schema name")
    name = _table_literal(schema, table)
    shown = f"{schema}.{table}" if schema else table
    with conn.cursor() as cur:
        found = cur.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
        if not found or not found[0]:
            raise InvalidConfigError(f"table {shown} does not exist (or is not on the search_path)")
        return name, shown, cur.execute(_COLUMNS, {"table": name}).fetchall()


def describe_table(
    conn: psycopg.Connection[Any], table: str, *, schema: str | None = None
) -> TableConfig:
    """The description of a table mrl_pg can already search, read from the catalog.

    A table mrl_pg created (its generated prefix column) or one adopted with
    :func:`mrl_pg.index.adopt.adopt_table` (its prefix expression index, which
    records the embedding column and the prefix dimension): the CLI and other
    callers then need nothing but the table's name.
    """
    name, shown, rows = _table_columns(conn, table, schema)
    columns = {r[0]: TableColumn(r[0], r[1], r[2], r[3], int(r[4]), bool(r[5])) for r in rows}
    with conn.cursor() as cur:
        index = TableConfig(table, full_dim=2, prefix_dim=1).hnsw_index_name
        prefix_index = cur.execute(_PREFIX_INDEX, {"table": name, "index": index}).fetchone()
    # No index yet: what mrl_pg would build. An index without the option: pgvector's default.
    options = dict(o.split("=", 1) for o in (prefix_index[2] or [])) if prefix_index else {
        "m": DEFAULT_HNSW_M, "ef_construction": DEFAULT_HNSW_EF_CONSTRUCTION}
    hnsw = {"hnsw_m": int(options.get("m", PGVECTOR_DEFAULT_M)),
            "hnsw_ef_construction": int(options.get("ef_construction",
                                                    PGVECTOR_DEFAULT_EF_CONSTRUCTION))}
    prefix = columns.get("embedding_prefix")
    if _MANAGED_COLUMNS <= set(columns) and prefix is not None and prefix.generated:
        # The tenant column is the one mrl_pg's unique key pairs with external_id
        # (UNIQUE (tenant, external_id)); a model's own extra columns are not tenants.
        with conn.cursor() as cur:
            keys = [tuple(r[1]) for r in cur.execute(_UNIQUE_KEYS, {"table": name}).fetchall()]
        tenants = [k[0] for k in keys if len(k) == 2 and k[1] == "external_id"
                   and k[0] not in _MANAGED_COLUMNS]
        tenant = tenants[0] if tenants else None
        return TableConfig(table, full_dim=columns["embedding"].typmod, prefix_dim=prefix.typmod,
                           schema=schema, tenant_column=tenant, hnsw_m=hnsw["hnsw_m"],
                           hnsw_ef_construction=hnsw["hnsw_ef_construction"])
    match = _PREFIX_EXPRESSION.match(prefix_index[0] or "") if prefix_index else None
    if match is None:
        raise InvalidConfigError(
            f"table {shown} is neither a table mrl_pg created nor an adopted one (no index "
            f"{index} on the embedding's prefix): adopt it first (mrl-pg adopt {table} "
            "--embedding COLUMN)")
    # What adopt_table recorded on the index: the choices the catalog cannot tell.
    choices = adoption_choices(prefix_index[3] if prefix_index else None)
    return describe_existing_table(
        conn, table, embedding=_unquote(match["column"]), prefix_dim=int(match["p"]),
        schema=schema, key=choices.get("key"), columns=choices.get("columns"),
        metadata=choices.get("metadata"), tenant=choices.get("tenant"), **hnsw)


_NULLABLE = """
SELECT a.attname FROM pg_attribute AS a
WHERE a.attrelid = %(table)s::regclass AND a.attname = ANY(%(key)s) AND NOT a.attnotnull
ORDER BY a.attnum
"""


def _refuse_nullable_key(
    conn: psycopg.Connection[Any], name: str, shown: str, key: tuple[str, ...]
) -> None:
    """A search joins its best candidates back to the table on the key, and NULL never
    equals NULL: a row whose key is NULL would be dropped from every result (and a UNIQUE
    key allows many of them). So a key must be NOT NULL; say which column and the fix."""
    with conn.cursor() as cur:
        nullable = [r[0] for r in cur.execute(
            _NULLABLE, {"table": name, "key": list(key)}).fetchall()]
    if nullable:
        columns = ", ".join(nullable)
        raise InvalidConfigError(
            f"key column {columns} of {shown} may hold NULL: a search joins its results back "
            f"on the key, and a row whose key is NULL would never come back. Make it NOT NULL "
            f"(ALTER TABLE {shown} ALTER COLUMN {nullable[0]} SET NOT NULL) or use another key")


def describe_existing_table(
    conn: psycopg.Connection[Any],
    table: str,
    *,
    embedding: str | None,
    prefix_dim: int | None,
    schema: str | None,
    key: tuple[str, ...] | None,
    columns: tuple[str, ...] | None,
    metadata: str | None,
    tenant: str | None,
    hnsw_m: int,
    hnsw_ef_construction: int,
) -> TableConfig:
    """See :func:`table_config`; every argument explicit."""
    if embedding is None or prefix_dim is None:
        try:
            recorded = describe_table(conn, table, schema=schema)
        except InvalidConfigError:
            recorded = None
        if recorded is not None and recorded.adopted:
            embedding = embedding or recorded.embedding_column
            prefix_dim = recorded.prefix_dim if prefix_dim is None else prefix_dim
        embedding = embedding or "embedding"
        prefix_dim = DEFAULT_PREFIX_DIM if prefix_dim is None else prefix_dim
    name, shown, rows = _table_columns(conn, table, schema)
    with conn.cursor() as cur:
        unique_keys = [(bool(r[0]), tuple(r[1])) for r in cur.execute(
            _UNIQUE_KEYS, {"table": name}).fetchall()]
    table_columns = {r[0]: TableColumn(r[0], r[1], r[2], r[3], int(r[4]), bool(r[5]))
                     for r in rows}
    actual_schema = str(rows[0][6]) if rows else schema

    def column(what: str, wanted: str) -> TableColumn:
        if wanted not in table_columns:
            raise InvalidConfigError(
                f"table {shown} has no {what} column {wanted!r}; its columns are "
                f"{', '.join(table_columns)}")
        return table_columns[wanted]

    vector = column("embedding", embedding)
    if vector.type_name not in EMBEDDING_TYPES:
        raise InvalidConfigError(
            f"embedding column {embedding!r} of {shown} is {vector.type_name}, "
            "expected vector(N) or halfvec(N)")
    if vector.typmod < 1:
        raise InvalidConfigError(
            f"embedding column {embedding!r} of {shown} has no dimension: "
            f"declare it {vector.type_name}(N)")
    if metadata is not None and column("metadata", metadata).type_name != "jsonb":
        raise InvalidConfigError(
            f"metadata column {metadata!r} of {shown} is {table_columns[metadata].type_name}, "
            "expected jsonb")
    if tenant is not None and column("tenant", tenant).is_vector:
        raise InvalidConfigError(f"tenant column {tenant!r} of {shown} is a vector")
    if key is None:
        primary = [cols for is_primary, cols in unique_keys if is_primary]
        if not primary:
            raise InvalidConfigError(
                f"table {shown} has no primary key: name the columns of a unique "
                "constraint as key=(...)")
        key = primary[0]
    else:
        for part in key:
            column("key", part)
        if not any(set(cols) == set(key) for _, cols in unique_keys):
            raise InvalidConfigError(
                f"key ({', '.join(key)}) of {shown} is not a primary key or unique constraint: "
                "a search joins its candidates back on it, so it must be unique")
    _refuse_nullable_key(conn, name, shown, key)
    if columns is None:
        columns = tuple(c.name for c in table_columns.values() if not c.is_vector)
    else:
        for wanted in columns:
            column("returned", wanted)
    if "distance" in columns:
        raise InvalidConfigError(
            f"table {shown} has a column named 'distance', which clashes with the distance "
            "a search returns: pass columns=(...) without it")
    return TableConfig(
        name=table,
        schema=actual_schema,
        full_dim=vector.typmod,
        prefix_dim=prefix_dim,
        hnsw_m=hnsw_m,
        hnsw_ef_construction=hnsw_ef_construction,
        embedding_column=embedding,
        embedding_type=vector.type_name,
        prefix_column=None,
        key=key,
        columns=columns,
        metadata_column=metadata,
        tenant_column=tenant,
        column_types=tuple(c.column_type for c in table_columns.values() if not c.is_vector),
        adopted=True,
    )


def table_config(
    conn: psycopg.Connection[Any],
    table: str,
    *,
    embedding: str | None = None,
    prefix_dim: int | None = None,
    schema: str | None = None,
    key: tuple[str, ...] | list[str] | None = None,
    columns: tuple[str, ...] | list[str] | None = None,
    metadata: str | None = None,
    tenant: str | None = None,
    hnsw_m: int = DEFAULT_HNSW_M,
    hnsw_ef_construction: int = DEFAULT_HNSW_EF_CONSTRUCTION,
) -> TableConfig:
    """Describe an existing table from the catalog, to search it where it is.

    ``embedding`` must be a ``vector(N)`` or ``halfvec(N)`` column. Left
    out, ``embedding`` and ``prefix_dim`` are what the table's adoption
    recorded (its prefix index), else ``"embedding"`` and 512. ``key``
    defaults to the primary key (else name the columns of a unique
    constraint); ``columns`` (what a search returns) defaults to every
    column but the vectors. The prefix is held by an expression index
    (``mrl-pg adopt``), not a new column. A missing column or a wrong type
    raises :class:`~mrl_pg.errors.InvalidConfigError` naming it.

    >>> table_config(conn, "articles", embedding="embedding")  # doctest: +SKIP
    """
    return describe_existing_table(
        conn, table, embedding=embedding, prefix_dim=prefix_dim, schema=schema,
        key=None if key is None else tuple(key),
        columns=None if columns is None else tuple(columns), metadata=metadata,
        tenant=tenant, hnsw_m=hnsw_m, hnsw_ef_construction=hnsw_ef_construction)
