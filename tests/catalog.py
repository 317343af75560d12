"""Reading a table's definition back from the PostgreSQL catalog, for comparisons."""

from __future__ import annotations

from typing import Any

import psycopg


def describe_table(conn: psycopg.Connection[Any], schema: str, table: str) -> dict[str, Any]:
    """Columns, generation expressions, constraints and indexes, schema names stripped."""
    oid = conn.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (schema, table),
    ).fetchone()
    assert oid is not None, f"{schema}.{table} does not exist"
    columns = conn.execute(
        """SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                  a.attgenerated, a.attidentity, pg_get_expr(d.adbin, d.adrelid)
           FROM pg_attribute a LEFT JOIN pg_attrdef d
             ON d.adrelid = a.attrelid AND d.adnum = a.attnum
           WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
           ORDER BY a.attnum""",
        oid,
    ).fetchall()
    constraints = conn.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %s ORDER BY conname",
        oid,
    ).fetchall()
    indexes = conn.execute(
        "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index "
        "WHERE indrelid = %s ORDER BY 1",
        oid,
    ).fetchall()
    options = conn.execute("SELECT reloptions FROM pg_class WHERE oid = %s", oid).fetchone()
    acl = conn.execute("SELECT relacl::text[] FROM pg_class WHERE oid = %s", oid).fetchone()
    strip = f"{schema}."
    return {
        "options": options[0] if options else None,
        "privileges": acl[0] if acl else None,
        "columns": [tuple(c) for c in columns],
        "constraints": [(n, d.replace(strip, "")) for n, d in constraints],
        "indexes": sorted(
            (n.replace(strip, ""), d.replace(strip, "")) for n, d in indexes
        ),
    }


def describe_function(conn: psycopg.Connection[Any], schema: str, name: str) -> dict[str, Any]:
    """A function's full definition (schema names stripped) and its SET clauses."""
    row = conn.execute(
        "SELECT pg_get_functiondef(p.oid), p.proconfig, p.prosecdef, p.provolatile "
        "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = %s AND p.proname = %s",
        (schema, name),
    ).fetchone()
    assert row is not None, f"function {schema}.{name} does not exist"
    definition, config, definer, volatility = row
    return {
        "definition": definition.replace(f"{schema}.", "").replace(f"'{schema}'", "'<schema>'")
        .replace(f'"{schema}"', "<schema>"),
        "config": [c.replace(schema, "<schema>") for c in config or []],
        "security_definer": definer,
        "volatility": volatility,
    }
