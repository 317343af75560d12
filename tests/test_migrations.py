"""mrl_pg's Alembic migrations, and the operation a user's own Alembic project calls."""

from __future__ import annotations

import ast
import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from mrl_pg import TableConfig, connect, install
from mrl_pg.cli._app import cli
from mrl_pg.config import DEFAULT_TABLE
from mrl_pg.errors import DatabaseError, PgvectorVersionError
from mrl_pg.migrate import VERSION_TABLE, alembic_config, current, downgrade, upgrade
from mrl_pg.statement.tuning import TUNING_TABLE
from tests.catalog import describe_function, describe_table

REPO = Path(__file__).resolve().parent.parent
VERSIONS = REPO / "migrations" / "versions"
_SCRIPTS = ScriptDirectory.from_config(alembic_config())
HEAD = _SCRIPTS.get_current_head()
REVISIONS = [r.revision for r in reversed(list(_SCRIPTS.walk_revisions()))]

# Each released revision's file, as released. A released revision never
# changes: a schema or function change is a new revision (add its digest
# here when it is released).
RELEASED = {
    "0001_documents_table.py": "e27ea338a2c9a25be0bfe74cff01432580e16bbe491505f065290f43e7dececb",
    "0002_search_function.py": "862e125872f9613f47b28ccd084403fee471b3fec72dad446de9384c0b46b445",
    "0003_pgvector_check_and_qualified_search.py":
        "34c2b41317f578ec6b696612ab6aa4e054afe8f39ba31438649690508fa2be4a",
    "0004_search_tuning.py": "70267a3deabb73c6e241b0cf773116c7a210d6f25632e319dcfde508261cd105",
    "0005_prefix_index_ef_construction.py":
        "73ecf3be6195fd96fbe205679e00626b7cfdcc6898204939b97bf55a86603ec2",
    "0006_search_function_offset_and_one_round_trip.py":
        "1f8ecaf5b6bfb9da97e9d6a7052ab7d98922f4a888567a9f9d87cdf136758b86",
    "0007_search_without_parallel_workers.py":
        "2f381068f14f220e2bb2257ac5db0c226e3c4f148c65226b7fe70b6b8d6099fd",
}


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
    assert current(fresh_database) == HEAD
    first = _describe(fresh_database)
    assert _tables(fresh_database) == {DEFAULT_TABLE, VERSION_TABLE, TUNING_TABLE}
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
    assert current(fresh_database) == HEAD


def test_mrl_pg_migrate_upgrades_the_named_database(fresh_database):
    result = CliRunner().invoke(cli, ["migrate", "--dsn", fresh_database])
    assert result.exit_code == 0, result.output
    assert f"revision {HEAD}" in result.output
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
    assert "CREATE OR REPLACE FUNCTION \"mrl_search\"" in result.stdout  # 0002
    assert "CREATE OR REPLACE FUNCTION \"mrl_pg_install_schema\".\"mrl_search\"" in (
        result.stdout)  # 0003


def test_offline_sql_run_by_psql_equals_a_fresh_install(fresh_database, second_database):
    from tests.test_sql_script import _psql

    offline = subprocess.run(
        [sys.executable, "-m", "alembic", "-x", "dsn=postgresql://nobody@/nowhere",
         "upgrade", "head", "--sql"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout
    result = subprocess.run([_psql(), fresh_database, "-q", "-v", "ON_ERROR_STOP=1"],
                            input=offline, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert current(fresh_database) == HEAD
    assert _catalog(fresh_database) == _fresh_install(second_database)


USER_ENV = '''
import psycopg
from alembic import context
from sqlalchemy import create_engine, pool

dsn = context.get_x_argument(as_dictionary=True)["dsn"]
engine = create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(dsn),
                       poolclass=pool.NullPool)
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
    (tmp_path / "versions").mkdir()
    (tmp_path / "env.py").write_text(textwrap.dedent(USER_ENV))
    (tmp_path / "versions" / "a1_docs.py").write_text(textwrap.dedent(USER_REVISION))
    cfg = Config()
    cfg.set_main_option("script_location", str(tmp_path))
    cfg.cmd_opts = type("Opts", (), {"x": [f"dsn={fresh_database}"]})()

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


# --- Frozen revisions ------------------------------------------------------------------


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_released_revisions_are_byte_for_byte_as_released():
    for name, digest in RELEASED.items():
        assert _digest(VERSIONS / name) == digest, f"{name} was released and must not change"
    assert {p.name for p in VERSIONS.glob("0*.py")} == set(RELEASED), (
        "record the digest of every released revision in RELEASED"
    )


@pytest.mark.parametrize("path", sorted(VERSIONS.glob("0*.py")), ids=lambda p: p.name)
def test_a_revision_holds_its_own_sql_and_calls_no_live_ddl_generator(path):
    """A revision that called mrl_pg's generators would change whenever they do."""
    tree = ast.parse(path.read_text())
    imported = [
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    ]
    assert not [m for m in imported if m and m.split(".")[0] == "mrl_pg"], imported


def _catalog(dsn: str, schema: str = "public") -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        return {
            "table": describe_table(conn, schema, DEFAULT_TABLE),
            "tuning": describe_table(conn, schema, TUNING_TABLE),
            "function": describe_function(conn, schema, "mrl_search"),
        }


def _fresh_install(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        install(conn, TableConfig())
    return _catalog(dsn)


@pytest.fixture
def second_database(fresh_database):
    """Another empty database on the same server."""
    name = conninfo_to_dict(fresh_database)["dbname"] + "_b"
    admin = make_conninfo(fresh_database, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield make_conninfo(fresh_database, dbname=name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


@pytest.mark.parametrize("start", [None, *REVISIONS[:-1]])
def test_upgrading_from_each_earlier_revision_equals_a_fresh_install(
    fresh_database, second_database, start
):
    if start is not None:
        upgrade(fresh_database, start)
        assert current(fresh_database) == start
    upgrade(fresh_database)
    assert current(fresh_database) == HEAD
    assert _catalog(fresh_database) == _fresh_install(second_database)


def test_a_search_function_left_by_an_older_0002_body_is_replaced_at_head(
    fresh_database, second_database
):
    """Databases migrated before the ef_search rule existed kept the old body at 0002."""
    upgrade(fresh_database, "0002")
    with psycopg.connect(fresh_database) as conn:
        body = conn.execute("SELECT pg_get_functiondef('mrl_search'::regproc)").fetchone()
        assert body is not None and "2 * pool" in body[0]
        conn.execute(body[0].replace("2 * pool", "pool"))  # the rule before the change
    upgrade(fresh_database)
    assert _catalog(fresh_database) == _fresh_install(second_database)


def test_mrl_search_finds_its_table_when_migrated_outside_public(fresh_database):
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA app")
        conn.execute("CREATE EXTENSION vector SCHEMA public")
    in_app = make_conninfo(fresh_database, options="-c search_path=app,public")
    upgrade(in_app)
    with connect(in_app, autocommit=True) as conn:
        conn.execute("INSERT INTO mrl_documents (external_id, embedding) VALUES ('a', %s)",
                     (np.ones(1536, dtype=np.float32),))
    with psycopg.connect(fresh_database) as conn:
        definition = conn.execute(
            "SELECT pg_get_functiondef('app.mrl_search'::regproc)").fetchone()
    assert definition is not None and 'FROM app."mrl_documents"' in definition[0]
    # Called from a session whose search_path does not contain app at all.
    with connect(fresh_database, autocommit=True) as conn:
        conn.execute("SET search_path = public")
        rows = conn.execute("SELECT external_id FROM app.mrl_search(%s)",
                            (np.ones(1536, dtype=np.float32),)).fetchall()
    assert rows == [("a",)]


def test_install_migrate_and_connect_stop_on_pgvector_older_than_0_8(fresh_database):
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
        # What a server with pgvector 0.7.4 reports; the checks read exactly this.
        conn.execute("UPDATE pg_extension SET extversion = '0.7.4' WHERE extname = 'vector'")
        with pytest.raises(DatabaseError, match="needs pgvector 0.8.0 or later, but pgvector "
                                                "0.7.4 is installed"):
            install(conn, TableConfig())
        assert conn.execute("SELECT to_regclass('mrl_documents')").fetchone() == (None,)
    with pytest.raises(Exception, match="pgvector 0.7.4 is installed"):
        upgrade(fresh_database)
    assert current(fresh_database) is None
    with pytest.raises(PgvectorVersionError, match="pgvector 0.7.4 is installed") as info:
        connect(fresh_database)
    assert info.value.installed == "0.7.4"


def test_a_connection_handed_to_alembic_gets_every_revision_committed(fresh_database):
    from mrl_pg.migrate import migration_engine

    engine = migration_engine(fresh_database)
    try:
        with engine.connect() as connection:
            command.upgrade(alembic_config(connection=connection), "head")
    finally:
        engine.dispose()
    assert current(fresh_database) == HEAD
    assert DEFAULT_TABLE in _tables(fresh_database)
