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
    validate_table_name,
)
from mrl_pg.errors import InvalidConfigError
from mrl_pg.schema.adoption import adoption_choices
from mrl_pg.schema.search_function import SEARCH_FUNCTION_ARGS

__all__ = [
    "describe_existing_table", "describe_table", "table_config", "TableColumn", "Spelling",
    "PYTHON", "CLI",
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
    validate_table_name(table)
    if schema is not None:
        validate_identifier(schema, what="schema name")
    name = _table_literal(schema, table)
    shown = f"{schema}.{table}" if schema else table
    with conn.cursor() as cur:
        found = cur.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
        if not found or not found[0]:
            raise InvalidConfigError(f"table {shown} does not exist (or is not on the search_path)")
        return name, shown, cur.execute(_COLUMNS, {"table": name}).fetchall()


_FUNCTION_COLUMNS = """
SELECT coalesce(array(SELECT n FROM unnest(p.proargnames, p.proargmodes) AS a(n, m)
                      WHERE a.m = 't'), '{}')
FROM pg_proc AS p
WHERE p.oid = to_regprocedure(%(function)s)
"""


@dataclass(frozen=True)
class Spelling:
    """How an error names the choice a caller can change: Python keywords or CLI flags."""

    key: str = "key=(...)"
    columns: str = "columns=(...)"
    repair: str = "mrl_pg.adopt_table(conn, mrl_pg.table_config(conn, {table!r}))"


PYTHON = Spelling()
CLI = Spelling(key="--key COL[,COL...]",
               columns="--columns COL[,COL...]", repair="mrl-pg adopt {table}")


@dataclass(frozen=True)
class _Adoption:
    """What an adoption left in the catalog: its prefix index and the choices it recorded."""

    embedding: str
    prefix_dim: int
    choices: dict[str, Any]
    hnsw: dict[str, int]


def _names(table: str, schema: str | None = None) -> TableConfig:
    """A stand-in description of ``table``, for the names derived from it."""
    return TableConfig(table, full_dim=2, prefix_dim=1, schema=schema, prefix_column=None,
                       adopted=True)


def _prefix_index_row(cur: Any, name: str, table: str) -> Any:
    index = _names(table).hnsw_index_name
    return cur.execute(_PREFIX_INDEX, {"table": name, "index": index}).fetchone()


def _hnsw_options(prefix_index: Any) -> dict[str, int]:
    # No index yet: what mrl_pg would build. An index without the option: pgvector's default.
    options = dict(o.split("=", 1) for o in (prefix_index[2] or [])) if prefix_index else {
        "m": DEFAULT_HNSW_M, "ef_construction": DEFAULT_HNSW_EF_CONSTRUCTION}
    return {"hnsw_m": int(options.get("m", PGVECTOR_DEFAULT_M)),
            "hnsw_ef_construction": int(options.get("ef_construction",
                                                    PGVECTOR_DEFAULT_EF_CONSTRUCTION))}


def _adoption(prefix_index: Any) -> _Adoption | None:
    match = _PREFIX_EXPRESSION.match(prefix_index[0] or "") if prefix_index else None
    if match is None:
        return None
    return _Adoption(_unquote(match["column"]), int(match["p"]),
                     adoption_choices(prefix_index[3]), _hnsw_options(prefix_index))


def _created_by_mrl_pg(columns: dict[str, TableColumn]) -> bool:
    """mrl_pg's own layout: its columns, the prefix a generated column."""
    prefix = columns.get("embedding_prefix")
    return _MANAGED_COLUMNS <= set(columns) and prefix is not None and prefix.generated


def _missing(wanted: Any, columns: dict[str, TableColumn]) -> list[str]:
    names = [wanted] if isinstance(wanted, str) else list(wanted or ())
    return [n for n in names if n not in columns]


def describe_table(
    conn: psycopg.Connection[Any], table: str, *, schema: str | None = None,
    spelling: Spelling = PYTHON,
) -> TableConfig:
    """The description of a table mrl_pg can already search, read from the catalog.

    A table mrl_pg created (its generated prefix column) or one adopted with
    :func:`mrl_pg.index.adopt.adopt_table` (its prefix expression index, which
    records the embedding column and the prefix dimension, and a comment on it
    the key, returned columns, metadata and tenant columns): the CLI and other
    callers then need nothing but the table's name. An adopted table whose
    columns changed under its adoption (a returned, key or tenant column dropped)
    is refused with the command that adopts it again.
    """
    name, shown, rows = _table_columns(conn, table, schema)
    columns = {r[0]: TableColumn(r[0], r[1], r[2], r[3], int(r[4]), bool(r[5])) for r in rows}
    with conn.cursor() as cur:
        prefix_index = _prefix_index_row(cur, name, table)
    hnsw = _hnsw_options(prefix_index)
    prefix = columns.get("embedding_prefix")
    if _created_by_mrl_pg(columns) and prefix is not None:
        # The tenant column is the one mrl_pg's unique key pairs with external_id
        # (UNIQUE (tenant, external_id)); a model's own extra columns are not tenants.
        validate_identifier(table, what="table name")
        with conn.cursor() as cur:
            keys = [tuple(r[1]) for r in cur.execute(_UNIQUE_KEYS, {"table": name}).fetchall()]
        tenants = [k[0] for k in keys if len(k) == 2 and k[1] == "external_id"
                   and k[0] not in _MANAGED_COLUMNS]
        tenant = tenants[0] if tenants else None
        return TableConfig(table, full_dim=columns["embedding"].typmod, prefix_dim=prefix.typmod,
                           schema=schema, tenant_column=tenant, hnsw_m=hnsw["hnsw_m"],
                           hnsw_ef_construction=hnsw["hnsw_ef_construction"])
    adoption = _adoption(prefix_index)
    if adoption is None:
        index = _names(table).hnsw_index_name
        raise InvalidConfigError(
            f"table {shown} is neither a table mrl_pg created nor an adopted one (no index "
            f"{index} on the embedding's prefix): adopt it first (mrl-pg adopt {table} "
            "--embedding COLUMN)")
    # What adopt_table recorded on the index: the choices the catalog cannot tell.
    choices = adoption.choices
    gone = [*_missing(choices.get("key"), columns), *_missing(choices.get("columns"), columns),
            *_missing(choices.get("metadata"), columns), *_missing(choices.get("tenant"), columns)]
    names = _names(table, schema)
    function = names.qualified(names.search_function_name).as_string(None)
    with conn.cursor() as cur:
        returned = cur.execute(_FUNCTION_COLUMNS, {
            "function": f"{function}({SEARCH_FUNCTION_ARGS})"}).fetchone()
    gone += [c for c in (returned[0] if returned else []) if c != "distance" and c not in columns
             and c not in gone]
    if gone:
        raise InvalidConfigError(
            f"table {shown} changed since it was adopted: column"
            f"{'s' if len(gone) > 1 else ''} {', '.join(map(repr, gone))} of its adoption "
            f"(search function {names.search_function_name}) no longer exist"
            f"{'s' if len(gone) == 1 else ''}; adopt it again to follow the table: "
            + spelling.repair.format(table=table))
    return describe_existing_table(
        conn, table, embedding=adoption.embedding, prefix_dim=adoption.prefix_dim,
        schema=schema, key=choices.get("key"), columns=choices.get("columns"),
        metadata=choices.get("metadata"), tenant=choices.get("tenant"), spelling=spelling,
        **hnsw)


def _recorded_adoption(
    conn: psycopg.Connection[Any], name: str, table: str
) -> _Adoption | None:
    with conn.cursor() as cur:
        return _adoption(_prefix_index_row(cur, name, table))


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
    spelling: Spelling = PYTHON,
) -> TableConfig:
    """See :func:`table_config`; every argument explicit. ``None`` takes what an earlier
    adoption of the table recorded, if there was one and its columns are still there."""
    name, shown, rows = _table_columns(conn, table, schema)
    table_columns = {r[0]: TableColumn(r[0], r[1], r[2], r[3], int(r[4]), bool(r[5]))
                     for r in rows}
    if _created_by_mrl_pg(table_columns):
        raise InvalidConfigError(
            f"{shown} is a table mrl_pg created: it has its own prefix index and needs no "
            "adoption; search it by name (mrl_pg.schema.catalog.describe_table, --table)")
    recorded = _recorded_adoption(conn, name, table)
    if recorded is not None:
        choices = recorded.choices
        embedding = embedding or recorded.embedding
        prefix_dim = recorded.prefix_dim if prefix_dim is None else prefix_dim
        if key is None and choices.get("key") and not _missing(choices["key"], table_columns):
            key = tuple(choices["key"])
        if columns is None and choices.get("columns") is not None:
            # A recorded column dropped since: adopting again follows the table.
            columns = tuple(c for c in choices["columns"] if c in table_columns) or None
        for field in ("metadata", "tenant"):
            value = choices.get(field)
            if value is not None and value in table_columns:
                if field == "metadata" and metadata is None:
                    metadata = value
                if field == "tenant" and tenant is None:
                    tenant = value
    embedding = embedding or "embedding"
    prefix_dim = DEFAULT_PREFIX_DIM if prefix_dim is None else prefix_dim
    with conn.cursor() as cur:
        unique_keys = [(bool(r[0]), tuple(r[1])) for r in cur.execute(
            _UNIQUE_KEYS, {"table": name}).fetchall()]
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
        raise InvalidConfigError(_no_dimension(
            conn, sql.Identifier(schema, table) if schema else sql.Identifier(table), shown,
            vector))
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
                f"constraint as {spelling.key}")
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
            f"a search returns: pass {spelling.columns} without it")
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


def _no_dimension(conn: psycopg.Connection[Any], table: sql.Composable, shown: str,
                  vector: TableColumn) -> str:
    """Why a ``vector`` column declared without a dimension is refused, and the one
    command that fixes it: the dimension its rows have, when they all agree."""
    dims = sql.SQL("vector_dims({})").format(sql.Identifier(vector.name))
    with conn.cursor() as cur:
        row = cur.execute(sql.SQL("SELECT min({d}), max({d}) FROM {t}").format(
            d=dims, t=table)).fetchone()
    low, high = (row or (None, None))
    alter = sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {}").format(
        table, sql.Identifier(vector.name), sql.SQL(vector.type_name)).as_string(None)
    base = (f"embedding column {vector.name!r} of {shown} is declared {vector.type_name} "
            "without a dimension, which an HNSW index cannot hold")
    if low is not None and low == high:
        return f"{base}; all its rows have {low} dimensions, so declare it so: {alter}({low})"
    if low is None:
        return f"{base}; declare it with one: {alter}(N)"
    return (f"{base}, and its rows have {low} to {high} dimensions: make them one length, "
            f"then {alter}(N)")


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

    ``embedding`` must be a ``vector(N)`` or ``halfvec(N)`` column. Every
    argument left out is what the table's last adoption recorded (the prefix
    index holds the embedding column and ``prefix_dim``, a comment on it the
    key, returned columns, metadata and tenant columns), so describing or
    adopting a table again keeps its choices; with no adoption, ``"embedding"``
    and 512, ``key`` the primary key (else name the columns of a unique
    constraint), ``columns`` (what a search returns) every column but the
    vectors, which also follows columns added later. The table name may need
    quoting (``"CamelProducts"``). The prefix is held by an expression index
    (``mrl-pg adopt``), not a new column. A missing column or a wrong type
    raises :class:`~mrl_pg.errors.InvalidConfigError` naming it.

    >>> table_config(conn, "articles", embedding="embedding")  # doctest: +SKIP
    """
    return describe_existing_table(
        conn, table, embedding=embedding, prefix_dim=prefix_dim, schema=schema,
        key=None if key is None else tuple(key),
        columns=None if columns is None else tuple(columns), metadata=metadata,
        tenant=tenant, hnsw_m=hnsw_m, hnsw_ef_construction=hnsw_ef_construction)
