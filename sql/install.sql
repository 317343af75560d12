-- mrl_pg install script: table, indexes and search function for
-- mrl_documents (vector(1536) embedding, halfvec(512) prefix).
-- Generated from mrl_pg/schema.py by `mrl-pg sql > sql/install.sql`;
-- tests/test_sql_script.py fails if this file and the generator differ.
-- Run with: psql "$DATABASE_URL" -f sql/install.sql
-- Needs pgvector >= 0.7 (halfvec, subvector, l2_normalize), >= 0.8 for the
-- iterative index scans that keep filtered searches full.
\set ON_ERROR_STOP on

BEGIN;

CREATE EXTENSION IF NOT EXISTS "vector";

CREATE TABLE "mrl_documents" (
    id bigint GENERATED ALWAYS AS IDENTITY,
    external_id text,
    content text,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    "embedding" vector(1536) NOT NULL,
    "embedding_prefix" halfvec(512) GENERATED ALWAYS AS (l2_normalize(subvector("embedding", 1, 512))::halfvec(512)) STORED,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT "mrl_documents_pkey" PRIMARY KEY (id),
    CONSTRAINT "mrl_documents_external_id_key" UNIQUE (external_id),
    CONSTRAINT "mrl_documents_embedding_nonzero" CHECK (vector_norm("embedding") > 0),
    CONSTRAINT "mrl_documents_embedding_prefix_nonzero" CHECK (vector_norm(subvector("embedding", 1, 512)) > 0),
    CONSTRAINT "mrl_documents_metadata_object" CHECK (jsonb_typeof(metadata) = 'object')
) WITH (toast_tuple_target = 8160);

CREATE INDEX "mrl_documents_embedding_prefix_hnsw" ON "mrl_documents" USING hnsw ("embedding_prefix" halfvec_cosine_ops) WITH (m = 16, ef_construction = 64);

CREATE INDEX "mrl_documents_metadata_gin" ON "mrl_documents" USING gin (metadata jsonb_path_ops);

CREATE OR REPLACE FUNCTION "mrl_search"(
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
$mrl_search$;

COMMIT;
