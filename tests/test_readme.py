"""The README's examples run as written, in order, against a migrated database."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import psycopg

from mrl_pg.migrate import upgrade

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def _adopt_blocks(language: str) -> list[str]:
    """The "Adopt your existing table" section's examples, in order."""
    section = README.read_text().split("## Adopt your existing table", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def test_readme_python_and_sql_examples_run(fresh_database, monkeypatch, capsys):
    monkeypatch.setenv("MRL_PG_DSN", fresh_database)
    upgrade(fresh_database)
    python = [b for b in _blocks("python") if b not in _adopt_blocks("python")]
    assert len(python) == 2
    namespace: dict[str, object] = {}
    for block in python:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
    out = capsys.readouterr().out
    assert "('doc-42', 0.0)" in out  # Python: the vector finds itself first
    assert "doc-42 0.0" in out  # ORM: the same
    # The other sql block shows the shape of the statement, with $placeholders.
    (statement,) = [b for b in _blocks("sql") if "mrl_search(" in b]
    with psycopg.connect(fresh_database) as conn:
        rows = conn.execute(statement).fetchall()
    assert len(rows) == 5 and rows[0][0] == "doc-42"


def test_readme_adopt_section_runs_as_written(fresh_database, monkeypatch, capsys):
    """An existing table, adopted and searched through every example of the section."""
    monkeypatch.setenv("MRL_PG_DSN", fresh_database)
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")  # the user's table needs it
    python = _adopt_blocks("python")
    assert python and python[0].startswith("# adopt")
    # A module of its own, as a user's file would be: the ORM resolves annotations in it.
    module = types.ModuleType("readme_adopt")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for block in python:
        exec(compile(block, str(README), "exec"), module.__dict__)  # noqa: S102
    out = capsys.readouterr().out
    assert "index articles_embedding_prefix_hnsw: built concurrently on 2,000 rows" in out
    assert "(8, 'article 7', 7)" in out
    orm = [line for line in out.splitlines() if line.startswith("orm ")]
    assert orm[0] == "orm 8 article 7 0.0" and len(orm) == 3
    (statement,) = _adopt_blocks("sql")
    with psycopg.connect(fresh_database) as conn:
        rows = conn.execute(statement).fetchall()
    assert rows[0] == (8, "article 7", 7) and len(rows) == 3
    assert all(author == 7 for _, _, author in rows)
