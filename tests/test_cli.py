"""The command line: help everywhere, search output, and one-line errors."""

from __future__ import annotations

import json

import click
import numpy as np
import pytest
from click.testing import CliRunner

from mrl_pg import TableConfig, install
from mrl_pg.cli._app import cli
from tests.fix_corpus import copy_rows


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


@pytest.mark.parametrize("path", [p for p, _ in _commands(cli)], ids=" ".join)
def test_every_command_has_help_text(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0
    command = dict(_commands(cli))[path]
    assert command.help and len(command.help.strip()) > 20
    for param in command.params:
        if isinstance(param, click.Option) and param.name not in ("help",):
            assert param.help, f"{' '.join(path)} {param.opts[0]} has no help"


@pytest.fixture
def small_table(conn, schema, schema_dsn, tmp_path):
    config = TableConfig("docs", full_dim=64, prefix_dim=16, schema=schema)
    install(conn, config)
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(200, 64)).astype(np.float32)
    copy_rows(conn, config, vectors, [f"d{i}" for i in range(200)],
              [{"even": i % 2 == 0} for i in range(200)],
              [f"content number {i}" for i in range(200)])
    np.save(tmp_path / "q.npy", vectors[17])
    args = ["--dsn", schema_dsn, "--table", "docs", "--schema", schema,
            "--dim", "64", "--prefix-dim", "16"]
    return args, tmp_path / "q.npy"


def test_search_with_a_vector_file_prints_a_table(small_table):
    args, npy = small_table
    result = CliRunner().invoke(cli, ["search", "--vector", str(npy), "-k", "3", *args])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["#", "distance", "external_id", "content", "metadata"]
    assert lines[1].split()[:3] == ["1", "0.0000", "d17"]
    assert len(lines) == 4


def test_search_json_exact_and_filtered(small_table):
    args, npy = small_table
    result = CliRunner().invoke(cli, ["search", "--vector", str(npy), "--json", "--exact",
                                      "--filter", '{"even": true}', "-k", "5", *args])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 5 and all(r["metadata"]["even"] for r in rows)
    assert [r["distance"] for r in rows] == sorted(r["distance"] for r in rows)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--filter", "[1]"], "--filter must be a JSON object"),
        (["--filter", "{bad"], "--filter is not valid JSON"),
        (["-k", "0"], "k must be between 1 and 1000"),
        (["--table", "Bad Name"], "invalid table name"),
    ],
)
def test_search_errors_are_one_line_without_traceback(small_table, extra, message):
    args, npy = small_table
    result = CliRunner().invoke(cli, ["search", "--vector", str(npy), *args, *extra])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert result.output.count("\n") == 1


def test_search_by_text_embeds_through_the_openai_compatible_server(
    small_table, monkeypatch, openai_server
):
    args, _ = small_table
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    result = CliRunner().invoke(cli, ["search", "what is this?", "-k", "2", *args])
    assert result.exit_code == 0, result.output
    assert openai_server.requests[-1].inputs == ["what is this?"]
    assert openai_server.requests[-1].dimensions == 64
    assert len(result.stdout.splitlines()) == 3


def test_search_needs_text_or_a_vector(small_table):
    args, _ = small_table
    result = CliRunner().invoke(cli, ["search", *args])
    assert result.exit_code == 2 and "give either TEXT or --vector" in result.output


def test_an_unreachable_server_is_one_line_not_a_traceback(tmp_path):
    np.save(tmp_path / "q.npy", np.ones(64, dtype=np.float32))
    result = CliRunner().invoke(cli, ["search", "--vector", str(tmp_path / "q.npy"),
                                      "--dsn", "postgresql://nobody@127.0.0.1:1/none"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: could not connect to PostgreSQL")
    assert "Traceback" not in result.output


def test_an_unreadable_vector_file_is_named(small_table, tmp_path):
    args, _ = small_table
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"")
    result = CliRunner().invoke(cli, ["search", "--vector", str(bad), *args])
    assert result.exit_code == 1 and f"{str(bad)!r} is empty" in result.output
