"""Bad input on every way in: one clear line naming the problem, and the table unchanged.

One parametrized test per entry point (psycopg API, SQLAlchemy, SQL function, CLI ingest,
CLI search, CLI tune/bench/delete). Each case checks the message, that it is one line with
no traceback, and that the table's row count and content checksum are what they were.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql
from sqlalchemy.orm import Session

import mrl_pg
from mrl_pg import TableConfig, install
from mrl_pg.cli._app import cli
from mrl_pg.db import create_engine
from mrl_pg.errors import MrlPgError
from tests.fix_corpus import copy_rows
from tests.test_sqlalchemy import make_model

DIM, PREFIX = 16, 4
GOOD = [0.25] * DIM


@pytest.fixture
def table(conn, schema):
    config = TableConfig("docs", full_dim=DIM, prefix_dim=PREFIX, schema=schema)
    install(conn, config)
    rng = np.random.default_rng(4)
    copy_rows(conn, config, rng.normal(size=(50, DIM)).astype(np.float32),
              [f"d{i}" for i in range(50)], [{"lang": "en"}] * 50)
    return config


def _checksum(conn, config) -> tuple[Any, ...]:
    return conn.execute(sql.SQL(
        "SELECT count(*), md5(string_agg(concat_ws('|', external_id, content, metadata::text, "
        "embedding::text), ',' ORDER BY id)) FROM {}").format(config.table)).fetchone()


def _one_line(message: str) -> None:
    assert message.strip() and "\n" not in message.strip(), message
    assert "Traceback" not in message


# --- psycopg API ---------------------------------------------------------------------------

API_CASES = [
    ("wrong dimension", {"query": [0.1] * (DIM + 1)}, "dimensions"),
    ("NaN", {"query": [float("nan")] + GOOD[1:]}, "NaN"),
    ("infinity", {"query": [float("inf")] + GOOD[1:]}, "infinity"),
    ("zero vector", {"query": [0.0] * DIM}, "zero"),
    ("zero prefix", {"query": [0.0] * PREFIX + GOOD[PREFIX:]}, "are all zero"),
    ("non-numeric element", {"query": ["a"] + GOOD[1:]}, "number"),
    ("empty array", {"query": []}, "dimensions"),
    ("2-D array", {"query": [GOOD, GOOD]}, "must be a flat list of numbers"),
    ("k = 0", {"k": 0}, "k must be between 1 and 1000"),
    ("k = -1", {"k": -1}, "k must be between 1 and 1000"),
    ("k = 10,001", {"k": 10_001}, "k must be between 1 and 1000"),
    ("k a float", {"k": 1.5}, "k must be an integer"),
    ("oversample 0", {"oversample": 0}, "oversample must be at least 1"),
    ("filter not an object", {"filter": ["lang", "en"]}, "filter must be a JSON object"),
    ("filter value JSON cannot encode", {"filter": {"x": {1, 2}}}, "cannot be encoded as JSON"),
    ("filter value NaN", {"filter": {"x": float("nan")}}, "cannot be encoded as JSON"),
    ("ef_search 0", {"ef_search": 0}, "ef_search must be between 1 and 1000"),
]


@pytest.mark.parametrize(("case", "kwargs", "message"), API_CASES, ids=[c[0] for c in API_CASES])
def test_the_psycopg_api_names_the_problem(conn, table, case, kwargs, message):
    before = _checksum(conn, table)
    args = {"query": GOOD} | kwargs
    with pytest.raises(MrlPgError) as caught:
        mrl_pg.search(conn, table, args.pop("query"), **args)
    assert message in str(caught.value), str(caught.value)
    _one_line(str(caught.value))
    assert _checksum(conn, table) == before


# --- SQLAlchemy ------------------------------------------------------------------------------

ORM_CASES = [
    ("wrong dimension", {"query": [0.1] * 3}, "dimensions"),
    ("NaN", {"query": [float("nan")] + GOOD[1:]}, "NaN"),
    ("zero prefix", {"query": [0.0] * PREFIX + GOOD[PREFIX:]}, "are all zero"),
    ("k = 0", {"k": 0}, "k must be between 1 and 1000"),
    ("oversample 0", {"oversample": 0}, "oversample must be at least 1"),
    ("negative offset", {"offset": -1}, "offset must be a non-negative integer"),
    ("offset past 1000", {"offset": 995}, "offset + k must be at most 1000"),
]


@pytest.mark.parametrize(("case", "kwargs", "message"), ORM_CASES, ids=[c[0] for c in ORM_CASES])
def test_the_orm_names_the_problem(conn, table, schema_dsn, case, kwargs, message):
    before = _checksum(conn, table)
    _, model = make_model(table)
    engine = create_engine(schema_dsn)
    args = {"query": GOOD} | kwargs
    try:
        with Session(engine) as session, pytest.raises(MrlPgError) as caught:
            mrl_pg.sqlalchemy.search(session, model, args.pop("query"), **args)
    finally:
        engine.dispose()
    assert message in str(caught.value), str(caught.value)
    _one_line(str(caught.value))
    assert _checksum(conn, table) == before


# --- SQL function ----------------------------------------------------------------------------

FUNCTION_CASES = [
    ("wrong dimension", "%s::vector, 10", [str([0.1] * 3)], "has 3 dimensions, expected 16"),
    ("NULL vector", "NULL::vector, 10", [], "query_embedding must not be NULL"),
    ("zero prefix", "%s::vector, 10", [str([0.0] * PREFIX + GOOD[PREFIX:])], "zero prefix"),
    ("match_count 0", "%s::vector, 0", [str(GOOD)], "match_count must be between 1 and 1000"),
    ("match_count 1001", "%s::vector, 1001", [str(GOOD)], "match_count must be between 1"),
    ("oversample 0", "%s::vector, 10, 0", [str(GOOD)], "oversample must be at least 1"),
    ("filter an array", "%s::vector, 10, 8, '[1]'", [str(GOOD)], "filter must be a JSON object"),
]


@pytest.mark.parametrize(("case", "call", "params", "message"), FUNCTION_CASES,
                         ids=[c[0] for c in FUNCTION_CASES])
def test_the_sql_function_names_the_argument(conn, table, case, call, params, message):
    before = _checksum(conn, table)
    function = sql.Identifier(table.schema, table.search_function_name).as_string(conn)
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(f"SELECT * FROM {function}({call})", params)  # noqa: S608 - fixed cases
    assert message in caught.value.diag.message_primary, caught.value.diag.message_primary
    assert _checksum(conn, table) == before


# --- CLI ingest ------------------------------------------------------------------------------

def _row(key: str, **extra: Any) -> str:
    return json.dumps({"external_id": key, "content": "c", "embedding": GOOD} | extra)


INGEST_CASES: list[tuple[str, str, bytes | None, str]] = [
    ("a line that is not JSON", "bad.jsonl", (_row("n1") + "\n{not json\n").encode(),
     "bad.jsonl:2"),
    ("a truncated last line", "cut.jsonl", (_row("n1") + "\n" + _row("n2")[:30]).encode(),
     "cut.jsonl:2"),
    ("a CSV with a missing column", "missing.csv",
     b"external_id,content,embedding\nn1,c\n", "missing.csv"),
    ("a CSV with an extra column", "extra.csv",
     ("external_id,content,embedding\nn1,c," + json.dumps(json.dumps(GOOD))[1:-1]
      .replace(",", ";") + ",surplus\n").encode(), "extra.csv"),
    ("invalid UTF-8", "latin.jsonl", _row("n1").encode() + b"\n" + b'{"external_id": "\xe9"}\n',
     "UTF-8"),
    ("duplicate keys in one batch", "dup.jsonl",
     (_row("n1") + "\n" + _row("n1") + "\n").encode(), "n1"),
    ("a wrong dimension", "dim.jsonl", json.dumps(
        {"external_id": "n1", "embedding": [0.1] * 3}).encode() + b"\n", "dimensions"),
    ("a NaN in an embedding", "nan.jsonl",
     b'{"external_id": "n1", "embedding": [NaN' + b", 0.1" * (DIM - 1) + b"]}\n", "NaN"),
    ("metadata that is not an object", "meta.jsonl",
     _row("n1", metadata=[1]).encode() + b"\n", "metadata"),
    ("an empty file", "empty.jsonl", b"", "empty.jsonl"),
    ("a file that does not exist", "absent.jsonl", None, "absent.jsonl"),
    ("a directory", "folder.jsonl", b"DIR", "folder.jsonl"),
]


@pytest.mark.parametrize(("case", "name", "content", "message"), INGEST_CASES,
                         ids=[c[0] for c in INGEST_CASES])
def test_cli_ingest_names_the_problem_and_writes_nothing(
    conn, table, schema, schema_dsn, tmp_path, monkeypatch, case, name, content, message
):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    before = _checksum(conn, table)
    path: Path = tmp_path / name
    if content == b"DIR":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    result = CliRunner().invoke(cli, [
        "ingest", str(path), "--dsn", schema_dsn, "--table", "docs", "--schema", schema,
        "--dim", str(DIM), "--prefix-dim", str(PREFIX)])
    assert result.exit_code != 0, result.output
    assert message in result.output, result.output
    _one_line(result.output.strip().splitlines()[-1])
    assert "Traceback" not in result.output
    assert _checksum(conn, table) == before


def test_cli_ingest_reads_a_bom_and_a_missing_embedding_needs_an_embedder(
    conn, table, schema, schema_dsn, tmp_path, monkeypatch
):
    """A UTF-8 BOM is not an error; a record without an embedding and no API key is."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    args = ["--dsn", schema_dsn, "--table", "docs", "--schema", schema, "--dim", str(DIM),
            "--prefix-dim", str(PREFIX)]
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + _row("bom-1").encode() + b"\n")
    assert CliRunner().invoke(cli, ["ingest", str(bom), *args]).exit_code == 0
    before = _checksum(conn, table)
    bare = tmp_path / "bare.jsonl"
    bare.write_text(json.dumps({"external_id": "n9", "content": "needs embedding"}) + "\n")
    result = CliRunner().invoke(cli, ["ingest", str(bare), *args])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "OPENAI_API_KEY" in result.output
    assert _checksum(conn, table) == before


# --- CLI search, tune, bench, delete ---------------------------------------------------------

def _cli_cases(tmp_path: Path) -> list[tuple[str, list[str], str]]:
    np.save(tmp_path / "wrong.npy", np.ones(3, dtype=np.float32))
    np.save(tmp_path / "good.npy", np.ones(DIM, dtype=np.float32))
    (tmp_path / "text.npy").write_text("1,2,3")
    good = str(tmp_path / "good.npy")
    return [
        ("search: k 0", ["search", "--vector", good, "-k", "0"], "k must be between"),
        ("search: filter not JSON", ["search", "--vector", good, "--filter", "{lang"],
         "--filter is not valid JSON"),
        ("search: filter an array", ["search", "--vector", good, "--filter", "[1]"],
         "--filter must be a JSON object"),
        ("search: vector of the wrong width", ["search", "--vector",
                                               str(tmp_path / "wrong.npy")], "dimensions"),
        ("search: vector file that is text", ["search", "--vector", str(tmp_path / "text.npy")],
         "is not a .npy file"),
        ("search: oversample 0", ["search", "--vector", good, "--oversample", "0"],
         "oversample must be at least 1"),
        ("tune: target recall 1.5", ["tune", "--target-recall", "1.5"], "target recall"),
        ("tune: oversample 0", ["tune", "--oversample", "0"], "positive integers"),
        ("tune: queries 0", ["tune", "--queries", "0"], "queries must be at least 1"),
        ("delete: empty filter", ["delete", "--filter", "{}"], "refusing to delete them all"),
        ("delete: nothing named", ["delete"], "name the rows to delete"),
    ]


HOSTILE_NAMES = ['docs"', "docs; DROP TABLE docs", "docs --", "do\x00cs", "d\u043ecs"]
# Mixed case and keywords are names users' tables have (Prisma, EF): the CLI looks such a
# table up (quoted) and says it does not exist; mrl_pg's own tables keep lower-case names.
USERS_NAMES = ["Docs", "select"]


@pytest.mark.parametrize("name", USERS_NAMES)
def test_a_mixed_case_or_keyword_table_name_is_looked_up_quoted(conn, table, schema_dsn, name,
                                                               tmp_path):
    before = _checksum(conn, table)
    np.save(tmp_path / "q.npy", np.ones(DIM, dtype=np.float32))
    result = CliRunner().invoke(cli, ["search", "--vector", str(tmp_path / "q.npy"), "--dsn",
                                      schema_dsn, "--table", name])
    assert result.exit_code == 1 and f"table {name} does not exist" in result.output
    _one_line(result.output)
    with pytest.raises(MrlPgError, match="invalid table name"):
        TableConfig(name, full_dim=DIM, prefix_dim=PREFIX)
    assert _checksum(conn, table) == before


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_hostile_table_name_is_refused_before_any_sql(conn, table, schema_dsn, name, tmp_path):
    before = _checksum(conn, table)
    np.save(tmp_path / "q.npy", np.ones(DIM, dtype=np.float32))
    for args in (["search", "--vector", str(tmp_path / "q.npy")], ["delete", "--id", "d1"],
                 ["tune", "--queries", "5"]):
        result = CliRunner().invoke(cli, [*args, "--dsn", schema_dsn, "--table", name,
                                          "--dim", str(DIM), "--prefix-dim", str(PREFIX)])
        assert result.exit_code == 1 and "invalid table name" in result.output, result.output
        _one_line(result.output)
    with pytest.raises(MrlPgError, match="invalid table name"):
        TableConfig(name, full_dim=DIM, prefix_dim=PREFIX)
    assert _checksum(conn, table) == before


def test_a_hostile_metadata_key_is_data_not_sql(conn, table):
    before = _checksum(conn, table)
    for key in ["lang'; DROP TABLE docs; --", 'a"b', "k\u0430y"]:
        assert mrl_pg.search(conn, table, GOOD, k=5, filter={key: "en"}) == []
        assert mrl_pg.delete_rows(conn, table, filter={key: "en"}).deleted == 0
    assert _checksum(conn, table) == before


def test_the_cli_names_the_problem_for_search_tune_and_delete(
    conn, table, schema, schema_dsn, tmp_path
):
    before = _checksum(conn, table)
    table_args = ["--dsn", schema_dsn, "--table", "docs", "--schema", schema, "--dim",
                  str(DIM), "--prefix-dim", str(PREFIX)]
    cases = _cli_cases(tmp_path)
    for case, args, message in cases:
        result = CliRunner().invoke(cli, [*args, *table_args])
        assert result.exit_code != 0, (case, result.output)
        assert message in result.output, (case, result.output)
        assert "Traceback" not in result.output, case
    bench = CliRunner().invoke(cli, ["bench", "--dsn", schema_dsn, "--ef-search", "2000"])
    assert bench.exit_code != 0 and "at most 1000" in bench.output, bench.output
    assert _checksum(conn, table) == before


def test_the_matrix_has_at_least_forty_cases(tmp_path):
    total = (len(API_CASES) + len(ORM_CASES) + len(FUNCTION_CASES) + len(INGEST_CASES) + 2
             + len(_cli_cases(tmp_path)) + 1 + len(EMBEDDING_CASES) + len(HOSTILE_NAMES) + 3)
    assert total >= 40, total


# --- the embedding service, through an ingest ------------------------------------------------

def _slow(_request: Any) -> None:
    time.sleep(1.5)


EMBEDDING_CASES = [
    ("wrong dimension", lambda s: s.return_dimensions(DIM - 1), "dimensions"),
    ("HTTP 500", lambda s: s.fail_always(status=500), "HTTP 500"),
    ("a 429 storm", lambda s: s.fail_always(status=429), "max_batch_tokens"),
    ("a timeout", lambda s: s.on_request(_slow), "did not answer in time"),
]


@pytest.mark.parametrize(("case", "breaks", "message"), EMBEDDING_CASES,
                         ids=[c[0] for c in EMBEDDING_CASES])
def test_an_embedding_service_failure_is_named_and_writes_nothing(
    conn, table, openai_server, case, breaks, message
):
    from mrl_pg import EmbeddingClient, ingest_records
    from tests.fix_openai import TEST_API_KEY

    before = _checksum(conn, table)
    breaks(openai_server)
    client = EmbeddingClient(base_url=openai_server.base_url, api_key=TEST_API_KEY,
                             dimensions=DIM, max_retries=1, timeout=0.5)
    records = [{"external_id": f"e{i}", "content": f"text {i}"} for i in range(3)]
    try:
        with pytest.raises(MrlPgError) as caught:
            ingest_records(conn, table, records, embedder=client)
    finally:
        openai_server.on_request(None)
        client.close()
    assert message in str(caught.value), str(caught.value)
    _one_line(str(caught.value))
    assert _checksum(conn, table) == before
