-- mrl_pg install script: table, indexes and search function for
-- mrl_documents (vector(1536) embedding, halfvec(512) prefix).
-- Generated from mrl_pg/ddl/ by `mrl-pg sql > sql/install.sql`;
-- tests/test_sql_script.py fails if this file and the generator differ.
-- Run with: psql "$DATABASE_URL" -f sql/install.sql
-- Needs pgvector >= 0.8 (iterative index scans); it stops with an error
-- naming the installed version otherwise.
\set ON_ERROR_STOP on

BEGIN;

CREATE EXTENSION IF NOT EXISTS "vector";

DO $mrl_pg_check$
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
$mrl_pg_check$;

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

CREATE INDEX "mrl_documents_embedding_prefix_hnsw" ON "mrl_documents" USING hnsw ("embedding_prefix" halfvec_cosine_ops) WITH (m = 16, ef_construction = 128);

CREATE INDEX "mrl_documents_metadata_gin" ON "mrl_documents" USING gin (metadata jsonb_path_ops);

CREATE TABLE IF NOT EXISTS "mrl_pg_tuning" (
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
);

GRANT SELECT ON "mrl_pg_tuning" TO PUBLIC;

DO $mrl_pg_install$
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
SET "max_parallel_workers_per_gather" = ''0''
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
$mrl_pg_install$;

COMMIT;
