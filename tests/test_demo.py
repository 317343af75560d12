"""The demo, end to end on small sizes: synthetic comparison and the text mode."""

from __future__ import annotations

import re

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

from mrl_pg.cli._app import cli
from mrl_pg.demo.text import TEXT_DEMO_TABLE

pytestmark = pytest.mark.slow  # the demo end to end (CI also runs it from the wheel)


def test_demo_prints_exact_and_adaptive_side_by_side(fresh_database):
    result = CliRunner().invoke(
        cli, ["demo", "--dsn", fresh_database, "--rows", "3000", "--queries", "30"]
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    recalls = re.search(r"recall@10\s+(\S+)\s+(\S+)\s+(\S+)", out)
    assert recalls is not None, out
    exact, adaptive, prefix_only = (float(x) for x in recalls.groups())
    assert exact == 1.0  # scored against numpy's brute force, not against exact search itself
    assert adaptive >= 0.95
    assert prefix_only <= adaptive
    for label in ("true 10 nearest rows, found by numpy over all 3,000 vectors", "mean latency",
                  "p95 latency", "prefix HNSW index:", "storage saved", "time saved per query"):
        assert label in out
    with psycopg.connect(fresh_database) as conn:
        assert conn.execute("SELECT count(*) FROM mrl_demo").fetchone() == (3000,)
        # the migrations ran, and the user's default table was left alone (empty)
        assert conn.execute("SELECT count(*) FROM mrl_documents").fetchone() == (0,)


def test_text_demo_without_a_key_says_how_to_provide_one(monkeypatch, fresh_database):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    result = CliRunner().invoke(cli, ["demo", "--text", "--dsn", fresh_database])
    assert result.exit_code == 1
    assert "OPENAI_API_KEY" in result.output and "OPENAI_BASE_URL" in result.output
    assert "Traceback" not in result.output


def test_text_demo_embeds_the_corpus_through_an_openai_compatible_server(
    monkeypatch, fresh_database, openai_server
):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    result = CliRunner().invoke(
        cli, ["demo", "--text", "--dsn", fresh_database, "--dimensions", "768"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\nQ: ") == 10
    assert "loaded 150 passages" in result.stdout
    assert all(r.dimensions == 768 for r in openai_server.requests)
    with psycopg.connect(fresh_database) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*), max(vector_dims(embedding)) FROM {}").format(
                sql.Identifier(TEXT_DEMO_TABLE))
        ).fetchone()
    assert row == (150, 768)
