"""The embedded server: started once, reused across processes, stopped with its data kept."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest
from click.testing import CliRunner

from mrl_pg.cli._app import cli
from mrl_pg.server import EmbeddedServer, resolve_dsn

pytestmark = pytest.mark.slow  # starts and stops embedded servers


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An embedded server of the test's own, so the shared one is never stopped."""
    path = tmp_path / "home"
    monkeypatch.setenv("MRL_PG_HOME", str(path))
    monkeypatch.delenv("MRL_PG_DSN", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    yield path
    EmbeddedServer(path).stop()


def _cli(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_start_twice_reuses_one_server_that_a_second_process_sees(home):
    dsn = _cli("server", "start").strip()
    pid = EmbeddedServer(home).status().pid
    assert _cli("server", "start").strip() == dsn
    assert EmbeddedServer(home).status().pid == pid

    other = subprocess.run(
        [sys.executable, "-m", "mrl_pg", "server", "url"],
        capture_output=True, text=True, env=os.environ.copy(), check=True,
    )
    assert other.stdout == dsn + "\n"  # the DSN alone on stdout
    with psycopg.connect(other.stdout.strip()) as conn:
        assert conn.execute("SELECT default_version FROM pg_available_extensions "
                            "WHERE name = 'vector'").fetchone() is not None


def test_stop_keeps_the_data_for_the_next_start(home):
    dsn = _cli("server", "start").strip()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (x int)")
        conn.execute("INSERT INTO kept VALUES (42)")
    _cli("server", "stop")
    assert "not running" in _cli("server", "status")
    url = CliRunner().invoke(cli, ["server", "url"])
    assert url.exit_code == 1 and "no server is running" in url.output

    dsn = _cli("server", "start").strip()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT x FROM kept").fetchone() == (42,)
    assert "running (pid" in _cli("server", "status")


def test_resolve_dsn_prefers_mrl_pg_dsn_then_database_url(monkeypatch, tmp_path):
    monkeypatch.setenv("MRL_PG_HOME", str(tmp_path / "unused"))
    monkeypatch.setenv("DATABASE_URL", "postgresql://b@/db")
    monkeypatch.setenv("MRL_PG_DSN", "postgresql://a@/db")
    assert resolve_dsn() == "postgresql://a@/db"
    monkeypatch.delenv("MRL_PG_DSN")
    assert resolve_dsn() == "postgresql://b@/db"
    assert not (tmp_path / "unused").exists()  # no embedded server was started


def test_a_library_call_without_a_dsn_fails_and_starts_no_server(monkeypatch, tmp_path):
    from mrl_pg import DatabaseNotConfiguredError, connect, create_engine

    monkeypatch.setenv("MRL_PG_HOME", str(tmp_path / "unused"))
    monkeypatch.delenv("MRL_PG_DSN", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    for call in (resolve_dsn, connect, create_engine):
        with pytest.raises(DatabaseNotConfiguredError, match="set MRL_PG_DSN .*DATABASE_URL"):
            call()
    assert not (tmp_path / "unused").exists()


def test_mrl_pg_dsn_embedded_asks_for_the_embedded_server(home, monkeypatch):
    monkeypatch.setenv("MRL_PG_DSN", "embedded")
    dsn = resolve_dsn()
    assert EmbeddedServer(home).status().dsn == dsn
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_the_cli_keeps_the_zero_setup_default_of_the_embedded_server(home):
    result = CliRunner().invoke(cli, ["migrate"])
    assert result.exit_code == 0, result.output
    assert EmbeddedServer(home).status().running
