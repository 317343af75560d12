"""The README's examples run as written, in order, against a migrated database."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg

from mrl_pg.migrate import upgrade

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_and_sql_examples_run(fresh_database, monkeypatch, capsys):
    monkeypatch.setenv("MRL_PG_DSN", fresh_database)
    upgrade(fresh_database)
    python = _blocks("python")
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
