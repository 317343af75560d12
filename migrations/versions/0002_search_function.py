"""mrl_search(query_embedding, match_count, oversample, filter) over mrl_documents.

Released: the SQL below is this revision as it was released, frozen. It must
never change (tests/test_migrations.py holds its digest); later changes go
into new revisions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CREATE_FUNCTION = '''CREATE OR REPLACE FUNCTION "mrl_search"(
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
$mrl_search$'''

DROP_FUNCTION = 'DROP FUNCTION IF EXISTS "mrl_search"(vector, integer, integer, jsonb)'


def upgrade() -> None:
    op.execute(sa.text(CREATE_FUNCTION))


def downgrade() -> None:
    op.execute(sa.text(DROP_FUNCTION))
