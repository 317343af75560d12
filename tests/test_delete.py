"""Deleting rows (by key, by filter, both, dry run) through the API and the CLI; deleted rows
never come back, and an updated embedding moves its row."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from psycopg import sql

import mrl_pg
from mrl_pg import TableConfig, delete_rows, install
from mrl_pg.cli._app import cli
from mrl_pg.errors import InvalidSearchError
from mrl_pg.ingest.load import ingest_arrays
from tests.fix_corpus import copy_rows

DIM = 32


@pytest.fixture
def table(conn, schema):
    config = TableConfig("docs", full_dim=DIM, prefix_dim=8, schema=schema)
    install(conn, config)
    rng = np.random.default_rng(9)
    vectors = rng.normal(size=(300, DIM)).astype(np.float32)
    copy_rows(conn, config, vectors, [f"d{i}" for i in range(300)],
              [{"bucket": i % 10, "lang": "en" if i % 2 else "de"} for i in range(300)])
    return config, vectors


def _count(conn, config) -> int:
    return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(config.table)).fetchone()[0]


def _keys(conn, config) -> set[str]:
    rows = conn.execute(sql.SQL("SELECT external_id FROM {}").format(config.table)).fetchall()
    return {r[0] for r in rows}


def test_delete_by_key_by_filter_and_both(conn, table):
    config, _ = table
    report = delete_rows(conn, config, external_ids=["d1", "d2", "missing"])
    assert (report.matched, report.deleted, report.dry_run) == (2, 2, False)
    assert not {"d1", "d2"} & _keys(conn, config)
    assert delete_rows(conn, config, filter={"bucket": 3}).deleted == 30
    # both: rows matching both conditions only
    both = delete_rows(conn, config, external_ids=["d4", "d5"], filter={"lang": "de"})
    assert both.deleted == 1 and "d4" not in _keys(conn, config) and "d5" in _keys(conn, config)
    assert _count(conn, config) == 300 - 2 - 30 - 1


def test_a_dry_run_counts_and_deletes_nothing(conn, table):
    config, _ = table
    report = delete_rows(conn, config, filter={"lang": "en"}, dry_run=True)
    assert (report.matched, report.deleted, report.dry_run) == (150, 0, True)
    assert _count(conn, config) == 300


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "name the rows to delete"),
    ({"filter": {}}, "empty filter matches every row"),
    ({"filter": ["a"]}, "filter must be a JSON object"),
    ({"filter": {"x": float("nan")}}, "cannot be encoded as JSON"),
    ({"external_ids": "d1"}, "a list of keys, not one string"),
    ({"external_ids": ["d1", ""]}, "non-empty string"),
    ({"external_ids": ["d1", 7]}, "non-empty string"),
    ({"external_ids": ["d\x001"]}, "NUL"),
])
def test_bad_arguments_delete_nothing(conn, table, kwargs, message):
    config, _ = table
    with pytest.raises(InvalidSearchError, match=message):
        delete_rows(conn, config, **kwargs)
    assert _count(conn, config) == 300


def test_deleted_rows_never_come_back_in_search(conn, table):
    config, vectors = table
    delete_rows(conn, config, external_ids=["d7"])
    for search in (mrl_pg.search, mrl_pg.exact_search):
        found = [r.external_id for r in search(conn, config, vectors[7], k=10)]
        assert "d7" not in found and len(found) == 10, search.__name__


def test_an_updated_embedding_moves_its_row(conn, table):
    config, vectors = table
    new = np.random.default_rng(1).normal(size=DIM).astype(np.float32)
    ingest_arrays(conn, config, new[None, :], external_ids=["d11"])
    prefix = conn.execute(sql.SQL(
        "SELECT embedding_prefix::text = (l2_normalize(subvector(%s::vector, 1, 8))"
        "::halfvec(8))::text FROM {} WHERE external_id = 'd11'").format(config.table),
        (new,)).fetchone()
    assert prefix == (True,)  # the generated prefix follows the new vector
    for search in (mrl_pg.search, mrl_pg.exact_search):
        assert search(conn, config, new, k=1)[0].external_id == "d11"
        assert "d11" not in [r.external_id for r in search(conn, config, vectors[11], k=3)]


def test_the_cli_deletes_and_dry_runs(conn, table, schema, schema_dsn, tmp_path):
    config, _ = table
    args = ["--dsn", schema_dsn, "--table", "docs", "--schema", schema, "--dim", str(DIM),
            "--prefix-dim", "8"]
    runner = CliRunner()
    dry = runner.invoke(cli, ["delete", "--filter", '{"bucket": 4}', "--dry-run", *args])
    assert dry.exit_code == 0 and "30 rows match; nothing deleted" in dry.output
    assert _count(conn, config) == 300
    ids = tmp_path / "ids.txt"
    ids.write_text("d20\n\nd21\n")
    done = runner.invoke(cli, ["delete", "--id", "d22", "--ids-file", str(ids), *args])
    assert done.exit_code == 0 and "deleted 3 rows" in done.output, done.output
    none = runner.invoke(cli, ["delete", *args])
    assert none.exit_code == 2 and "name the rows to delete" in none.output
    empty = runner.invoke(cli, ["delete", "--filter", "{}", *args])
    assert empty.exit_code == 1 and "refusing to delete them all" in empty.output
    assert "Traceback" not in empty.output
    assert _count(conn, config) == 297


def test_numpy_string_keys_are_stored_as_plain_strings(conn, table):
    """Keys drawn from a numpy array (np.str_) once crashed the ingest check."""
    config, _ = table
    keys = list(np.array(["d1", "np-new"]))
    vectors = np.ones((2, DIM), dtype=np.float32)
    report = ingest_arrays(conn, config, vectors, external_ids=keys)
    assert (report.inserted, report.updated) == (1, 1)
    assert {"d1", "np-new"} <= _keys(conn, config)
