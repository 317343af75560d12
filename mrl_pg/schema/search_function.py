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

from collections.abc import Iterable
from dataclasses import replace

from psycopg import sql

from mrl_pg.config import TableConfig, column_name
from mrl_pg.schema.tables import render
from mrl_pg.statement.filters import OPERATORS, VALUE_KINDS, json_filter_sql, operators_for
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
    "OLD_SEARCH_FUNCTION_ARGS",
]

SEARCH_FUNCTION_ARGS = "vector, integer, integer, jsonb, integer"
OLD_SEARCH_FUNCTION_ARGS = "vector, integer, integer, jsonb"
"""The signature before ``match_offset``: installing drops it, keeping its EXECUTE grants."""

# Dollar-quoted; validated identifiers cannot contain "$", so the body cannot end early.
_BODY = """DECLARE
    pool integer;
    tuned_k integer;
    tuned_oversample integer;
    tuned_ef_search integer;
    problem text;
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
    IF match_offset IS NULL OR match_offset < 0
            OR match_offset::bigint + match_count > {max_k} THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = {fn_name} || ': match_offset must be at least 0, and match_offset + '
                || 'match_count at most ' || {max_k} || ', got '
                || coalesce(match_offset::text, 'NULL');
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
    IF (match_offset::bigint + match_count) * oversample > {max_pool} THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = {fn_name} || ': (match_offset + match_count) * oversample must be at most '
                || {max_pool};
    END IF;
    IF filter IS NOT NULL AND jsonb_typeof(filter) <> 'object' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = {fn_name} || ': filter must be a JSON object, got a JSON '
                || jsonb_typeof(filter);
    END IF;
{unknown_keys}
    pool := (match_offset + match_count) * oversample;
    -- An HNSW scan returns at most hnsw.ef_search rows; the SET clauses on this
    -- function make these changes end when the function returns.
    PERFORM set_config('hnsw.ef_search', ({ef_search})::text, true);
    PERFORM set_config('hnsw.max_scan_tuples', ({max_scan_tuples})::text, true);
    PERFORM set_config('hnsw.scan_mem_multiplier', ({scan_memory})::text, true);
    RAISE DEBUG USING MESSAGE = {fn_name} || ': pool ' || pool || ', hnsw.ef_search '
        || current_setting('hnsw.ef_search') || ', hnsw.max_scan_tuples '
        || current_setting('hnsw.max_scan_tuples') || ', oversample ' || oversample;

    IF filter IS NULL OR filter = '{{}}'::jsonb THEN
        RETURN QUERY EXECUTE {unfiltered} USING query_embedding, pool, match_count, NULL::jsonb,
            match_offset;
    ELSE
        RETURN QUERY EXECUTE {filtered} USING query_embedding, pool, match_count, filter,
            match_offset;
    END IF;
END"""


# Stands for the schema while the function text is built for a DO block that
# puts current_schema() in its place (as "name", so only it is replaced).
_SCHEMA_PLACEHOLDER = "mrl_pg_install_schema"
_UNQUOTED = "^[a-z_][a-z0-9_]*$"


def search_function_ddl(config: TableConfig) -> sql.Composed:
    """A ``DO`` block that creates (or replaces) the table's search function.

    ``SECURITY INVOKER`` (the caller's privileges and row-level security
    apply) and a fixed ``search_path`` (the table's schema, then ``public`` and
    ``extensions`` where pgvector usually lives, Supabase included). With no
    schema in ``config`` the function, and the table it names, are in
    ``current_schema()``: where ``CREATE TABLE`` put it. A function of the
    signature before ``match_offset`` (:data:`OLD_SEARCH_FUNCTION_ARGS`) is
    dropped first, else calls would be ambiguous between the two; the EXECUTE
    grants it had (and a revoke from PUBLIC) are given to the new one.
    """
    target: sql.Composable
    check: sql.Composable
    if config.schema is not None:
        template = render(_create_function(config))
        target = sql.Literal(config.schema)
        check = sql.SQL("")
    else:
        template = render(_create_function(replace(config, schema=_SCHEMA_PLACEHOLDER)))
        target = sql.SQL("current_schema()")
        check = sql.SQL(
            """    IF current_schema() IS NULL OR current_schema() !~ {unquoted} THEN
        RAISE EXCEPTION USING ERRCODE = '3F000', MESSAGE = 'mrl_pg: cannot create '
            || {fn_name} || ' in schema ' || coalesce(quote_ident(current_schema()), 'NULL')
            || ': set search_path to a schema whose name needs no quoting, or name one';
    END IF;
""").format(unquoted=sql.Literal(_UNQUOTED), fn_name=sql.Literal(config.search_function_name))
    return sql.SQL(
        """DO $mrl_pg_install$
DECLARE
    target_schema text;
    function_name text;
    old_function regprocedure;
    old_acl aclitem[];
    granted record;
BEGIN
{check}    target_schema := {target};
    function_name := quote_ident(target_schema) || '.' || quote_ident({fn_name});
    old_function := to_regprocedure(function_name || '(' || {old_args} || ')');
    IF old_function IS NOT NULL THEN
        SELECT p.proacl INTO old_acl FROM pg_proc AS p WHERE p.oid = old_function;
        EXECUTE 'DROP FUNCTION ' || old_function::text;
    END IF;
    EXECUTE replace({template}, {placeholder}, quote_ident(target_schema));
    IF old_acl IS NOT NULL THEN
        function_name := function_name || '(' || {new_args} || ')';
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
$mrl_pg_install$"""
    ).format(
        check=check,
        target=target,
        fn_name=sql.Literal(config.search_function_name),
        old_args=sql.Literal(OLD_SEARCH_FUNCTION_ARGS),
        new_args=sql.Literal(SEARCH_FUNCTION_ARGS),
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


def row_filter(config: TableConfig, filter: sql.Composable) -> sql.Composed:
    """The adopted table's SQL-function filter: the grammar of
    :mod:`mrl_pg.statement.filters` over the normalized JSON object (see
    :func:`_filter_checks`), rendered by the same code as the Python front ends'
    ``where``. A column or operator the object leaves out drops out of the plan:
    ``EXECUTE ... USING`` plans with the object as a constant, so a named column
    reaches the planner as ``author_id = 5``, with its statistics and indexes."""
    return json_filter_sql(config, filter)


def _quoted_list(names: Iterable[str]) -> sql.Composed:
    return sql.SQL("ARRAY[{}]::text[]").format(sql.SQL(", ").join(
        sql.Literal(n) for n in names))


# Shorthand to operators, as compile_where reads it: a list is IN, null is IS NULL,
# another scalar is equality, an object names operators.
_NORMALIZE = """    IF filter IS NOT NULL THEN
        filter := (SELECT coalesce(jsonb_object_agg(c.key, CASE jsonb_typeof(c.value)
                WHEN 'object' THEN c.value
                WHEN 'array' THEN jsonb_build_object('in', c.value)
                WHEN 'null' THEN jsonb_build_object('is_null', true)
                ELSE jsonb_build_object('eq', c.value) END), '{}'::jsonb)
            FROM jsonb_each(filter) AS c);
    END IF;
"""

# The first thing wrong with a normalized filter, in compile_where's words.
_CHECKS = """    SELECT p.problem INTO problem FROM (
        SELECT CASE
            WHEN c.value = '{{}}'::jsonb THEN quote_literal(c.key) || ' has an empty condition'
            WHEN o.key <> ALL ({operators}) THEN 'unknown operator ' || quote_literal(o.key)
                || ' for ' || quote_literal(c.key) || '; use one of ' || {operator_list}
                || CASE WHEN a2.type_name = 'jsonb' THEN ' (containment on a jsonb column: {{"'
                    || c.key || '": {{"contains": {{...}}}}}})' ELSE '' END
            WHEN a.op IS NULL THEN quote_literal(c.key) || ' takes no ' || o.key
                || ' (a column of type ' || a2.type_name || ' takes ' || a2.ops || ')'
            WHEN a.kind = 'scalar' AND jsonb_typeof(o.value) = 'null' THEN quote_literal(c.key)
                || ' ' || o.key || ' null: use {{"' || c.key || '": null}} or is_null for NULL '
                || 'checks'
            WHEN a.kind = 'scalar' AND jsonb_typeof(o.value) IN ('object', 'array') THEN
                quote_literal(c.key) || ' ' || o.key || ' takes one value, got a JSON '
                || jsonb_typeof(o.value)
            WHEN (a.kind = 'list' OR (a.kind = 'contained' AND a.is_array))
                AND jsonb_typeof(o.value) <> 'array' THEN quote_literal(c.key) || ' ' || o.key
                || ' takes a list of values, got a JSON ' || jsonb_typeof(o.value)
            WHEN (a.kind = 'list' OR (a.kind = 'contained' AND a.is_array))
                AND o.value = '[]'::jsonb THEN quote_literal(c.key) || ' ' || o.key
                || ' an empty list'
            WHEN (a.kind = 'list' OR (a.kind = 'contained' AND a.is_array)) AND EXISTS (
                SELECT FROM jsonb_array_elements(o.value) AS e(x)
                WHERE jsonb_typeof(e.x) IN ('null', 'object', 'array'))
                THEN quote_literal(c.key) || ' ' || o.key || ' takes a list of single values'
            WHEN a.kind = 'boolean' AND jsonb_typeof(o.value) <> 'boolean' THEN
                quote_literal(c.key) || ' is_null takes true or false, got ' || o.value::text
            END AS problem
        FROM jsonb_each(filter) AS c
        LEFT JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(c.value) = 'object'
            THEN c.value END) AS o ON true
        LEFT JOIN (VALUES {allowed}) AS a(col, op, kind, is_array)
            ON a.col = c.key AND a.op = o.key
        LEFT JOIN (VALUES {types}) AS a2(col, type_name, ops) ON a2.col = c.key
    ) AS p WHERE p.problem IS NOT NULL LIMIT 1;
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = {fn_name} || ': filter: ' || problem;
    END IF;
"""


def _filter_checks(config: TableConfig) -> sql.Composable:
    """Unknown columns, then :data:`_NORMALIZE`, then :data:`_CHECKS`, each refused by name."""
    if not config.adopted:
        return sql.SQL("")
    columns = config.filterable_columns
    unknown = sql.SQL(
        """    IF EXISTS (SELECT FROM jsonb_object_keys(coalesce(filter, '{{}}'::jsonb)) AS k(name)
               WHERE k.name <> ALL ({columns})) THEN
        RAISE EXCEPTION USING ERRCODE = '42703',
            MESSAGE = {fn_name} || ': filter names a column the table cannot filter on: '
                || (SELECT string_agg(quote_ident(k.name), ', ')
                    FROM jsonb_object_keys(filter) AS k(name) WHERE k.name <> ALL ({columns}));
    END IF;
""").format(columns=_quoted_list(columns), fn_name=sql.Literal(config.search_function_name))
    if not columns:
        return unknown
    allowed = sql.SQL(", ").join(
        sql.SQL("({}, {}, {}, {})").format(
            sql.Literal(name), sql.Literal(op), sql.Literal(VALUE_KINDS[op]),
            sql.Literal(ctype[2].startswith("_")))
        for name, ctype in columns.items() for op in operators_for(ctype))
    types = sql.SQL(", ").join(
        sql.SQL("({}, {}, {})").format(sql.Literal(name), sql.Literal(ctype[2]),
                                       sql.Literal(", ".join(operators_for(ctype))))
        for name, ctype in columns.items())
    checks = sql.SQL(_CHECKS).format(
        operators=_quoted_list(OPERATORS), operator_list=sql.Literal(", ".join(OPERATORS)),
        allowed=allowed, types=types, fn_name=sql.Literal(config.search_function_name))
    return sql.Composed([unknown, sql.SQL(_NORMALIZE), checks])


def _create_function(config: TableConfig) -> sql.Composed:
    # EXECUTE ... USING query_embedding, pool, match_count, filter, match_offset
    query, pool, k, filter, offset = (sql.SQL(f"${i}") for i in range(1, 6))
    unfiltered = adaptive_search_sql(config, query=query, pool=pool, k=k, offset=offset)
    if config.adopted:
        filtered = adaptive_search_sql(config, query=query, pool=pool, k=k, offset=offset,
                                       where=row_filter(config, filter))
    else:
        filtered = adaptive_search_sql(config, query=query, pool=pool, k=k, offset=offset,
                                       filter=filter)
    name = config.qualified(config.search_function_name)
    body = sql.SQL(_BODY).format(
        fn_name=sql.Literal(config.search_function_name),
        unknown_keys=_filter_checks(config),
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
    filter jsonb DEFAULT '{{}}'::jsonb,
    match_offset integer DEFAULT 0
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
