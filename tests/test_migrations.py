"""mrl_pg's Alembic migrations, and the operation a user's own Alembic project calls."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from click.testing import CliRunner

from mrl_pg import TableConfig, install
from mrl_pg.cli._app import cli
from mrl_pg.config import DEFAULT_TABLE
from mrl_pg.migrate import VERSION_TABLE, current, downgrade, upgrade
from tests.catalog import describe_table

REPO = Path(__file__).resolve().parent.parent


def _tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r[0] for r in rows}


def _functions(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace "
            "AND proname LIKE 'mrl_search%'"
        )
        return {r[0] for r in rows}


def test_upgrade_downgrade_upgrade_round_trips_cleanly(fresh_database):
    upgrade(fresh_database)
    assert current(fresh_database) == "0002"
    first = _describe(fresh_database)
    assert _tables(fresh_database) == {DEFAULT_TABLE, VERSION_TABLE}
    assert _functions(fresh_database) == {"mrl_search"}

    downgrade(fresh_database, "base")
    assert current(fresh_database) is None
    assert _tables(fresh_database) == {VERSION_TABLE}
    assert _functions(fresh_database) == set()

    upgrade(fresh_database)
    assert _describe(fresh_database) == first


def _describe(dsn: str) -> dict[str, object]:
    with psycopg.connect(dsn) as conn:
        return describe_table(conn, "public", DEFAULT_TABLE)


def test_alembic_command_line_round_trips_with_the_repository_ini(fresh_database):
    def alembic(*args: str) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "alembic", "-x", f"dsn={fresh_database}", *args],
            cwd=REPO, capture_output=True, text=True, check=False,
        )
        assert result.returncode == 0, result.stderr

    alembic("upgrade", "head")
    assert DEFAULT_TABLE in _tables(fresh_database)
    alembic("downgrade", "base")
    assert DEFAULT_TABLE not in _tables(fresh_database)
    alembic("upgrade", "head")
    assert current(fresh_database) == "0002"


def test_mrl_pg_migrate_upgrades_the_named_database(fresh_database):
    result = CliRunner().invoke(cli, ["migrate", "--dsn", fresh_database])
    assert result.exit_code == 0, result.output
    assert "revision 0002" in result.output
    table = _describe(fresh_database)
    assert ("embedding", "vector(1536)") in [(c[0], c[1]) for c in table["columns"]]
    # Running it again is a no-op.
    again = CliRunner().invoke(cli, ["migrate", "--dsn", fresh_database])
    assert again.exit_code == 0 and _describe(fresh_database) == table


def test_offline_mode_prints_the_ddl_without_a_database(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-x", "dsn=postgresql://nobody@/nowhere",
         "upgrade", "head", "--sql"],
        cwd=REPO, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "USING hnsw (\"embedding_prefix\" halfvec_cosine_ops)" in result.stdout
    assert "CREATE OR REPLACE FUNCTION \"mrl_search\"" in result.stdout


USER_ENV = '''
from alembic import context
from sqlalchemy import create_engine, pool

url = context.get_x_argument(as_dictionary=True)["url"]
engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection)  # the application's own version table
    with context.begin_transaction():
        context.run_migrations()
'''

USER_REVISION = '''
"""add a 3072/256 MRL table to my application"""
from mrl_pg import TableConfig, install
from mrl_pg.alembic import create_mrl_table, drop_mrl_table

revision = "a1"
down_revision = None
branch_labels = None
depends_on = None

DOCS = TableConfig("docs", full_dim=3072, prefix_dim=256)


def upgrade() -> None:
    create_mrl_table(DOCS)


def downgrade() -> None:
    drop_mrl_table(DOCS)
'''


def test_a_users_own_alembic_project_adds_an_mrl_table_in_one_call(tmp_path, fresh_database):
    from mrl_pg.db import sqlalchemy_url

    (tmp_path / "versions").mkdir()
    (tmp_path / "env.py").write_text(textwrap.dedent(USER_ENV))
    (tmp_path / "versions" / "a1_docs.py").write_text(textwrap.dedent(USER_REVISION))
    cfg = Config()
    cfg.set_main_option("script_location", str(tmp_path))
    cfg.cmd_opts = type("Opts", (), {"x": [f"url={sqlalchemy_url(fresh_database)}"]})()

    command.upgrade(cfg, "head")
    assert {"docs", "alembic_version"} <= _tables(fresh_database)
    assert _functions(fresh_database) == {"mrl_search_docs"}
    with psycopg.connect(fresh_database) as conn:
        columns = {c[0]: c[1] for c in describe_table(conn, "public", "docs")["columns"]}
        assert columns["embedding"] == "vector(3072)"
        assert columns["embedding_prefix"] == "halfvec(256)"
        # Identical to the same table made by install() in another schema.
        conn.execute("CREATE SCHEMA reference")
        install(conn, TableConfig("docs", full_dim=3072, prefix_dim=256, schema="reference"))
        assert describe_table(conn, "public", "docs") == describe_table(conn, "reference", "docs")
        conn.execute("DROP SCHEMA reference CASCADE")
        conn.commit()

    command.downgrade(cfg, "base")
    assert "docs" not in _tables(fresh_database)
    assert _functions(fresh_database) == set()
