"""The re-normalized prefix: one expression for stored rows and query vectors, and the HNSW
index that holds it (on mrl_pg's generated column, or on the expression for an adopted table).

The stored column, the expression index and every query's prefix are built here, so they
can never be derived two different ways.
"""

from __future__ import annotations

from psycopg import sql

from mrl_pg.config import TableConfig

__all__ = ["prefix_expression", "indexed_prefix", "hnsw_index_ddl"]


def prefix_expression(source: sql.Composable, prefix_dim: int) -> sql.Composed:
    """``l2_normalize(subvector(source, 1, P))::halfvec(P)``: the re-normalized prefix.

    The stored column and every query vector's prefix are both built by this
    function, so they can never be derived two different ways.
    """
    return sql.SQL("l2_normalize(subvector({source}, 1, {p}))::halfvec({p})").format(
        source=source, p=sql.Literal(prefix_dim)
    )


def indexed_prefix(config: TableConfig) -> sql.Composable:
    """What the prefix HNSW index holds: the stored column, or the prefix expression of the
    embedding (an adopted table). A search orders by exactly this, or the index is not used."""
    if config.prefix_column is not None:
        return sql.Identifier(config.prefix_column)
    return prefix_expression(sql.Identifier(config.embedding_column), config.prefix_dim)


def hnsw_index_ddl(
    config: TableConfig, *, concurrently: bool = False, if_not_exists: bool = False
) -> sql.Composed:
    """The HNSW index on the unit-length halfvec prefix, cosine distance: on the stored
    column, or (an adopted table) on the prefix expression, which needs no new column."""
    prefix = indexed_prefix(config)
    if config.prefix_column is None:
        prefix = sql.SQL("({})").format(prefix)
    return sql.SQL(
        "CREATE INDEX {concurrently}{if_not_exists}{name} ON {table} "
        "USING hnsw ({prefix} halfvec_cosine_ops) WITH (m = {m}, ef_construction = {ef})"
    ).format(
        concurrently=sql.SQL("CONCURRENTLY " if concurrently else ""),
        if_not_exists=sql.SQL("IF NOT EXISTS " if if_not_exists else ""),
        name=sql.Identifier(config.hnsw_index_name),
        table=config.table,
        prefix=prefix,
        m=sql.Literal(config.hnsw_m),
        ef=sql.Literal(config.hnsw_ef_construction),
    )
