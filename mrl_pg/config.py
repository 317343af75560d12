"""A table's settings, validated once, passed around explicitly."""

from __future__ import annotations

import re
from dataclasses import dataclass

from psycopg import sql
from sqlalchemy.dialects.postgresql.base import RESERVED_WORDS

from .errors import InvalidConfigError, InvalidIdentifierError

__all__ = [
    "TableConfig",
    "DEFAULT_TABLE",
    "DEFAULT_FULL_DIM",
    "DEFAULT_PREFIX_DIM",
    "MAX_FULL_DIM",
    "MAX_PREFIX_DIM",
    "validate_identifier",
]

DEFAULT_TABLE = "mrl_documents"
DEFAULT_FULL_DIM = 1536
DEFAULT_PREFIX_DIM = 512
MAX_FULL_DIM = 16000  # pgvector's vector type limit
MAX_PREFIX_DIM = 4000  # pgvector's HNSW limit for halfvec

# Derived object names append at most this many characters to the table name
# (``_embedding_prefix_nonzero``), and PostgreSQL truncates names at 63 bytes.
_LONGEST_SUFFIX = len("_embedding_prefix_nonzero")
MAX_TABLE_NAME = 63 - _LONGEST_SUFFIX
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*\Z")


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
    hnsw_m: int = 16
    hnsw_ef_construction: int = 64

    def __post_init__(self) -> None:
        validate_identifier(self.name, what="table name", max_length=MAX_TABLE_NAME)
        if self.schema is not None:
            validate_identifier(self.schema, what="schema name")
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

    # Names of the table and of everything derived from it.
    embedding_column = "embedding"
    prefix_column = "embedding_prefix"

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
