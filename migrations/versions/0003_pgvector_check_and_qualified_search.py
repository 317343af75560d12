"""pgvector >= 0.8 check; mrl_search names its table with its schema; settings from one rule.

- Stops with an error naming the installed version when pgvector is older
  than 0.8 (searches set ``hnsw.iterative_scan``, which 0.7 does not have).
- ``mrl_search`` is created in, and names its table with, the schema the
  table is in (``current_schema()``), so it works outside ``public``.
- Its ``hnsw.ef_search`` rule is rendered from the rule the Python front
  ends evaluate (twice the pool, 40..1000); a database migrated before
  that rule existed gets it here, whatever body 0002 left.
- Its candidates carry only id and full distance; the best are joined back.
- Restates the table's ``toast_tuple_target`` for databases made before it.

Released: the SQL below is this revision as it was released, frozen. It must
never change (tests/test_migrations.py holds its digest); later changes go
into new revisions.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = [
    '''DO $mrl_pg_check$
DECLARE
    installed text := (SELECT extversion FROM pg_extension WHERE extname = 'vector');
BEGIN
    IF installed IS NULL OR string_to_array(split_part(installed, '-', 1), '.')::int[]
            < ARRAY[0, 8, 0] THEN
        RAISE EXCEPTION USING ERRCODE = '0A000',
            MESSAGE = 'mrl_pg needs pgvector ' || '0.8.0' || ' or later, but '
                || coalesce('pgvector ' || installed || ' is installed', 'it is not installed'),
            HINT = 'install a newer pgvector, then ALTER EXTENSION vector UPDATE';
    END IF;
END
$mrl_pg_check$''',
    'ALTER TABLE "mrl_documents" SET (toast_tuple_target = 8160)',
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
]

# Revision 0002's function, as 0002 created it.
DOWNGRADE = [
    '''CREATE OR REPLACE FUNCTION "mrl_search"(
    query_embedding vector,
    match_count integer DEFAULT 10,
    oversample integer DEFAULT 8,
    filter jsonb DEFAULT '{}'::jsonb
)
RETURNS TABLE (id bigint, external_id text, content text, metadata jsonb, distance double precision)
LANGUAGE plpgsql
STABLE
SECURITY INVOKER
SET search_path = "pg_catalog", "public", "extensions"
SET hnsw.ef_search = 40
SET hnsw.iterative_scan = relaxed_order
SET hnsw.max_scan_tuples = 20000
AS $mrl_search$
DECLARE
    pool integer;
BEGIN
    IF query_embedding IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004',
            MESSAGE = 'mrl_search' || ': query_embedding must not be NULL';
    END IF;
    IF vector_dims(query_embedding) <> 1536 THEN
        RAISE EXCEPTION USING ERRCODE = '22000',
            MESSAGE = 'mrl_search' || ': query_embedding has ' || vector_dims(query_embedding)
                || ' dimensions, expected ' || 1536;
    END IF;
    IF vector_norm(subvector(query_embedding, 1, 512)) = 0 THEN
        RAISE EXCEPTION USING ERRCODE = '22000',
            MESSAGE = 'mrl_search' || ': query_embedding has a zero prefix (first '
                || 512 || ' dimensions), cosine distance is undefined';
    END IF;
    IF match_count IS NULL OR match_count < 1 OR match_count > 1000 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = 'mrl_search' || ': match_count must be between 1 and ' || 1000
                || ', got ' || coalesce(match_count::text, 'NULL');
    END IF;
    IF oversample IS NULL OR oversample < 1 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = 'mrl_search' || ': oversample must be at least 1, got '
                || coalesce(oversample::text, 'NULL');
    END IF;
    IF match_count::bigint * oversample > 100000 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = 'mrl_search' || ': match_count * oversample must be at most ' || 100000;
    END IF;
    IF filter IS NOT NULL AND jsonb_typeof(filter) <> 'object' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = 'mrl_search' || ': filter must be a JSON object, got a JSON '
                || jsonb_typeof(filter);
    END IF;

    pool := match_count * oversample;
    -- An HNSW scan returns at most hnsw.ef_search rows; the SET clauses on this
    -- function make these changes end when the function returns.
    PERFORM set_config('hnsw.ef_search', greatest(40, least(2 * pool, 1000))::text, true);
    PERFORM set_config('hnsw.max_scan_tuples', greatest(20000, 2 * pool)::text, true);

    IF filter IS NULL OR filter = '{}'::jsonb THEN
        RETURN QUERY EXECUTE 'WITH candidates AS MATERIALIZED (
    SELECT id, external_id, content, metadata, "embedding"
    FROM "mrl_documents"
    ORDER BY "embedding_prefix" <=> l2_normalize(subvector($1::vector, 1, 512))::halfvec(512)
    LIMIT $2
)
SELECT id, external_id, content, metadata, "embedding" <=> $1::vector AS distance
FROM candidates
ORDER BY distance, id
LIMIT $3' USING query_embedding, pool, match_count;
    ELSE
        RETURN QUERY EXECUTE 'WITH candidates AS MATERIALIZED (
    SELECT id, external_id, content, metadata, "embedding"
    FROM "mrl_documents"
    WHERE metadata @> $4::jsonb
    ORDER BY "embedding_prefix" <=> l2_normalize(subvector($1::vector, 1, 512))::halfvec(512)
    LIMIT $2
)
SELECT id, external_id, content, metadata, "embedding" <=> $1::vector AS distance
FROM candidates
ORDER BY distance, id
LIMIT $3' USING query_embedding, pool, match_count, filter;
    END IF;
END
$mrl_search$''',
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(sa.text(statement))


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(sa.text(statement))
