"""The concurrency soak, short: 4 writers and 4 readers (3 threads, 1 asyncio task) for 10 s."""

from __future__ import annotations

from benchmarks.soak import DIM, PREFIX, run_soak
from mrl_pg import TableConfig


def test_ten_seconds_of_writers_and_readers_lose_nothing(schema_dsn, schema):
    config = TableConfig("soak", full_dim=DIM, prefix_dim=PREFIX, schema=schema)
    report = run_soak(schema_dsn, config, seconds=10, preload=5000, sample=150)
    print("\nsoak:", report.summary())
    assert report.errors == []
    assert report.writes > 20 and report.reads > 50
    assert {"insert", "update", "delete"} <= set(report.by_kind)
    assert (report.wrong_rows, report.missing_rows, report.deleted_present) == (0, 0, 0)
    assert report.rows_checked >= 5000
    assert report.exact_self_recall == 1.0
    assert report.adaptive_self_recall >= 0.99
