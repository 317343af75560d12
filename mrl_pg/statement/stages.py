"""First stages of the adaptive search: how the candidate pool is found before the re-rank.

A stage names the index it walks and the ``ORDER BY`` that walks it; the statement
(:func:`mrl_pg.statement.query.adaptive_search_sql`) takes any stage, so another way to find
candidates is another class here, not another statement, and the benchmark and
``mrl-pg tune`` can compare stages side by side.

- :class:`PrefixHnsw` (the default): cosine distance between re-normalized
  ``halfvec(P)`` prefixes, through the prefix HNSW index.
- :class:`BinaryPrefixHnsw`: Hamming distance between the prefixes' sign bits
  (``binary_quantize``), through an HNSW index on ``bit(P)``: 16 times less index data
  per row than ``halfvec(P)``. Judge it on real embeddings only: on synthetic data with
  a decaying spectrum the sign bits of low-variance dimensions are noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from psycopg import sql

from mrl_pg.config import TableConfig
from mrl_pg.statement.prefix import hnsw_index_ddl, indexed_prefix, prefix_expression

__all__ = ["FirstStage", "PrefixHnsw", "BinaryPrefixHnsw", "PREFIX_HNSW"]


class FirstStage(Protocol):
    """What the adaptive statement needs from a first stage."""

    @property
    def name(self) -> str: ...

    def __hash__(self) -> int: ...  # statements are cached per stage

    def index_name(self, config: TableConfig) -> str:
        """The index the stage's ``ORDER BY`` must walk (plan guards check it)."""
        ...

    def order_by(self, config: TableConfig, query: sql.Composable) -> sql.Composable:
        """The candidate ordering for the full-dimension query vector ``query``; it must be
        exactly the indexed expression and operator, or the planner cannot use the index."""
        ...

    def index_ddl(self, config: TableConfig, *, concurrently: bool = False) -> sql.Composed:
        """``CREATE INDEX`` for the stage's index."""
        ...


def _query_prefix(config: TableConfig, query: sql.Composable) -> sql.Composed:
    return prefix_expression(sql.SQL("{}::vector").format(query), config.prefix_dim)


@dataclass(frozen=True)
class PrefixHnsw:
    """Cosine distance between re-normalized ``halfvec(P)`` prefixes (column or expression)."""

    name: str = "prefix-hnsw"

    def index_name(self, config: TableConfig) -> str:
        return config.hnsw_index_name

    def order_by(self, config: TableConfig, query: sql.Composable) -> sql.Composable:
        return sql.SQL("{} <=> {}").format(indexed_prefix(config), _query_prefix(config, query))

    def index_ddl(self, config: TableConfig, *, concurrently: bool = False) -> sql.Composed:
        return hnsw_index_ddl(config, concurrently=concurrently)


@dataclass(frozen=True)
class BinaryPrefixHnsw:
    """Hamming distance between the prefixes' sign bits, through an HNSW index on ``bit(P)``."""

    name: str = "binary-prefix-hnsw"

    def index_name(self, config: TableConfig) -> str:
        return f"{config.name}_prefix_bit_hnsw"

    def _bits(self, config: TableConfig, halfvec: sql.Composable) -> sql.Composed:
        return sql.SQL("binary_quantize({})::bit({})").format(
            halfvec, sql.Literal(config.prefix_dim))

    def order_by(self, config: TableConfig, query: sql.Composable) -> sql.Composable:
        return sql.SQL("{} <~> {}").format(
            self._bits(config, indexed_prefix(config)),
            self._bits(config, _query_prefix(config, query)))

    def index_ddl(self, config: TableConfig, *, concurrently: bool = False) -> sql.Composed:
        return sql.SQL(
            "CREATE INDEX {concurrently}{name} ON {table} USING hnsw (({bits}) bit_hamming_ops) "
            "WITH (m = {m}, ef_construction = {ef})"
        ).format(
            concurrently=sql.SQL("CONCURRENTLY " if concurrently else ""),
            name=sql.Identifier(self.index_name(config)), table=config.table,
            bits=self._bits(config, indexed_prefix(config)),
            m=sql.Literal(config.hnsw_m), ef=sql.Literal(config.hnsw_ef_construction),
        )


PREFIX_HNSW = PrefixHnsw()
"""The product's first stage."""
