"""The CLI speaks in flags, repeats harmlessly, shows rows whole and says what its figures
do not promise."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import psycopg
from click.testing import CliRunner, Result
from psycopg import sql

from mrl_pg.bench.synthetic import make_corpus
from mrl_pg.cli._app import cli
from mrl_pg.errors import InvalidConfigError
from mrl_pg.schema.catalog import table_config

DIM = 16


def _invoke(schema_dsn: str, schema: str, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--dsn", schema_dsn, "--schema", schema])


def _one_line_error(result: Result, message: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1, result.output
    assert message in result.output, result.output


def _fill(conn: psycopg.Connection[Any], table: str, rows: int = 200) -> None:
    vectors = make_corpus(rows, DIM, seed=4).embeddings
    with conn.cursor() as cur:
        cur.executemany(sql.SQL("INSERT INTO {} (n, embedding) VALUES (%s, %s)").format(
            sql.Identifier(table)), list(enumerate(vectors)))


def test_adopt_errors_name_the_flags_not_python_keywords(conn, schema, schema_dsn):
    conn.execute(f"CREATE TABLE keyless (n int, ext text NOT NULL UNIQUE, embedding vector({DIM}))")
    _one_line_error(_invoke(schema_dsn, schema, "adopt", "keyless", "--prefix-dim", "4"),
                    "has no primary key: name the columns of a unique constraint as "
                    "--key COL[,COL...]")
    conn.execute(f"CREATE TABLE clash (n int PRIMARY KEY, distance real, "
                 f"embedding vector({DIM}))")
    clash = _invoke(schema_dsn, schema, "adopt", "clash", "--prefix-dim", "4")
    _one_line_error(clash, "pass --columns COL[,COL...] without it")
    assert "=(" not in clash.output
    # Python callers still read their own keywords.
    try:
        table_config(conn, "keyless", prefix_dim=4)
    except InvalidConfigError as exc:
        assert "key=(...)" in str(exc)
    else:
        raise AssertionError("a keyless table was described")
    adopted = _invoke(schema_dsn, schema, "adopt", "keyless", "--prefix-dim", "4",
                      "--key", "ext")
    assert adopted.exit_code == 0, adopted.output


def test_a_second_release_exits_0_saying_nothing_was_adopted(conn, schema, schema_dsn):
    conn.execute(f"CREATE TABLE items (n int PRIMARY KEY, embedding vector({DIM}))")
    _fill(conn, "items")
    assert _invoke(schema_dsn, schema, "adopt", "items", "--prefix-dim", "4").exit_code == 0
    first = _invoke(schema_dsn, schema, "adopt", "--release", "items")
    assert first.exit_code == 0, first.output
    assert "function mrl_search_items dropped, index items_embedding_prefix_hnsw dropped" \
        in first.stdout
    second = _invoke(schema_dsn, schema, "adopt", "--release", "items")
    assert second.exit_code == 0, second.output
    assert "nothing adopted" in second.stdout and "nothing to release" in second.stdout
    conn.execute(f"CREATE TABLE never (n int PRIMARY KEY, embedding vector({DIM}))")
    never = _invoke(schema_dsn, schema, "adopt", "--release", "never")
    assert never.exit_code == 0, never.output
    assert never.stdout == second.stdout.replace("items", "never")
    _one_line_error(_invoke(schema_dsn, schema, "adopt", "--release", "nowhere"),
                    f"table {schema}.nowhere does not exist")
    assert conn.execute("SELECT count(*) FROM items").fetchone() == (200,)


def test_the_table_view_shows_every_returned_column_with_uuids_whole(
    conn, schema, schema_dsn, tmp_path
):
    conn.execute(f"CREATE TABLE goods (id uuid PRIMARY KEY, sku text, price numeric(8, 2), "
                 f"title text, n int, embedding vector({DIM}))")
    vectors = make_corpus(50, DIM, seed=6).embeddings
    ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(50)]
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO goods VALUES (%s, %s, %s, %s, %s, %s)",
                        [(ids[i], f"SKU-{i}", i + 0.5, "a long title " * 10, i, v)
                         for i, v in enumerate(vectors)])
    assert _invoke(schema_dsn, schema, "adopt", "goods", "--prefix-dim", "4").exit_code == 0
    np.save(tmp_path / "q.npy", vectors[7])
    result = _invoke(schema_dsn, schema, "search", "--vector", str(tmp_path / "q.npy"),
                     "--table", "goods", "-k", "2")
    assert result.exit_code == 0, result.output
    header, first, _ = result.stdout.splitlines()
    assert header.split() == ["#", "distance", "id", "sku", "price", "title", "n"]
    cells = re.split(r"\s{2,}", first)
    assert cells[:5] == ["1", "0.0000", ids[7], "SKU-7", "7.50"], first
    assert cells[5].endswith("…") and len(cells[5]) == 60  # text is shortened, not values
    assert cells[6] == "7"


def test_tune_on_stored_rows_prints_the_caveat_and_not_with_a_queries_file(
    conn, schema, schema_dsn, tmp_path
):
    conn.execute(f"CREATE TABLE items (n int PRIMARY KEY, embedding vector({DIM}))")
    _fill(conn, "items", rows=400)
    conn.execute("ANALYZE items")
    assert _invoke(schema_dsn, schema, "adopt", "items", "--prefix-dim", "4").exit_code == 0
    base = ["tune", "--table", "items", "--rounds", "1", "--oversample", "4",
            "--ef-search", "40", "--target-recall", "0.1", "--dry-run"]
    # At this size the plan may leave the index (and the command fail): the caveat is
    # printed with the report either way.
    stored = _invoke(schema_dsn, schema, *base, "--queries", "10")
    assert "| 4 | 40 |" in stored.stdout, stored.output
    assert "caveat: the queries were rows the table stores" in stored.stdout
    assert "runs optimistic" in stored.stdout and "--queries-file" in stored.stdout
    as_json = _invoke(schema_dsn, schema, *base, "--queries", "10", "--json")
    assert json.loads(as_json.stdout)["caveat"].startswith("caveat: the queries were rows")
    np.save(tmp_path / "queries.npy", np.random.default_rng(1).standard_normal(
        (10, DIM)).astype(np.float32))
    given = _invoke(schema_dsn, schema, *base, "--queries-file", str(tmp_path / "queries.npy"))
    assert "| 4 | 40 |" in given.stdout, given.output
    assert "caveat" not in given.stdout
