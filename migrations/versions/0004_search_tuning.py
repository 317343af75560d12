"""Per-table search settings: mrl_pg_tuning, read by mrl_search when oversample is left out.

- ``mrl_pg_tuning`` (in the table's schema, readable by every role) holds
  what ``mrl-pg tune`` measured for a table: k, oversample, ef_search and how
  they were measured. The psycopg front end, the ORM and ``mrl_search`` use
  that row when the caller leaves ``oversample`` unset.
- ``mrl_search``'s ``oversample`` now defaults to NULL (the table's tuned
  value, else 8), and ``hnsw.ef_search`` keeps the tuned proportion to the pool
  (the default, twice the pool within 40..1000, is unchanged).

Released: the SQL below is this revision as it was released, frozen. It must
never change (tests/test_migrations.py holds its digest); later changes go
into new revisions.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = [
    '''CREATE TABLE IF NOT EXISTS "mrl_pg_tuning" (
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
    CONSTRAINT "mrl_pg_tuning_pkey" PRIMARY KEY (table_name),
    CONSTRAINT "mrl_pg_tuning_k_range" CHECK (k BETWEEN 1 AND 1000),
    CONSTRAINT "mrl_pg_tuning_oversample_range" CHECK (oversample >= 1),
    CONSTRAINT "mrl_pg_tuning_ef_search_range" CHECK (ef_search BETWEEN 1 AND 1000),
    CONSTRAINT "mrl_pg_tuning_pool_range" CHECK (k::bigint * oversample <= 100000)
)''',
    '''GRANT SELECT ON "mrl_pg_tuning" TO PUBLIC''',
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

# Revision 0003's function, as 0003 created it; then the table 0004 added.
DOWNGRADE = [
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
    oversample integer DEFAULT 8,
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
    IF oversample IS NULL OR oversample < 1 THEN
        RAISE EXCEPTION USING ERRCODE = ''22023'',
            MESSAGE = ''mrl_search'' || '': oversample must be at least 1, got ''
                || coalesce(oversample::text, ''NULL'');
    END IF;
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
    PERFORM set_config(''hnsw.ef_search'', (least(greatest(40, 2 * (pool)::bigint), 1000))::text, true);
    PERFORM set_config(''hnsw.max_scan_tuples'', (greatest(20000, 2 * (pool)::bigint))::text, true);
    RAISE DEBUG USING MESSAGE = ''mrl_search'' || '': pool '' || pool || '', hnsw.ef_search ''
        || current_setting(''hnsw.ef_search'') || '', hnsw.max_scan_tuples ''
        || current_setting(''hnsw.max_scan_tuples'');

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
    '''DROP TABLE IF EXISTS "mrl_pg_tuning"''',
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(sa.text(statement))


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(sa.text(statement))
