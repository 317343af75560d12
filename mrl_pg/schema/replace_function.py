"""Replacing a table's search function when ``CREATE OR REPLACE`` cannot: another result
type (the table's columns changed) or another signature (an earlier mrl_pg's), in one
statement that keeps the roles' ``EXECUTE`` privileges; and dropping it under every
signature."""

from __future__ import annotations

from psycopg import sql

from mrl_pg.config import TableConfig
from mrl_pg.schema.search_function import SEARCH_FUNCTION_ARGS, search_function_ddl
from mrl_pg.schema.tables import render

__all__ = ["replace_search_function_ddl", "drop_every_search_function_ddl"]


def _overloads(config: TableConfig) -> sql.Composed:
    """``pg_proc`` rows of the table's search function under any signature (an earlier
    mrl_pg's took other arguments), in the function's schema."""
    namespace = (sql.SQL("current_schema()") if config.schema is None
                 else sql.Literal(config.schema))
    return sql.SQL("pg_proc AS p WHERE p.proname = {name} AND p.pronamespace = "
                   "(SELECT n.oid FROM pg_namespace AS n WHERE n.nspname = {namespace})"
                   ).format(name=sql.Literal(config.search_function_name), namespace=namespace)


def replace_search_function_ddl(config: TableConfig) -> sql.Composed:
    """Create or replace the table's search function; when its ``RETURNS TABLE`` changed
    (a column added or dropped, other returned columns), drop and create it instead, in
    the same transaction, granting ``EXECUTE`` again to every role that had it.

    ``CREATE OR REPLACE`` cannot change a function's result type ("cannot change return
    type of existing function"). A dropped function loses its privileges, so they are
    read from ``pg_proc.proacl`` first and given back: each grantee's ``EXECUTE`` (with
    grant option if it had one), and ``PUBLIC``'s taken away if it had been revoked.
    The same for the function under another signature (made by an mrl_pg whose search
    function took other arguments): it is dropped, as two overloads with defaults make
    every short call ambiguous, and its privileges go to the new one.
    """
    create = render(search_function_ddl(config))
    signature = render(config.qualified(config.search_function_name)) + (
        f"({SEARCH_FUNCTION_ARGS})")
    return sql.SQL(
        """DO $mrl_pg_replace$
DECLARE
    fn regprocedure := to_regprocedure({signature});
    acl aclitem[];
    dropped boolean := false;
    old record;
    grant_row record;
BEGIN
    FOR old IN SELECT p.oid::regprocedure AS sig, p.proacl FROM {overloads}
               AND p.oid IS DISTINCT FROM fn::oid
    LOOP
        acl := coalesce(acl, old.proacl);
        dropped := true;
        EXECUTE format('DROP FUNCTION %s', old.sig);
    END LOOP;
    IF fn IS NULL THEN
        EXECUTE {create};
    ELSE
        SELECT coalesce(p.proacl, acl) INTO acl FROM pg_proc AS p WHERE p.oid = fn;
        BEGIN
            EXECUTE {create};
        EXCEPTION WHEN invalid_function_definition THEN
            -- Another result type: drop and create, then give the privileges back.
            EXECUTE format('DROP FUNCTION %s', fn);
            EXECUTE {create};
            dropped := true;
        END;
    END IF;
    IF dropped AND acl IS NOT NULL THEN
        fn := to_regprocedure({signature});
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn);
        FOR grant_row IN
            SELECT a.grantee, a.is_grantable FROM aclexplode(acl) AS a
            WHERE a.privilege_type = 'EXECUTE'
        LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s%s', fn,
                CASE WHEN grant_row.grantee = 0 THEN 'PUBLIC'
                     ELSE grant_row.grantee::regrole::text END,
                CASE WHEN grant_row.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END LOOP;
    END IF;
END
$mrl_pg_replace$""").format(signature=sql.Literal(signature), create=sql.Literal(create),
                            overloads=_overloads(config))


def drop_every_search_function_ddl(config: TableConfig) -> sql.Composed:
    """Drop the table's search function under every signature it has."""
    return sql.SQL(
        """DO $mrl_pg_drop$
DECLARE
    old record;
BEGIN
    FOR old IN SELECT p.oid::regprocedure AS sig FROM {overloads} LOOP
        EXECUTE format('DROP FUNCTION %s', old.sig);
    END LOOP;
END
$mrl_pg_drop$""").format(overloads=_overloads(config))
