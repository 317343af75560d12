"""The concurrency soak, short: 4 writers and 4 readers (3 threads, 1 asyncio task) for 10 s,
on the table mrl_pg creates and on a user's own table mrl_pg adopted."""

from __future__ import annotations

import pytest

from mrl_pg import TableConfig
from mrl_pg.bench.soak import DIM, LAYOUTS, PREFIX, run_soak

pytestmark = pytest.mark.slow  # ten seconds of writers and readers per layout


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_ten_seconds_of_writers_and_readers_lose_nothing(schema_dsn, schema, layout):
    config = TableConfig("soak", full_dim=DIM, prefix_dim=PREFIX, schema=schema)
    report = run_soak(schema_dsn, config, seconds=10, preload=5000, sample=150, layout=layout)
    print("\nsoak:", report.summary())
    assert report.errors == []
    assert report.writes > 20 and report.reads > 50
    assert {op for op, _ in LAYOUTS[layout].writes} <= set(report.by_kind)
    assert (report.wrong_rows, report.missing_rows, report.deleted_present,
            report.unexpected_rows) == (0, 0, 0, 0)
    assert report.rows_checked >= 5000
    assert report.exact_self_recall == 1.0
    assert report.adaptive_self_recall >= 0.99
