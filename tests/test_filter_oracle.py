"""Every operator of the filter language against an oracle that is not our SQL: the rows'
values are kept in Python, each filter is a hand-written Python predicate, and distances come
from numpy. Checked through psycopg search (sync, async), exact_search, the adopted table's
SQL function (JSON, PostgREST-style) and ``mrl-pg search --where``."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import Jsonb

from mrl_pg.cli import cli
from mrl_pg.db import configure_connection
from mrl_pg.errors import InvalidSearchError
from mrl_pg.index.adopt import adopt_table
from mrl_pg.psycopg._search import exact_search, exact_search_async, search, search_async
from mrl_pg.schema.catalog import table_config

ROWS, DIM, PREFIX = 300, 16, 8
CATEGORIES = ["books", "toys", "food", None]
COLOURS = ["red", "green", "blue"]


@dataclass(frozen=True)
class Item:
    id: int
    score: int | None
    price: float
    category: str | None
    tags: list[str]
    attrs: dict[str, Any]


def _items() -> tuple[list[Item], np.ndarray]:
    rng = np.random.default_rng(16)
    vectors = rng.normal(size=(ROWS, DIM)).astype(np.float32)
    items = [Item(
        id=i,
        score=None if i % 11 == 0 else i % 5,
        price=round(float(rng.uniform(0, 5)), 2),
        category=CATEGORIES[i % 4],
        tags=[COLOURS[i % 3]] + ([COLOURS[(i + 1) % 3]] if i % 2 else []),
        attrs={"lang": "en" if i % 3 else "fr", "n": i % 7},
    ) for i in range(ROWS)]
    return items, vectors


ITEMS, VECTORS = _items()
QUERY = np.random.default_rng(99).normal(size=DIM).astype(np.float32)


def _distance(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    v = vectors.astype(np.float64)
    q = query.astype(np.float64)
    return 1 - (v @ q) / (np.linalg.norm(v, axis=1) * np.linalg.norm(q))


DISTANCES = _distance(VECTORS, QUERY)


def _ne(a: Any, b: Any) -> bool:
    return a is not None and a != b


# (filter, Python predicate): NULL never satisfies a comparison, as in SQL.
CASES: list[tuple[dict[str, Any], Callable[[Item], bool]]] = [
    ({"score": 2}, lambda r: r.score == 2),
    ({"score": {"eq": 2}}, lambda r: r.score == 2),
    ({"category": "books"}, lambda r: r.category == "books"),
    ({"score": {"ne": 2}}, lambda r: _ne(r.score, 2)),
    ({"score": {"lt": 2}}, lambda r: r.score is not None and r.score < 2),
    ({"score": {"lte": 2}}, lambda r: r.score is not None and r.score <= 2),
    ({"score": {"gt": 2}}, lambda r: r.score is not None and r.score > 2),
    ({"score": {"gte": 2}}, lambda r: r.score is not None and r.score >= 2),
    ({"price": {"gt": 1.2, "lte": 3.5}}, lambda r: 1.2 < r.price <= 3.5),
    ({"score": {"gte": 2.5}}, lambda r: r.score is not None and r.score >= 2.5),
    ({"score": {"gt": 2.5}}, lambda r: r.score is not None and r.score > 2.5),
    ({"score": {"lt": 2.5}}, lambda r: r.score is not None and r.score < 2.5),
    ({"score": {"lte": 2.5}}, lambda r: r.score is not None and r.score <= 2.5),
    ({"score": {"eq": 1.5}}, lambda r: False),
    ({"score": {"ne": 1.5}}, lambda r: r.score is not None),
    ({"category": ["books", "toys"]}, lambda r: r.category in ("books", "toys")),
    ({"score": {"in": [1, 3]}}, lambda r: r.score in (1, 3)),
    ({"score": {"in": [1.5, 3]}}, lambda r: r.score == 3),
    ({"score": {"not_in": [1, 3]}}, lambda r: r.score is not None and r.score not in (1, 3)),
    ({"category": {"not_in": ["books"]}},
     lambda r: r.category is not None and r.category != "books"),
    ({"score": {"not_in": [0.5, 4]}}, lambda r: r.score is not None and r.score != 4),
    ({"category": None}, lambda r: r.category is None),
    ({"category": {"is_null": True}}, lambda r: r.category is None),
    ({"category": {"is_null": False}}, lambda r: r.category is not None),
    ({"tags": {"contains": ["red"]}}, lambda r: "red" in r.tags),
    ({"tags": {"contains": ["red", "green"]}}, lambda r: {"red", "green"} <= set(r.tags)),
    ({"attrs": {"contains": {"lang": "fr"}}}, lambda r: r.attrs["lang"] == "fr"),
    ({"score": {"gte": 1, "lt": 4}, "category": {"in": ["food", "toys"]},
      "tags": {"contains": ["blue"]}},
     lambda r: r.score is not None and 1 <= r.score < 4 and r.category in ("food", "toys")
     and "blue" in r.tags),
]
IDS = [json.dumps(f, sort_keys=True) for f, _ in CASES]


def _expected(predicate: Callable[[Item], bool]) -> list[int]:
    """Matching ids, nearest first (numpy distances, ties by id)."""
    matching = [r.id for r in ITEMS if predicate(r)]
    return sorted(matching, key=lambda i: (round(float(DISTANCES[i]), 6), i))


@pytest.fixture(scope="module")
def items_dsn(database_dsn: str) -> Iterator[str]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    options = (conninfo_to_dict(database_dsn).get("options") or "")
    dsn = make_conninfo(database_dsn, options=f"{options} -c search_path={name},public".strip())
    with psycopg.connect(database_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    with psycopg.connect(dsn, autocommit=True) as conn:
        configure_connection(conn)
        conn.execute(
            "CREATE TABLE items (id int PRIMARY KEY, score integer, price double precision, "
            f"category text, tags text[], attrs jsonb, embedding vector({DIM}))")
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO items VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [(r.id, r.score, r.price, r.category, r.tags, Jsonb(r.attrs), VECTORS[r.id])
                 for r in ITEMS])
        conn.execute("ANALYZE items")
        adopt_table(conn, table_config(conn, "items", prefix_dim=PREFIX))
    yield dsn
    with psycopg.connect(database_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def items(items_dsn: str) -> Iterator[tuple[psycopg.Connection[Any], Any]]:
    with psycopg.connect(items_dsn, autocommit=True) as conn:
        configure_connection(conn)
        yield conn, table_config(conn, "items")


def _ids(results: list[Any]) -> list[int]:
    return [r.id for r in results]


def _same(found: list[int], expected: list[int]) -> None:
    # The set is exact; the order is numpy's up to float ties.
    assert sorted(found) == sorted(expected)
    assert [round(float(DISTANCES[i]), 4) for i in found] == \
        [round(float(DISTANCES[i]), 4) for i in expected]


@pytest.mark.parametrize(("where", "predicate"), CASES, ids=IDS)
def test_exact_and_adaptive_search_return_exactly_the_rows_the_python_predicate_keeps(
        items, where, predicate):
    conn, config = items
    expected = _expected(predicate)
    _same(_ids(exact_search(conn, config, QUERY, k=ROWS, where=where)), expected)
    # A pool as large as the table: the walk sees every row, so the set must be exact.
    _same(_ids(search(conn, config, QUERY, k=ROWS, oversample=1, where=where)), expected)
    top = search(conn, config, QUERY, k=5, oversample=ROWS // 5, where=where)
    _same(_ids(top), expected[:5])


@pytest.mark.parametrize(("where", "predicate"), CASES, ids=IDS)
def test_the_sql_function_reads_the_same_grammar_from_json(items, where, predicate):
    conn, _ = items
    rows = conn.execute(
        "SELECT id, distance FROM mrl_search_items(%s, %s, 1, %s::jsonb)",
        (QUERY, ROWS, json.dumps(where))).fetchall()
    _same([r[0] for r in rows], _expected(predicate))


@pytest.mark.parametrize(("where", "predicate"), CASES[::4], ids=IDS[::4])
async def test_async_search_agrees(items_dsn, where, predicate):
    async with await psycopg.AsyncConnection.connect(items_dsn, autocommit=True) as aconn:
        from pgvector.psycopg import register_vector_async

        await register_vector_async(aconn)
        with psycopg.connect(items_dsn) as conn:
            config = table_config(conn, "items")
        expected = _expected(predicate)
        _same(_ids(await search_async(aconn, config, QUERY, k=ROWS, oversample=1,
                                      where=where)), expected)
        _same(_ids(await exact_search_async(aconn, config, QUERY, k=ROWS, where=where)),
              expected)


@pytest.mark.parametrize(("where", "predicate"), CASES[1::5], ids=IDS[1::5])
def test_the_cli_where_flag_speaks_the_same_grammar(items_dsn, tmp_path, where, predicate):
    path = tmp_path / "q.npy"
    np.save(path, QUERY)
    result = CliRunner().invoke(cli, ["search", "--vector", str(path), "--table", "items",
                                      "-k", str(ROWS), "--oversample", "1", "--json",
                                      "--where", json.dumps(where), "--dsn", items_dsn])
    assert result.exit_code == 0, result.output
    found = [json.loads(line)["id"] for line in result.output.splitlines() if line]
    _same(found, _expected(predicate))


def test_decimal_bounds_on_an_integer_column_compare_numerically(items):
    conn, config = items
    expected = _expected(lambda r: r.score is not None and r.score >= 2.5)
    _same(_ids(exact_search(conn, config, QUERY, k=ROWS,
                            where={"score": {"gte": Decimal("2.5")}})), expected)


def test_an_integral_bound_stays_a_plain_comparison_in_the_column_type(items):
    from mrl_pg.schema.tables import render
    from mrl_pg.statement.filters import compile_where, where_sql

    _, config = items
    plain = render(where_sql(config, compile_where(config, {"score": {"gte": 3}}).shape))
    assert plain == '"score" >= CAST(%(w0)s AS "pg_catalog"."int4")'
    fraction = render(where_sql(config, compile_where(config, {"score": {"gte": 2.5}}).shape))
    assert fraction == 'CAST("score" AS numeric) >= CAST(%(w0)s AS "pg_catalog"."numeric")'


@pytest.mark.parametrize(("where", "message"), [
    ({"score": {"like": 1}}, "unknown operator 'like' for 'score'"),
    ({"score": {"contains": [1]}}, "'score' takes no contains"),
    ({"tags": {"in": ["red"]}}, "'tags' takes no in"),
    ({"score": {"eq": None}}, "'score' eq null: use"),
    ({"score": {"in": "1"}}, "'score' in takes a list of values, got a JSON string"),
    ({"score": {"in": []}}, "'score' in an empty list"),
    ({"score": {"is_null": "yes"}}, "'score' is_null takes true or false"),
    ({"score": {"eq": {"a": 1}}}, "'score' eq takes one value, got a JSON object"),
    ({"score": {}}, "'score' has an empty condition"),
    ({"ghost": 1}, "cannot filter on: ghost"),
    ({"attrs": {"lang": "fr"}},
     '(containment on a jsonb column: {"attrs": {"contains": {...}}})'),
])
def test_the_sql_function_refuses_a_bad_filter_by_name(items, where, message):
    conn, _ = items
    with pytest.raises(psycopg.Error, match=re.escape(message)):
        conn.execute("SELECT * FROM mrl_search_items(%s, 5, 2, %s::jsonb)",
                     (QUERY, json.dumps(where)))


@pytest.mark.parametrize(("where", "message"), [
    ({"score": {"like": 1}}, "unknown operator 'like' for 'score'"),
    ({"score": {"contains": [1]}}, "'score' is int4: contains applies to jsonb and array"),
    ({"tags": {"in": ["red"]}}, "'tags' is an array column"),
    ({"score": {}}, "'score' has an empty condition"),
    ({"attrs": {"lang": "fr"}},
     "(containment on a jsonb column: {'attrs': {'contains': {...}}})"),
])
def test_python_refuses_the_same_bad_filters_by_name(items, where, message):
    conn, config = items
    with pytest.raises(InvalidSearchError, match=re.escape(message)):
        search(conn, config, QUERY, where=where)
