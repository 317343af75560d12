"""The HNSW settings rule is written once: the SQL function applies exactly what Python computes."""

from __future__ import annotations

import re

import numpy as np
import pytest
from psycopg import sql

from mrl_pg import TableConfig, install
from mrl_pg.index.saved_tuning import TuningRecord, save_tuning
from mrl_pg.statement.query import MAX_SCAN_TUPLES_RULE, SearchParams, scan_settings
from mrl_pg.statement.tuning import DEFAULT_TUNING, SearchTuning, ef_search_sql
from tests.fix_corpus import copy_rows

# (match_count, oversample): pools from 1 to 100,000, around every bend of the rules.
GRID = [(1, 1), (1, 8), (10, 2), (19, 1), (20, 1), (21, 1), (10, 8), (499, 1), (500, 1),
        (501, 1), (1000, 1), (250, 8), (1000, 4), (1000, 10), (1000, 11), (1000, 100)]
TUNINGS = [DEFAULT_TUNING, SearchTuning(oversample=12, ef_search=100, k=10),
           SearchTuning(oversample=3, ef_search=25, k=7),
           SearchTuning(oversample=1, ef_search=1000, k=1)]


def _function_settings(conn, config, function, query, k, oversample):
    notices: list[str] = []
    conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
    conn.execute(sql.SQL("SELECT count(*) FROM {}(%s, %s, %s)").format(function),
                 (query, k, oversample))
    (line,) = [n for n in notices if n.startswith(config.search_function_name + ":")]
    conn._notice_handlers.clear()
    return {name: int(value) for name, value in re.findall(r"(hnsw\.\w+|oversample) (\d+)", line)}


@pytest.mark.parametrize("tuning", TUNINGS, ids=lambda t: f"{t.oversample}x-ef{t.ef_search}-k{t.k}")
def test_the_sql_function_sets_the_settings_python_computes_for_every_pool(conn, schema, tuning):
    config = TableConfig("docs", full_dim=16, prefix_dim=4, schema=schema)
    install(conn, config)
    if tuning is not DEFAULT_TUNING:
        save_tuning(conn, config, TuningRecord(tuning))
    rng = np.random.default_rng(0)
    copy_rows(conn, config, rng.normal(size=(50, 16)).astype(np.float32),
              [f"d{i}" for i in range(50)])
    conn.execute("SET client_min_messages = debug1")
    query = rng.normal(size=16).astype(np.float32)
    function = sql.Identifier(schema, config.search_function_name)
    for k, oversample in [*GRID, (10, None), (3, None)]:
        found = _function_settings(conn, config, function, query, k, oversample)
        params = SearchParams(k=k, oversample=tuning.oversample if oversample is None
                              else oversample, tuning=tuning)
        python = dict(scan_settings(params))
        assert found == {
            "hnsw.ef_search": int(python["hnsw.ef_search"]),
            "hnsw.max_scan_tuples": int(python["hnsw.max_scan_tuples"]),
            "oversample": params.oversample,
        }, (k, oversample)


@pytest.mark.parametrize("tuning", TUNINGS)
def test_the_ef_search_rules_rendered_sql_evaluates_to_the_python_value(conn, tuning):
    rendered = ef_search_sql(sql.Placeholder(), oversample=sql.Literal(tuning.oversample),
                             ef_search=sql.Literal(tuning.ef_search), k=sql.Literal(tuning.k))
    for pool in [0, 1, 19, 20, 21, 79, 80, 81, 500, 501, 1000, 10_001, 100_000, 2**31 - 1]:
        row = conn.execute(sql.SQL("SELECT {}").format(rendered), (pool,)).fetchone()
        assert row == (tuning.ef_search_for(pool),), pool


def test_the_scan_tuples_rules_rendered_sql_evaluates_to_the_python_value(conn):
    for pool in [0, 1, 19, 20, 21, 500, 501, 1000, 10_001, 100_000, 2**31 - 1]:
        rendered = MAX_SCAN_TUPLES_RULE.sql(sql.Literal(pool))
        row = conn.execute(sql.SQL("SELECT {}").format(rendered)).fetchone()
        assert row == (MAX_SCAN_TUPLES_RULE(pool),), pool


def test_the_default_tuning_keeps_ef_search_at_twice_the_pool_within_40_and_1000():
    assert [DEFAULT_TUNING.ef_search_for(p) for p in (1, 20, 21, 80, 500, 501)] == [
        40, 40, 42, 160, 1000, 1000]
    # A tuned ratio scales with the pool and never drops below min(40, its own ef_search).
    assert SearchTuning(oversample=12, ef_search=100, k=10).ef_search_for(240) == 200
    assert SearchTuning(oversample=3, ef_search=25, k=7).ef_search_for(3) == 25


def test_an_explicit_ef_search_overrides_the_rule_on_every_front_end():
    from mrl_pg import TableConfig as Config
    from mrl_pg.errors import InvalidSearchError
    from mrl_pg.psycopg._search import adaptive_search_statement
    from mrl_pg.schema.tables import render
    from mrl_pg.sqlalchemy._search import _search_params

    assert dict(scan_settings(SearchParams(k=10, ef_search=77)))["hnsw.ef_search"] == "77"
    assert dict(scan_settings(SearchParams(k=10)))["hnsw.ef_search"] == str(
        DEFAULT_TUNING.ef_search_for(80))
    statement = adaptive_search_statement(Config(), np.ones(1536), k=10, ef_search=77)
    assert statement.settings_params is not None
    assert statement.settings_params["ef_search"] == 77
    assert "coalesce(%(ef_search)s::integer" in render(statement.settings)
    assert _search_params(10, 8, 0, None, 77).hnsw_ef_search == 77
    for bad in (0, 1001):
        with pytest.raises(InvalidSearchError, match="ef_search must be between 1 and 1000"):
            SearchParams(ef_search=bad)
