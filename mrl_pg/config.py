"""A table's settings, validated once, passed around explicitly."""

from __future__ import annotations

import re
from dataclasses import dataclass

from psycopg import sql
from sqlalchemy.dialects.postgresql.base import RESERVED_WORDS

from mrl_pg.errors import InvalidConfigError, InvalidIdentifierError

__all__ = [
    "TableConfig",
    "DEFAULT_TABLE",
    "DEFAULT_FULL_DIM",
    "DEFAULT_PREFIX_DIM",
    "DEFAULT_HNSW_M",
    "DEFAULT_HNSW_EF_CONSTRUCTION",
    "PGVECTOR_DEFAULT_M",
    "PGVECTOR_DEFAULT_EF_CONSTRUCTION",
    "MAX_FULL_DIM",
    "MAX_PREFIX_DIM",
    "validate_identifier",
    "validate_table_name",
    "column_name",
    "ColumnType",
    "EMBEDDING_TYPES",
]

DEFAULT_TABLE = "mrl_documents"
DEFAULT_FULL_DIM = 1536
DEFAULT_PREFIX_DIM = 512
DEFAULT_HNSW_M = 16
# The prefix index is a sixth of a full-dimension one, so mrl_pg builds it with twice
# pgvector's default candidate list: on clustered data (BENCHMARKS.md) a graph built at 64
# left whole clusters out of reach of some queries (recall@10 0.96-0.97 at the default
# search setting); at 128 it reached 0.9995 in two builds.
DEFAULT_HNSW_EF_CONSTRUCTION = 128
# What an HNSW index built without the option has (pgvector's own default).
PGVECTOR_DEFAULT_M = 16
PGVECTOR_DEFAULT_EF_CONSTRUCTION = 64
MAX_FULL_DIM = 16000  # pgvector's vector type limit
MAX_PREFIX_DIM = 4000  # pgvector's HNSW limit for halfvec

# Derived object names append at most this many characters to the table name
# (``_embedding_prefix_nonzero``), and PostgreSQL truncates names at 63 bytes.
_LONGEST_SUFFIX = len("_embedding_prefix_nonzero")
MAX_TABLE_NAME = 63 - _LONGEST_SUFFIX
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*\Z")


EMBEDDING_TYPES = ("vector", "halfvec")

# (column, type schema, type name, array type name): how a filter value is cast.
ColumnType = tuple[str, str, str, str]


def _managed_column_types(tenant_column: str | None) -> tuple[ColumnType, ...]:
    tenant = ((tenant_column, "pg_catalog", "text", "_text"),) if tenant_column else ()
    return (
        ("id", "pg_catalog", "int8", "_int8"),
        *tenant,
        ("external_id", "pg_catalog", "text", "_text"),
        ("content", "pg_catalog", "text", "_text"),
        ("metadata", "pg_catalog", "jsonb", "_jsonb"),
        ("created_at", "pg_catalog", "timestamptz", "_timestamptz"),
    )


def _check_column_name(name: object, what: str) -> str:
    # Columns of an adopted table are the user's own: any name PostgreSQL takes
    # is passed through sql.Identifier. "$" is refused because the SQL function
    # body is dollar-quoted.
    if not isinstance(name, str) or not name or "\0" in name or "$" in name:
        raise InvalidIdentifierError(f"invalid {what} {name!r}: a column name without NUL or $")
    if len(name.encode()) > 63:
        raise InvalidIdentifierError(f"invalid {what} {name!r}: longer than 63 bytes")
    return name


def column_name(*names: str) -> sql.Composable:
    """A (qualified) column reference as ``quote_ident`` writes it: bare when the name
    needs no quoting (lower-case, not reserved), else a quoted ``sql.Identifier``."""
    if all(_IDENTIFIER.match(n) and n not in RESERVED_WORDS for n in names):
        return sql.SQL(".".join(names))  # names checked just above: nothing to quote
    return sql.Identifier(*names)


def validate_identifier(name: str, *, what: str = "name", max_length: int = 63) -> str:
    """Accept only names that never need quoting: lower-case, not reserved, short enough.

    Refusing such names up front means a name is the same in Python, in SQL and
    in psql, and no hostile text ever reaches a statement.
    """
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise InvalidIdentifierError(
            f"invalid {what} {name!r}: use lower-case letters, digits and underscores, "
            "starting with a letter or underscore"
        )
    if len(name) > max_length:
        raise InvalidIdentifierError(
            f"invalid {what} {name!r}: {len(name)} characters, at most {max_length} allowed"
        )
    if name in RESERVED_WORDS:
        raise InvalidIdentifierError(f"invalid {what} {name!r}: it is a reserved SQL word")
    return name


_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def validate_table_name(name: str, *, what: str = "table name") -> str:
    """The name of a table someone else made, as it is in the catalog: letters of either
    case (``CamelProducts``, as Prisma or EF name tables), digits and underscores, always
    quoted in SQL. Unlike :func:`validate_identifier`, upper case and reserved words
    (``"Order"``, ``"user"``) are taken; anything else is refused, and so are names too
    long to derive the index name from."""
    if not isinstance(name, str) or not _TABLE_NAME.match(name):
        raise InvalidIdentifierError(
            f"invalid {what} {name!r}: use letters, digits and underscores, starting with a "
            "letter or underscore")
    if len(name) > MAX_TABLE_NAME:
        raise InvalidIdentifierError(
            f"invalid {what} {name!r}: {len(name)} characters, at most {MAX_TABLE_NAME} "
            "allowed (the index name adds to it)")
    return name


@dataclass(frozen=True)
class TableConfig:
    """Settings of one MRL table.

    ``full_dim`` is the embedding's dimension (N); ``prefix_dim`` (P < N) is how
    many leading dimensions the HNSW index sees. ``schema`` None means the
    connection's ``search_path`` decides.

    >>> TableConfig("docs", full_dim=3072, prefix_dim=256).prefix_column
    'embedding_prefix'
    """

    name: str = DEFAULT_TABLE
    full_dim: int = DEFAULT_FULL_DIM
    prefix_dim: int = DEFAULT_PREFIX_DIM
    schema: str | None = None
    hnsw_m: int = DEFAULT_HNSW_M
    hnsw_ef_construction: int = DEFAULT_HNSW_EF_CONSTRUCTION
    embedding_column: str = "embedding"
    embedding_type: str = "vector"
    prefix_column: str | None = "embedding_prefix"
    key: tuple[str, ...] = ("id",)
    columns: tuple[str, ...] | None = None
    metadata_column: str | None = "metadata"
    tenant_column: str | None = None
    column_types: tuple[ColumnType, ...] | None = None
    adopted: bool = False

    def __post_init__(self) -> None:
        if self.adopted:
            validate_table_name(self.name)
        else:
            validate_identifier(self.name, what="table name", max_length=MAX_TABLE_NAME)
        if self.schema is not None:
            validate_identifier(self.schema, what="schema name")
        self._check_columns()
        for field, value in (("full_dim", self.full_dim), ("prefix_dim", self.prefix_dim)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidConfigError(f"{field} must be an integer, got {value!r}")
        if not 1 <= self.full_dim <= MAX_FULL_DIM:
            raise InvalidConfigError(
                f"full_dim {self.full_dim} is out of range: pgvector stores 1 to {MAX_FULL_DIM}"
            )
        if not 1 <= self.prefix_dim <= MAX_PREFIX_DIM:
            raise InvalidConfigError(
                f"prefix_dim {self.prefix_dim} is out of range: "
                f"an HNSW index on halfvec takes 1 to {MAX_PREFIX_DIM}"
            )
        if self.prefix_dim >= self.full_dim:
            raise InvalidConfigError(
                f"prefix_dim {self.prefix_dim} must be smaller than full_dim {self.full_dim}"
            )
        if not 2 <= self.hnsw_m <= 100:
            raise InvalidConfigError(f"hnsw_m {self.hnsw_m} is out of range: 2 to 100")
        if not 4 <= self.hnsw_ef_construction <= 1000:
            raise InvalidConfigError(
                f"hnsw_ef_construction {self.hnsw_ef_construction} is out of range: 4 to 1000"
            )
        if self.hnsw_ef_construction < 2 * self.hnsw_m:
            raise InvalidConfigError(
                f"hnsw_ef_construction {self.hnsw_ef_construction} must be at least "
                f"2 * hnsw_m ({2 * self.hnsw_m})"
            )

    def _check_columns(self) -> None:
        if self.embedding_type not in EMBEDDING_TYPES:
            raise InvalidConfigError(
                f"embedding_type must be one of {', '.join(EMBEDDING_TYPES)}, "
                f"got {self.embedding_type!r}")
        if not self.adopted:
            # mrl_pg's own layout: fixed names, a generated prefix column, an external_id.
            if self.tenant_column is not None:
                validate_identifier(self.tenant_column, what="tenant column")
                if self.tenant_column in {name for name, *_ in _managed_column_types(None)}:
                    raise InvalidConfigError(
                        f"tenant column {self.tenant_column!r} is one of mrl_pg's own columns")
            if (self.embedding_column, self.embedding_type, self.prefix_column, self.key,
                    self.metadata_column) != ("embedding", "vector", "embedding_prefix",
                                              ("id",), "metadata") or self.columns is not None \
                    or self.column_types is not None:
                raise InvalidConfigError(
                    "a table mrl_pg creates has fixed columns; describe an existing table "
                    "with mrl_pg.table_config(conn, ...) instead")
            return
        if not isinstance(self.key, tuple) or not self.key:
            raise InvalidConfigError(f"key must be a non-empty tuple of columns, got {self.key!r}")
        names = [self.embedding_column, *self.key, *(self.columns or ())]
        names += [n for n in (self.prefix_column, self.metadata_column, self.tenant_column) if n]
        for name in names:
            _check_column_name(name, "column name")
        if "distance" in (self.columns or ()) or "distance" in self.key:
            raise InvalidConfigError(
                "a column named 'distance' clashes with the distance every search returns; "
                "leave it out of the returned columns")

    # Names of the table and of everything derived from it.
    @property
    def returned_columns(self) -> tuple[str, ...]:
        """The columns a search returns, in order (``distance`` comes after them)."""
        if self.columns is not None:
            return self.columns
        if self.adopted:
            return self.key
        managed = ("id", "external_id", "content", "metadata")
        return managed if self.tenant_column is None else ("id", self.tenant_column, *managed[1:])

    @property
    def filterable_columns(self) -> dict[str, ColumnType]:
        """Columns a ``where`` filter may name, with the types their values are cast to."""
        types = self.column_types
        if types is None:
            types = () if self.adopted else _managed_column_types(self.tenant_column)
        return {entry[0]: entry for entry in types}

    @property
    def upsert_key(self) -> tuple[str, ...]:
        """What an ingest upserts on: ``external_id`` (per tenant) here, the key when adopted."""
        if self.adopted:
            return self.key
        return ("external_id",) if self.tenant_column is None else (
            self.tenant_column, "external_id")

    @property
    def stored_prefix_column(self) -> str:
        """The generated prefix column; an error for a table whose prefix is an expression."""
        if self.prefix_column is None:
            raise InvalidConfigError(
                f"table {self.qualified_name} holds its prefix in an expression index, "
                "not a column")
        return self.prefix_column

    @property
    def prefix_layout(self) -> str:
        """``"column"`` (a stored generated column) or ``"expression"`` (an expression index)."""
        return "expression" if self.prefix_column is None else "column"

    @property
    def qualified_name(self) -> str:
        """``schema.table`` or ``table``, for messages and for ORM keys."""
        return f"{self.schema}.{self.name}" if self.schema else self.name

    @property
    def table(self) -> sql.Identifier:
        """The table as a (possibly schema-qualified) SQL identifier."""
        if self.schema:
            return sql.Identifier(self.schema, self.name)
        return sql.Identifier(self.name)

    @property
    def hnsw_index_name(self) -> str:
        return f"{self.name}_embedding_prefix_hnsw"

    @property
    def metadata_index_name(self) -> str:
        return f"{self.name}_metadata_gin"

    @property
    def pkey_name(self) -> str:
        return f"{self.name}_pkey"

    @property
    def external_id_key_name(self) -> str:
        return f"{self.name}_external_id_key"

    @property
    def metadata_check_name(self) -> str:
        return f"{self.name}_metadata_object"

    @property
    def nonzero_check_name(self) -> str:
        return f"{self.name}_embedding_nonzero"

    @property
    def prefix_nonzero_check_name(self) -> str:
        return f"{self.name}_embedding_prefix_nonzero"

    @property
    def search_function_name(self) -> str:
        """``mrl_search`` for the default table, ``mrl_search_<table>`` for others."""
        return "mrl_search" if self.name == DEFAULT_TABLE else f"mrl_search_{self.name}"

    def qualified(self, name: str) -> sql.Identifier:
        """An object name in this table's schema."""
        return sql.Identifier(self.schema, name) if self.schema else sql.Identifier(name)
