"""The HNSW settings rule is written once: the SQL function applies exactly what Python computes."""

from __future__ import annotations

import re

import numpy as np
import pytest
from psycopg import sql

from mrl_pg import TableConfig, install
from mrl_pg.query import EF_SEARCH_RULE, MAX_SCAN_TUPLES_RULE, SearchParams, scan_settings
from tests.fix_corpus import copy_rows

# (match_count, oversample): pools from 1 to 100,000, around every bend of the rules.
GRID = [(1, 1), (1, 8), (10, 2), (19, 1), (20, 1), (21, 1), (10, 8), (499, 1), (500, 1),
        (501, 1), (1000, 1), (250, 8), (1000, 4), (1000, 10), (1000, 11), (1000, 100)]


def test_the_sql_function_sets_the_settings_python_computes_for_every_pool(conn, schema):
    config = TableConfig("docs", full_dim=16, prefix_dim=4, schema=schema)
    install(conn, config)
    rng = np.random.default_rng(0)
    copy_rows(conn, config, rng.normal(size=(50, 16)).astype(np.float32),
              [f"d{i}" for i in range(50)])
    notices: list[str] = []
    conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
    conn.execute("SET client_min_messages = debug1")
    query = rng.normal(size=16).astype(np.float32)
    function = sql.Identifier(schema, config.search_function_name)
    for k, oversample in GRID:
        notices.clear()
        conn.execute(sql.SQL("SELECT count(*) FROM {}(%s, %s, %s)").format(function),
                     (query, k, oversample))
        (line,) = [n for n in notices if n.startswith(config.search_function_name + ":")]
        found = dict(re.findall(r"(hnsw\.\w+) (\d+)", line))
        python = dict(scan_settings(SearchParams(k=k, oversample=oversample)))
        assert found == {
            "hnsw.ef_search": python["hnsw.ef_search"],
            "hnsw.max_scan_tuples": python["hnsw.max_scan_tuples"],
        }, (k, oversample)


@pytest.mark.parametrize("rule", [EF_SEARCH_RULE, MAX_SCAN_TUPLES_RULE])
def test_the_rules_rendered_sql_evaluates_to_the_python_value(conn, rule):
    for pool in [0, 1, 19, 20, 21, 500, 501, 1000, 10_001, 100_000, 2**31 - 1]:
        row = conn.execute(sql.SQL("SELECT {}").format(rule.sql(sql.Literal(pool)))).fetchone()
        assert row == (rule(pool),), pool


def test_an_explicit_ef_search_overrides_the_rule_on_every_front_end():
    from mrl_pg import TableConfig as Config
    from mrl_pg.client import adaptive_search_statement
    from mrl_pg.errors import InvalidSearchError
    from mrl_pg.schema import render
    from mrl_pg.sqlalchemy import _search_params

    assert dict(scan_settings(SearchParams(k=10, ef_search=77)))["hnsw.ef_search"] == "77"
    assert dict(scan_settings(SearchParams(k=10)))["hnsw.ef_search"] == str(EF_SEARCH_RULE(80))
    statement = adaptive_search_statement(Config(), np.ones(1536), k=10, ef_search=77)
    assert "set_config('hnsw.ef_search', '77', true)" in render(statement.settings)
    assert _search_params(10, 8, 0, None, 77).hnsw_ef_search == 77
    for bad in (0, 1001):
        with pytest.raises(InvalidSearchError, match="ef_search must be between 1 and 1000"):
            SearchParams(ef_search=bad)
