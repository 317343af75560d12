"""The one source of truth for an MRL table's DDL.

Migrations, the ``sql/`` install script, the Alembic operation and the tests
all take their statements from here; the ORM model is tested against it.
"""

from __future__ import annotations

from psycopg import sql

from mrl_pg.config import TableConfig
from mrl_pg.schema.compat import MIN_PGVECTOR_VERSION
from mrl_pg.statement.prefix import hnsw_index_ddl, prefix_expression
from mrl_pg.statement.tuning import (
    MAX_EF_SEARCH,
    MAX_MATCH_COUNT,
    MAX_POOL,
    TUNING_TABLE,
    tuning_table,
)

__all__ = [
    "extension_ddl",
    "pgvector_check_ddl",
    "table_ddl",
    "check_constraints",
    "TOAST_TUPLE_TARGET",
    "index_ddl",
    "metadata_index_ddl",
    "tuning_table_ddl",
    "forget_tuning_ddl",
    "render",
]


def extension_ddl() -> sql.Composed:
    """``CREATE EXTENSION IF NOT EXISTS vector``."""
    return sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier("vector"))


def pgvector_check_ddl() -> sql.Composed:
    """A ``DO`` block that stops an install or migration on pgvector older than 0.8.

    The message names the installed version, as :func:`mrl_pg.schema.compat.require_pgvector` does.
    """
    minimum = ".".join(map(str, MIN_PGVECTOR_VERSION))
    return sql.SQL(
        """DO $mrl_pg_check$
DECLARE
    installed text := (SELECT extversion FROM pg_extension WHERE extname = 'vector');
BEGIN
    IF installed IS NULL OR string_to_array(split_part(installed, '-', 1), '.')::int[]
            < {minimum_array} THEN
        RAISE EXCEPTION USING ERRCODE = '0A000',
            MESSAGE = 'mrl_pg needs pgvector ' || {minimum} || ' or later, but '
                || coalesce('pgvector ' || installed || ' is installed', 'it is not installed'),
            HINT = 'install a newer pgvector, then ALTER EXTENSION vector UPDATE';
    END IF;
END
$mrl_pg_check$"""
    ).format(
        minimum_array=sql.SQL("ARRAY[{}]").format(
            sql.SQL(", ").join(sql.Literal(n) for n in MIN_PGVECTOR_VERSION)
        ),
        minimum=sql.Literal(minimum),
    )


# Rows up to a page stay inline: 1536 float4 dims plus the prefix fit in 8 kB,
# and an exact scan or a re-rank then reads no TOAST (6x faster measured on
# 50,000 x 1536). Larger vectors (3072 dims) are still moved out of line.
TOAST_TUPLE_TARGET = 8160


def check_constraints(config: TableConfig) -> list[tuple[str, sql.Composable]]:
    """(name, condition) of each CHECK: non-zero embedding and prefix, object metadata."""
    embedding = sql.Identifier(config.embedding_column)
    return [
        (config.nonzero_check_name, sql.SQL("vector_norm({}) > 0").format(embedding)),
        (
            config.prefix_nonzero_check_name,
            sql.SQL("vector_norm(subvector({}, 1, {})) > 0").format(
                embedding, sql.Literal(config.prefix_dim)
            ),
        ),
        (config.metadata_check_name, sql.SQL("jsonb_typeof(metadata) = 'object'")),
    ]


def table_ddl(config: TableConfig) -> sql.Composed:
    """``CREATE TABLE`` with the generated prefix column and the CHECK constraints."""
    embedding = sql.Identifier(config.embedding_column)
    checks = sql.SQL("").join(
        sql.SQL(",\n    CONSTRAINT {} CHECK ({})").format(sql.Identifier(name), condition)
        for name, condition in check_constraints(config)
    )
    return sql.SQL(
        """CREATE TABLE {table} (
    id bigint GENERATED ALWAYS AS IDENTITY,{tenant}
    external_id text,
    content text,
    metadata jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    {embedding} vector({n}) NOT NULL,
    {prefix} halfvec({p}) GENERATED ALWAYS AS ({prefix_expr}) STORED,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT {pkey} PRIMARY KEY (id),
    CONSTRAINT {external_key} UNIQUE ({upsert_key}){checks}
) WITH (toast_tuple_target = {toast_target})"""
    ).format(
        table=config.table,
        embedding=embedding,
        prefix=sql.Identifier(config.stored_prefix_column),
        prefix_expr=prefix_expression(embedding, config.prefix_dim),
        n=sql.Literal(config.full_dim),
        p=sql.Literal(config.prefix_dim),
        pkey=sql.Identifier(config.pkey_name),
        external_key=sql.Identifier(config.external_id_key_name),
        tenant=sql.SQL("\n    {} text NOT NULL,").format(sql.Identifier(config.tenant_column))
        if config.tenant_column else sql.SQL(""),
        upsert_key=sql.SQL(", ").join(
            sql.Identifier(c) if c != "external_id" else sql.SQL("external_id")
            for c in config.upsert_key),
        checks=checks,
        toast_target=sql.Literal(TOAST_TUPLE_TARGET),
    )


def metadata_index_ddl(config: TableConfig) -> sql.Composed:
    """GIN over metadata with ``jsonb_path_ops``: small, and serves ``@>`` containment."""
    return sql.SQL("CREATE INDEX {name} ON {table} USING gin (metadata jsonb_path_ops)").format(
        name=sql.Identifier(config.metadata_index_name), table=config.table
    )


def index_ddl(config: TableConfig) -> list[sql.Composed]:
    """Both indexes of the table."""
    return [hnsw_index_ddl(config), metadata_index_ddl(config)]


def tuning_table_ddl(config: TableConfig) -> list[sql.Composed]:
    """``mrl_pg_tuning`` in the table's schema, if missing: a row per table ``mrl-pg tune`` saw.

    Readable by every role (``GRANT SELECT ... TO PUBLIC``): a search by any
    role that may read the table also reads its settings, and the rows hold
    nothing but table names and numbers.
    """
    table = tuning_table(config)
    return [
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {table} (
    table_name text NOT NULL,
    k integer NOT NULL,
    oversample integer NOT NULL,
    ef_search integer NOT NULL,
    target_recall double precision,
    measured_recall double precision,
    measured_qps double precision,
    queries integer,
    table_rows bigint,
    tuned_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT {pkey} PRIMARY KEY (table_name),
    CONSTRAINT {k_check} CHECK (k BETWEEN 1 AND {max_k}),
    CONSTRAINT {oversample_check} CHECK (oversample >= 1),
    CONSTRAINT {ef_check} CHECK (ef_search BETWEEN 1 AND {max_ef}),
    CONSTRAINT {pool_check} CHECK (k::bigint * oversample <= {max_pool})
)"""
        ).format(
            table=table,
            pkey=sql.Identifier(f"{TUNING_TABLE}_pkey"),
            k_check=sql.Identifier(f"{TUNING_TABLE}_k_range"),
            oversample_check=sql.Identifier(f"{TUNING_TABLE}_oversample_range"),
            ef_check=sql.Identifier(f"{TUNING_TABLE}_ef_search_range"),
            pool_check=sql.Identifier(f"{TUNING_TABLE}_pool_range"),
            max_k=sql.Literal(MAX_MATCH_COUNT),
            max_ef=sql.Literal(MAX_EF_SEARCH),
            max_pool=sql.Literal(MAX_POOL),
        ),
        sql.SQL("GRANT SELECT ON {} TO PUBLIC").format(table),
    ]


def forget_tuning_ddl(config: TableConfig) -> sql.Composed:
    """Delete the table's ``mrl_pg_tuning`` row, if that table exists (a dropped table's
    measurements must not apply to a new table of the same name)."""
    table = tuning_table(config)
    return sql.SQL(
        """DO $mrl_pg_forget$
BEGIN
    IF to_regclass({name}) IS NOT NULL THEN
        DELETE FROM {table} WHERE table_name = {table_name};
    END IF;
END
$mrl_pg_forget$"""
    ).format(name=sql.Literal(render(table)), table=table,
             table_name=sql.Literal(config.name))


def render(statement: sql.Composable) -> str:
    """SQL text of a statement; names and numbers are validated, so no connection is needed."""
    return statement.as_string(None)
