"""``mrl_search(...)``: the adaptive search as a SQL function for psql and RPC callers.

The function body runs the statement from :mod:`mrl_pg.statement.query` through
``EXECUTE ... USING`` so every call is planned with its real arguments (a
cached generic plan could pick another index, or none). Its HNSW settings
come from the same rules the psycopg and ORM front ends evaluate
(:meth:`~mrl_pg.statement.tuning.SearchTuning.ef_search_for` over the table's row in
``mrl_pg_tuning``, or the default, and :data:`~mrl_pg.statement.query.MAX_SCAN_TUPLES_RULE`),
rendered into the body. The table is always named with its schema: the one
in the configuration, or else the schema the function is created in
(``current_schema()`` at install time), so a caller's ``search_path`` never matters.
"""

from __future__ import annotations

from dataclasses import replace

from psycopg import sql

from mrl_pg.config import TableConfig, column_name
from mrl_pg.schema.tables import render
from mrl_pg.statement.query import (
    MAX_SCAN_TUPLES_RULE,
    SCAN_MEMORY_RULE,
    adaptive_search_sql,
    planner_settings,
)
from mrl_pg.statement.tuning import (
    DEFAULT_TUNING,
    MAX_MATCH_COUNT,
    MAX_POOL,
    ef_search_sql,
    tuning_table,
)

__all__ = [
    "search_function_ddl", "drop_search_function_ddl", "SEARCH_FUNCTION_ARGS", "row_filter",
]

SEARCH_FUNCTION_ARGS = "vector, integer, integer, jsonb"

# Dollar-quoted; validated identifiers cannot contain "$", so the body cannot end early.
_BODY = """DECLARE
    pool integer;
    tuned_k integer;
    tuned_oversample integer;
    tuned_ef_search integer;
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
    IF oversample < 1 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = {fn_name} || ': oversample must be at least 1, got ' || oversample;
    END IF;
    -- What mrl-pg tune measured for this table, else the product's default.
    SELECT t.k, t.oversample, t.ef_search INTO tuned_k, tuned_oversample, tuned_ef_search
    FROM {tuning} AS t WHERE t.table_name = {table_name};
    IF NOT FOUND THEN
        tuned_k := {default_k};
        tuned_oversample := {default_oversample};
        tuned_ef_search := {default_ef_search};
    END IF;
    oversample := coalesce(oversample, tuned_oversample);
    IF match_count::bigint * oversample > {max_pool} THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = {fn_name} || ': match_count * oversample must be at most ' || {max_pool};
    END IF;
    IF filter IS NOT NULL AND jsonb_typeof(filter) <> 'object' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = {fn_name} || ': filter must be a JSON object, got a JSON '
                || jsonb_typeof(filter);
    END IF;
{unknown_keys}
    pool := match_count * oversample;
    -- An HNSW scan returns at most hnsw.ef_search rows; the SET clauses on this
    -- function make these changes end when the function returns.
    PERFORM set_config('hnsw.ef_search', ({ef_search})::text, true);
    PERFORM set_config('hnsw.max_scan_tuples', ({max_scan_tuples})::text, true);
    PERFORM set_config('hnsw.scan_mem_multiplier', ({scan_memory})::text, true);
    RAISE DEBUG USING MESSAGE = {fn_name} || ': pool ' || pool || ', hnsw.ef_search '
        || current_setting('hnsw.ef_search') || ', hnsw.max_scan_tuples '
        || current_setting('hnsw.max_scan_tuples') || ', oversample ' || oversample;

    IF filter IS NULL OR filter = '{{}}'::jsonb THEN
        RETURN QUERY EXECUTE {unfiltered} USING query_embedding, pool, match_count;
    ELSE
        RETURN QUERY EXECUTE {filtered} USING query_embedding, pool, match_count, filter;
    END IF;
END"""


# Stands for the schema while the function text is built for a DO block that
# puts current_schema() in its place (as "name", so only it is replaced).
_SCHEMA_PLACEHOLDER = "mrl_pg_install_schema"
_UNQUOTED = "^[a-z_][a-z0-9_]*$"


def search_function_ddl(config: TableConfig) -> sql.Composed:
    """``CREATE OR REPLACE FUNCTION`` for the table's search function.

    ``SECURITY INVOKER`` (the caller's privileges and row-level security
    apply) and a fixed ``search_path`` (the table's schema, then ``public`` and
    ``extensions`` where pgvector usually lives, Supabase included). With no
    schema in ``config`` this is a ``DO`` block that creates the function, and
    names the table, in ``current_schema()``: where ``CREATE TABLE`` put it.
    """
    if config.schema is not None:
        return _create_function(config)
    template = render(_create_function(replace(config, schema=_SCHEMA_PLACEHOLDER)))
    return sql.SQL(
        """DO $mrl_pg_install$
BEGIN
    IF current_schema() IS NULL OR current_schema() !~ {unquoted} THEN
        RAISE EXCEPTION USING ERRCODE = '3F000', MESSAGE = 'mrl_pg: cannot create '
            || {fn_name} || ' in schema ' || coalesce(quote_ident(current_schema()), 'NULL')
            || ': set search_path to a schema whose name needs no quoting, or name one';
    END IF;
    EXECUTE replace({template}, {placeholder}, quote_ident(current_schema()));
END
$mrl_pg_install$"""
    ).format(
        unquoted=sql.Literal(_UNQUOTED),
        fn_name=sql.Literal(config.search_function_name),
        template=sql.Literal(template),
        placeholder=sql.Literal(sql.Identifier(_SCHEMA_PLACEHOLDER).as_string(None)),
    )


_MANAGED_TYPES = {"id": "bigint", "external_id": "text", "content": "text", "metadata": "jsonb"}


def _result_columns(config: TableConfig) -> sql.Composed:
    types = config.filterable_columns
    columns = []
    for name in config.returned_columns:
        if config.adopted:
            _, type_schema, type_name, _ = types[name]
            type_sql: sql.Composable = sql.Identifier(type_schema, type_name)
        else:
            type_sql = sql.SQL(_MANAGED_TYPES.get(name, "text"))  # the tenant column is text
        columns.append(sql.SQL("{} {}").format(column_name(name), type_sql))
    return sql.SQL(", ").join([*columns, sql.SQL("distance double precision")])


# Types whose JSON text is their SQL text: compared with "=" after a cast.
_SCALAR_JSON = ("int2", "int4", "int8", "float4", "float8", "numeric", "text", "varchar",
                "bpchar", "bool", "uuid", "date", "timestamp", "timestamptz", "time")


def row_filter(config: TableConfig, filter: sql.Composable) -> sql.Composed:
    """The adopted table's SQL-function filter: for each column the JSON object names,
    equality (``{"author_id": 5}``; JSON null is IS NULL), or containment for jsonb,
    json and array columns. A column the object leaves out drops out of the plan:
    ``EXECUTE ... USING`` plans with the object as a constant, so a named column
    reaches the planner as ``author_id = 5``, with its statistics and indexes."""
    parts = []
    for name, type_schema, type_name, _ in config.filterable_columns.values():
        key, column = sql.Literal(name), column_name(name)
        value = sql.SQL("({} -> {})").format(filter, key)
        if type_schema == "pg_catalog" and type_name in _SCALAR_JSON:
            test: sql.Composable = sql.SQL(
                "CASE WHEN jsonb_typeof({value}) = 'null' THEN {column} IS NULL "
                "ELSE {column} = CAST({filter} ->> {key} AS {type}) END").format(
                value=value, column=column, filter=filter, key=key,
                type=sql.Identifier(type_schema, type_name))
        else:
            test = sql.SQL("to_jsonb({}) @> {}").format(column, value)
        parts.append(sql.SQL("({} IS NULL OR {})").format(value, test))
    return sql.SQL(" AND ").join(parts)


def _unknown_keys_check(config: TableConfig) -> sql.Composable:
    if not config.adopted:
        return sql.SQL("")
    return sql.SQL(
        """    IF EXISTS (SELECT FROM jsonb_object_keys(coalesce(filter, '{{}}'::jsonb)) AS k(name)
               WHERE k.name <> ALL ({columns})) THEN
        RAISE EXCEPTION USING ERRCODE = '42703',
            MESSAGE = {fn_name} || ': filter names a column the table cannot filter on: '
                || (SELECT string_agg(quote_ident(k.name), ', ')
                    FROM jsonb_object_keys(filter) AS k(name) WHERE k.name <> ALL ({columns}));
    END IF;
""").format(columns=sql.SQL("ARRAY[{}]::text[]").format(sql.SQL(", ").join(
        sql.Literal(n) for n in config.filterable_columns)),
        fn_name=sql.Literal(config.search_function_name))


def _create_function(config: TableConfig) -> sql.Composed:
    # EXECUTE ... USING query_embedding, pool, match_count, filter
    query, pool, k, filter = sql.SQL("$1"), sql.SQL("$2"), sql.SQL("$3"), sql.SQL("$4")
    unfiltered = adaptive_search_sql(config, query=query, pool=pool, k=k)
    if config.adopted:
        filtered = adaptive_search_sql(config, query=query, pool=pool, k=k,
                                       where=row_filter(config, filter))
    else:
        filtered = adaptive_search_sql(config, query=query, pool=pool, k=k, filter=filter)
    name = config.qualified(config.search_function_name)
    body = sql.SQL(_BODY).format(
        fn_name=sql.Literal(config.search_function_name),
        unknown_keys=_unknown_keys_check(config),
        n=sql.Literal(config.full_dim),
        p=sql.Literal(config.prefix_dim),
        max_k=sql.Literal(MAX_MATCH_COUNT),
        max_pool=sql.Literal(MAX_POOL),
        ef_search=ef_search_sql(sql.SQL("pool"), oversample=sql.SQL("tuned_oversample"),
                                ef_search=sql.SQL("tuned_ef_search"), k=sql.SQL("tuned_k")),
        tuning=tuning_table(config),
        table_name=sql.Literal(config.name),
        default_k=sql.Literal(DEFAULT_TUNING.k),
        default_oversample=sql.Literal(DEFAULT_TUNING.oversample),
        default_ef_search=sql.Literal(DEFAULT_TUNING.ef_search),
        max_scan_tuples=MAX_SCAN_TUPLES_RULE.sql(sql.SQL("pool")),
        scan_memory=SCAN_MEMORY_RULE.sql(MAX_SCAN_TUPLES_RULE.sql(sql.SQL("pool"))),
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
    oversample integer DEFAULT NULL::integer,
    filter jsonb DEFAULT '{{}}'::jsonb
)
RETURNS TABLE ({columns})
LANGUAGE plpgsql
STABLE
SECURITY INVOKER
SET search_path = {search_path}
SET hnsw.ef_search = 40
SET hnsw.iterative_scan = relaxed_order
SET hnsw.max_scan_tuples = 20000
SET hnsw.scan_mem_multiplier = 1
{planner}
AS $mrl_search$
{body}
$mrl_search$"""
    ).format(name=name, search_path=search_path, body=body, columns=_result_columns(config),
             planner=sql.SQL("\n").join(
                 sql.SQL("SET {} = {}").format(sql.Identifier(n), sql.Literal(v))
                 for n, v in planner_settings(config) if isinstance(v, str)))


def drop_search_function_ddl(config: TableConfig) -> sql.Composed:
    """``DROP FUNCTION IF EXISTS`` for the table's search function."""
    return sql.SQL("DROP FUNCTION IF EXISTS {}({})").format(
        config.qualified(config.search_function_name), sql.SQL(SEARCH_FUNCTION_ARGS)
    )
