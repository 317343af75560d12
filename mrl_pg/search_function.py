"""``mrl_search(...)``: the adaptive search as a SQL function for psql and RPC callers.

The function body runs the statement from :mod:`mrl_pg.query` through
``EXECUTE ... USING`` so every call is planned with its real arguments (a
cached generic plan could pick another index, or none).
"""

from __future__ import annotations

from psycopg import sql

from .config import TableConfig
from .query import MAX_MATCH_COUNT, MAX_POOL, adaptive_search_sql
from .schema import render

__all__ = ["search_function_ddl", "drop_search_function_ddl", "SEARCH_FUNCTION_ARGS"]

SEARCH_FUNCTION_ARGS = "vector, integer, integer, jsonb"

# Dollar-quoted; validated identifiers cannot contain "$", so the body cannot end early.
_BODY = """DECLARE
    pool integer;
BEGIN
    IF query_embedding IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004',
            MESSAGE = {fn_name} || ': query_embedding must not be NULL';
    END IF;
    IF vector_dims(query_embedding) <> {n} THEN
        RAISE EXCEPTION USING ERRCODE = '22000',
            MESSAGE = {fn_name} || ': query_embedding has ' || vector_dims(query_embedding)
                || ' dimensions, expected ' || {n};
    END IF;
    IF vector_norm(subvector(query_embedding, 1, {p})) = 0 THEN
        RAISE EXCEPTION USING ERRCODE = '22000',
            MESSAGE = {fn_name} || ': query_embedding has a zero prefix (first '
                || {p} || ' dimensions), cosine distance is undefined';
    END IF;
    IF match_count IS NULL OR match_count < 1 OR match_count > {max_k} THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = {fn_name} || ': match_count must be between 1 and ' || {max_k}
                || ', got ' || coalesce(match_count::text, 'NULL');
    END IF;
    IF oversample IS NULL OR oversample < 1 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = {fn_name} || ': oversample must be at least 1, got '
                || coalesce(oversample::text, 'NULL');
    END IF;
    IF match_count::bigint * oversample > {max_pool} THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = {fn_name} || ': match_count * oversample must be at most ' || {max_pool};
    END IF;
    IF filter IS NOT NULL AND jsonb_typeof(filter) <> 'object' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = {fn_name} || ': filter must be a JSON object, got a JSON '
                || jsonb_typeof(filter);
    END IF;

    pool := match_count * oversample;
    -- An HNSW scan returns at most hnsw.ef_search rows; the SET clauses on this
    -- function make these changes end when the function returns.
    PERFORM set_config('hnsw.ef_search', greatest(40, least(2 * pool, 1000))::text, true);
    PERFORM set_config('hnsw.max_scan_tuples', greatest(20000, 2 * pool)::text, true);

    IF filter IS NULL OR filter = '{{}}'::jsonb THEN
        RETURN QUERY EXECUTE {unfiltered} USING query_embedding, pool, match_count;
    ELSE
        RETURN QUERY EXECUTE {filtered} USING query_embedding, pool, match_count, filter;
    END IF;
END"""


def search_function_ddl(config: TableConfig) -> sql.Composed:
    """``CREATE OR REPLACE FUNCTION`` for the table's search function.

    ``SECURITY INVOKER`` (the caller's privileges and row-level security
    apply) and a fixed ``search_path`` (the table's schema, then ``public`` and
    ``extensions`` where pgvector usually lives, Supabase included).
    """
    # EXECUTE ... USING query_embedding, pool, match_count, filter
    query, pool, k, filter = sql.SQL("$1"), sql.SQL("$2"), sql.SQL("$3"), sql.SQL("$4")
    unfiltered = adaptive_search_sql(config, query=query, pool=pool, k=k)
    filtered = adaptive_search_sql(config, query=query, pool=pool, k=k, filter=filter)
    name = config.qualified(config.search_function_name)
    body = sql.SQL(_BODY).format(
        fn_name=sql.Literal(config.search_function_name),
        n=sql.Literal(config.full_dim),
        p=sql.Literal(config.prefix_dim),
        max_k=sql.Literal(MAX_MATCH_COUNT),
        max_pool=sql.Literal(MAX_POOL),
        unfiltered=sql.Literal(render(unfiltered)),
        filtered=sql.Literal(render(filtered)),
    )
    schemas = [config.schema] if config.schema else []
    search_path = sql.SQL(", ").join(
        sql.Identifier(s) for s in ["pg_catalog", *schemas, "public", "extensions"]
    )
    return sql.SQL(
        """CREATE OR REPLACE FUNCTION {name}(
    query_embedding vector,
    match_count integer DEFAULT 10,
    oversample integer DEFAULT 8,
    filter jsonb DEFAULT '{{}}'::jsonb
)
RETURNS TABLE (id bigint, external_id text, content text, metadata jsonb, distance double precision)
LANGUAGE plpgsql
STABLE
SECURITY INVOKER
SET search_path = {search_path}
SET hnsw.ef_search = 40
SET hnsw.iterative_scan = relaxed_order
SET hnsw.max_scan_tuples = 20000
AS $mrl_search$
{body}
$mrl_search$"""
    ).format(name=name, search_path=search_path, body=body)


def drop_search_function_ddl(config: TableConfig) -> sql.Composed:
    """``DROP FUNCTION IF EXISTS`` for the table's search function."""
    return sql.SQL("DROP FUNCTION IF EXISTS {}({})").format(
        config.qualified(config.search_function_name), sql.SQL(SEARCH_FUNCTION_ARGS)
    )
