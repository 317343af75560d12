"""The search function, one round trip and one filter language: ``mrl_search`` gets a fifth
argument and new settings.

- ``match_offset integer DEFAULT 0``: page 2 is rows k+1..2k of a 2k search (the pool holds
  ``match_offset + match_count`` times the oversample). A function with another argument
  list cannot be replaced in place, so the 4-argument function is dropped in the same
  block and its EXECUTE grants are given to the new one.
- ``filter`` follows the one grammar of docs/filters.md (on mrl_pg's own table it is still
  containment on ``metadata``).
- A row without a vector is never a result; a walk whose pool did not fill is replaced,
  in the same statement, by the exact answer.
- ``hnsw.scan_mem_multiplier`` is set for the pool's scan budget (a 30,000 pool no
  longer stops short at the default ``work_mem``); ``enable_seqscan = off`` and
  ``plan_cache_mode = force_custom_plan`` for the function's statements.

Downgrading puts back revision 0004's function, as 0004 created it.

Released: the SQL below is this revision as it was released, frozen. It must
never change (tests/test_migrations.py holds its digest); later changes go
into new revisions.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = [
    '''DO $mrl_pg_install$
DECLARE
    target_schema text;
    function_name text;
    old_function regprocedure;
    old_acl aclitem[];
    granted record;
BEGIN
    IF current_schema() IS NULL OR current_schema() !~ '^[a-z_][a-z0-9_]*$' THEN
        RAISE EXCEPTION USING ERRCODE = '3F000', MESSAGE = 'mrl_pg: cannot create '
            || 'mrl_search' || ' in schema ' || coalesce(quote_ident(current_schema()), 'NULL')
            || ': set search_path to a schema whose name needs no quoting, or name one';
    END IF;
    target_schema := current_schema();
    function_name := quote_ident(target_schema) || '.' || quote_ident('mrl_search');
    old_function := to_regprocedure(function_name || '(' || 'vector, integer, integer, jsonb' || ')');
    IF old_function IS NOT NULL THEN
        SELECT p.proacl INTO old_acl FROM pg_proc AS p WHERE p.oid = old_function;
        EXECUTE 'DROP FUNCTION ' || old_function::text;
    END IF;
    EXECUTE replace('CREATE OR REPLACE FUNCTION "mrl_pg_install_schema"."mrl_search"(
    query_embedding vector,
    match_count integer DEFAULT 10,
    oversample integer DEFAULT NULL::integer,
    filter jsonb DEFAULT ''{}''::jsonb,
    match_offset integer DEFAULT 0
)
RETURNS TABLE (id bigint, external_id text, content text, metadata jsonb, distance double precision)
LANGUAGE plpgsql
STABLE
SECURITY INVOKER
SET search_path = "pg_catalog", "mrl_pg_install_schema", "public", "extensions"
SET hnsw.ef_search = 40
SET hnsw.iterative_scan = relaxed_order
SET hnsw.max_scan_tuples = 20000
SET hnsw.scan_mem_multiplier = 1
SET "plan_cache_mode" = ''force_custom_plan''
SET "enable_seqscan" = ''off''
AS $mrl_search$
DECLARE
    pool integer;
    tuned_k integer;
    tuned_oversample integer;
    tuned_ef_search integer;
    problem text;
BEGIN
    IF query_embedding IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = ''22004'',
            MESSAGE = ''mrl_search'' || '': query_embedding must not be NULL'';
    END IF;
    IF vector_dims(query_embedding) <> 1536 THEN
        RAISE EXCEPTION USING ERRCODE = ''22000'',
            MESSAGE = ''mrl_search'' || '': query_embedding has '' || vector_dims(query_embedding)
                || '' dimensions, expected '' || 1536;
    END IF;
    IF vector_norm(subvector(query_embedding, 1, 512)) = 0 THEN
        RAISE EXCEPTION USING ERRCODE = ''22000'',
            MESSAGE = ''mrl_search'' || '': query_embedding has a zero prefix (first ''
                || 512 || '' dimensions), cosine distance is undefined'';
    END IF;
    IF match_count IS NULL OR match_count < 1 OR match_count > 1000 THEN
        RAISE EXCEPTION USING ERRCODE = ''22023'',
            MESSAGE = ''mrl_search'' || '': match_count must be between 1 and '' || 1000
                || '', got '' || coalesce(match_count::text, ''NULL'');
    END IF;
    IF match_offset IS NULL OR match_offset < 0
            OR match_offset::bigint + match_count > 1000 THEN
        RAISE EXCEPTION USING ERRCODE = ''22023'',
            MESSAGE = ''mrl_search'' || '': match_offset must be at least 0, and match_offset + ''
                || ''match_count at most '' || 1000 || '', got ''
                || coalesce(match_offset::text, ''NULL'');
    END IF;
    IF oversample < 1 THEN
        RAISE EXCEPTION USING ERRCODE = ''22023'',
            MESSAGE = ''mrl_search'' || '': oversample must be at least 1, got '' || oversample;
    END IF;
    -- What mrl-pg tune measured for this table, else the product''s default.
    SELECT t.k, t.oversample, t.ef_search INTO tuned_k, tuned_oversample, tuned_ef_search
    FROM "mrl_pg_install_schema"."mrl_pg_tuning" AS t WHERE t.table_name = ''mrl_documents'';
    IF NOT FOUND THEN
        tuned_k := 10;
        tuned_oversample := 8;
        tuned_ef_search := 160;
    END IF;
    oversample := coalesce(oversample, tuned_oversample);
    IF (match_offset::bigint + match_count) * oversample > 100000 THEN
        RAISE EXCEPTION USING ERRCODE = ''22023'',
            MESSAGE = ''mrl_search'' || '': (match_offset + match_count) * oversample must be at most ''
                || 100000;
    END IF;
    IF filter IS NOT NULL AND jsonb_typeof(filter) <> ''object'' THEN
        RAISE EXCEPTION USING ERRCODE = ''22023'',
            MESSAGE = ''mrl_search'' || '': filter must be a JSON object, got a JSON ''
                || jsonb_typeof(filter);
    END IF;

    pool := (match_offset + match_count) * oversample;
    -- An HNSW scan returns at most hnsw.ef_search rows; the SET clauses on this
    -- function make these changes end when the function returns.
    PERFORM set_config(''hnsw.ef_search'', (least(1000, greatest(least(40, tuned_ef_search), ((tuned_ef_search)::bigint * (pool) + (tuned_k)::bigint * (tuned_oversample) - 1) / ((tuned_k)::bigint * (tuned_oversample)))))::text, true);
    PERFORM set_config(''hnsw.max_scan_tuples'', (greatest(20000, 2 * (pool)::bigint))::text, true);
    PERFORM set_config(''hnsw.scan_mem_multiplier'', (least(1000, greatest(1, ceil((greatest(20000, 2 * (pool)::bigint))::numeric * 512 / pg_catalog.pg_size_bytes(current_setting(''work_mem'')))))::integer)::text, true);
    RAISE DEBUG USING MESSAGE = ''mrl_search'' || '': pool '' || pool || '', hnsw.ef_search ''
        || current_setting(''hnsw.ef_search'') || '', hnsw.max_scan_tuples ''
        || current_setting(''hnsw.max_scan_tuples'') || '', oversample '' || oversample;

    IF filter IS NULL OR filter = ''{}''::jsonb THEN
        RETURN QUERY EXECUTE ''WITH candidates AS MATERIALIZED (
    SELECT id, "embedding" <=> $1::vector AS distance
    FROM "mrl_pg_install_schema"."mrl_documents"
    WHERE embedding IS NOT NULL
    ORDER BY "embedding_prefix" <=> l2_normalize(subvector($1::vector, 1, 512))::halfvec(512)
    LIMIT $2
), best AS MATERIALIZED (
    SELECT id, distance
    FROM candidates
    ORDER BY distance, id
    LIMIT $3 OFFSET $5
), missed AS MATERIALIZED (
    SELECT id, "embedding" <=> $1::vector AS distance
    FROM "mrl_pg_install_schema"."mrl_documents"
    WHERE embedding IS NOT NULL AND (SELECT count(*) FROM candidates) < $2
    ORDER BY ("embedding" <=> $1::vector) + 0, id
    LIMIT $3 OFFSET $5
), found AS (
    SELECT id, distance FROM best WHERE NOT (SELECT count(*) FROM candidates) < $2
    UNION ALL
    SELECT id, distance FROM missed
)
SELECT t.id, t.external_id, t.content, t.metadata, found.distance
FROM found JOIN "mrl_pg_install_schema"."mrl_documents" AS t ON t.id = found.id
ORDER BY found.distance, found.id'' USING query_embedding, pool, match_count, NULL::jsonb,
            match_offset;
    ELSE
        RETURN QUERY EXECUTE ''WITH candidates AS MATERIALIZED (
    SELECT id, "embedding" <=> $1::vector AS distance
    FROM "mrl_pg_install_schema"."mrl_documents"
    WHERE embedding IS NOT NULL AND metadata @> $4::jsonb
    ORDER BY "embedding_prefix" <=> l2_normalize(subvector($1::vector, 1, 512))::halfvec(512)
    LIMIT $2
), best AS MATERIALIZED (
    SELECT id, distance
    FROM candidates
    ORDER BY distance, id
    LIMIT $3 OFFSET $5
), missed AS MATERIALIZED (
    SELECT id, "embedding" <=> $1::vector AS distance
    FROM "mrl_pg_install_schema"."mrl_documents"
    WHERE embedding IS NOT NULL AND metadata @> $4::jsonb AND (SELECT count(*) FROM candidates) < $2
    ORDER BY ("embedding" <=> $1::vector) + 0, id
    LIMIT $3 OFFSET $5
), found AS (
    SELECT id, distance FROM best WHERE NOT (SELECT count(*) FROM candidates) < $2
    UNION ALL
    SELECT id, distance FROM missed
)
SELECT t.id, t.external_id, t.content, t.metadata, found.distance
FROM found JOIN "mrl_pg_install_schema"."mrl_documents" AS t ON t.id = found.id
ORDER BY found.distance, found.id'' USING query_embedding, pool, match_count, filter,
            match_offset;
    END IF;
END
$mrl_search$', '"mrl_pg_install_schema"', quote_ident(target_schema));
    IF old_acl IS NOT NULL THEN
        function_name := function_name || '(' || 'vector, integer, integer, jsonb, integer' || ')';
        EXECUTE 'REVOKE ALL ON FUNCTION ' || function_name || ' FROM PUBLIC';
        FOR granted IN SELECT a.grantee, a.is_grantable FROM aclexplode(old_acl) AS a
                WHERE a.privilege_type = 'EXECUTE' LOOP
            EXECUTE 'GRANT EXECUTE ON FUNCTION ' || function_name || ' TO '
                || CASE WHEN granted.grantee = 0 THEN 'PUBLIC'
                        ELSE granted.grantee::regrole::text END
                || CASE WHEN granted.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END;
        END LOOP;
    END IF;
END
$mrl_pg_install$''',
]

# Revision 0004's function, as 0004 created it, once the 5-argument one is gone.
DOWNGRADE = [
    'DROP FUNCTION IF EXISTS "mrl_search"(vector, integer, integer, jsonb, integer)',
    '''DO $mrl_pg_install$
BEGIN
    IF current_schema() IS NULL OR current_schema() !~ '^[a-z_][a-z0-9_]*$' THEN
        RAISE EXCEPTION USING ERRCODE = '3F000', MESSAGE = 'mrl_pg: cannot create '
            || 'mrl_search' || ' in schema ' || coalesce(quote_ident(current_schema()), 'NULL')
            || ': set search_path to a schema whose name needs no quoting, or name one';
    END IF;
    EXECUTE replace('CREATE OR REPLACE FUNCTION "mrl_pg_install_schema"."mrl_search"(
    query_embedding vector,
    match_count integer DEFAULT 10,
    oversample integer DEFAULT NULL::integer,
    filter jsonb DEFAULT ''{}''::jsonb
)
RETURNS TABLE (id bigint, external_id text, content text, metadata jsonb, distance double precision)
LANGUAGE plpgsql
STABLE
SECURITY INVOKER
SET search_path = "pg_catalog", "mrl_pg_install_schema", "public", "extensions"
SET hnsw.ef_search = 40
SET hnsw.iterative_scan = relaxed_order
SET hnsw.max_scan_tuples = 20000
AS $mrl_search$
DECLARE
    pool integer;
    tuned_k integer;
    tuned_oversample integer;
    tuned_ef_search integer;
BEGIN
    IF query_embedding IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = ''22004'',
            MESSAGE = ''mrl_search'' || '': query_embedding must not be NULL'';
    END IF;
    IF vector_dims(query_embedding) <> 1536 THEN
        RAISE EXCEPTION USING ERRCODE = ''22000'',
            MESSAGE = ''mrl_search'' || '': query_embedding has '' || vector_dims(query_embedding)
                || '' dimensions, expected '' || 1536;
    END IF;
    IF vector_norm(subvector(query_embedding, 1, 512)) = 0 THEN
        RAISE EXCEPTION USING ERRCODE = ''22000'',
            MESSAGE = ''mrl_search'' || '': query_embedding has a zero prefix (first ''
                || 512 || '' dimensions), cosine distance is undefined'';
    END IF;
    IF match_count IS NULL OR match_count < 1 OR match_count > 1000 THEN
        RAISE EXCEPTION USING ERRCODE = ''22023'',
            MESSAGE = ''mrl_search'' || '': match_count must be between 1 and '' || 1000
                || '', got '' || coalesce(match_count::text, ''NULL'');
    END IF;
    IF oversample < 1 THEN
        RAISE EXCEPTION USING ERRCODE = ''22023'',
            MESSAGE = ''mrl_search'' || '': oversample must be at least 1, got '' || oversample;
    END IF;
    -- What mrl-pg tune measured for this table, else the product''s default.
    SELECT t.k, t.oversample, t.ef_search INTO tuned_k, tuned_oversample, tuned_ef_search
    FROM "mrl_pg_install_schema"."mrl_pg_tuning" AS t WHERE t.table_name = ''mrl_documents'';
    IF NOT FOUND THEN
        tuned_k := 10;
        tuned_oversample := 8;
        tuned_ef_search := 160;
    END IF;
    oversample := coalesce(oversample, tuned_oversample);
    IF match_count::bigint * oversample > 100000 THEN
        RAISE EXCEPTION USING ERRCODE = ''22023'',
            MESSAGE = ''mrl_search'' || '': match_count * oversample must be at most '' || 100000;
    END IF;
    IF filter IS NOT NULL AND jsonb_typeof(filter) <> ''object'' THEN
        RAISE EXCEPTION USING ERRCODE = ''22023'',
            MESSAGE = ''mrl_search'' || '': filter must be a JSON object, got a JSON ''
                || jsonb_typeof(filter);
    END IF;

    pool := match_count * oversample;
    -- An HNSW scan returns at most hnsw.ef_search rows; the SET clauses on this
    -- function make these changes end when the function returns.
    PERFORM set_config(''hnsw.ef_search'', (least(1000, greatest(least(40, tuned_ef_search), ((tuned_ef_search)::bigint * (pool) + (tuned_k)::bigint * (tuned_oversample) - 1) / ((tuned_k)::bigint * (tuned_oversample)))))::text, true);
    PERFORM set_config(''hnsw.max_scan_tuples'', (greatest(20000, 2 * (pool)::bigint))::text, true);
    RAISE DEBUG USING MESSAGE = ''mrl_search'' || '': pool '' || pool || '', hnsw.ef_search ''
        || current_setting(''hnsw.ef_search'') || '', hnsw.max_scan_tuples ''
        || current_setting(''hnsw.max_scan_tuples'') || '', oversample '' || oversample;

    IF filter IS NULL OR filter = ''{}''::jsonb THEN
        RETURN QUERY EXECUTE ''WITH candidates AS MATERIALIZED (
    SELECT id, "embedding" <=> $1::vector AS distance
    FROM "mrl_pg_install_schema"."mrl_documents"
    ORDER BY "embedding_prefix" <=> l2_normalize(subvector($1::vector, 1, 512))::halfvec(512)
    LIMIT $2
), best AS MATERIALIZED (
    SELECT id, distance
    FROM candidates
    ORDER BY distance, id
    LIMIT $3
)
SELECT t.id, t.external_id, t.content, t.metadata, best.distance
FROM best JOIN "mrl_pg_install_schema"."mrl_documents" AS t ON t.id = best.id
ORDER BY best.distance, best.id'' USING query_embedding, pool, match_count;
    ELSE
        RETURN QUERY EXECUTE ''WITH candidates AS MATERIALIZED (
    SELECT id, "embedding" <=> $1::vector AS distance
    FROM "mrl_pg_install_schema"."mrl_documents"
    WHERE metadata @> $4::jsonb
    ORDER BY "embedding_prefix" <=> l2_normalize(subvector($1::vector, 1, 512))::halfvec(512)
    LIMIT $2
), best AS MATERIALIZED (
    SELECT id, distance
    FROM candidates
    ORDER BY distance, id
    LIMIT $3
)
SELECT t.id, t.external_id, t.content, t.metadata, best.distance
FROM best JOIN "mrl_pg_install_schema"."mrl_documents" AS t ON t.id = best.id
ORDER BY best.distance, best.id'' USING query_embedding, pool, match_count, filter;
    END IF;
END
$mrl_search$', '"mrl_pg_install_schema"', quote_ident(current_schema()));
END
$mrl_pg_install$''',
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(sa.text(statement))


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(sa.text(statement))
