"""The benchmark commands run and report consistent figures (small sizes)."""

from __future__ import annotations

import re
import time
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

from mrl_pg.bench import load as bench
from mrl_pg.cli._app import cli

pytestmark = pytest.mark.slow  # load and build benchmarks


def test_bench_reports_load_ratio_and_index_build_times(fresh_database):
    result = CliRunner().invoke(
        cli, ["bench-load", "--dsn", fresh_database, "--rows", "2000", "--index-rows", "1000,2000"]
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    def number(pattern: str) -> float:
        match = re.search(pattern, out)
        assert match is not None, out
        return float(match.group(1).replace(",", ""))

    plain = number(r"plain binary COPY.*?: ([\d,]+) rows/s")
    ours = number(r"HNSW deferred: ([\d,]+) rows/s")
    ratio = number(r"ratio: ([\d.]+)")
    assert plain > 0 and ours > 0
    assert abs(ratio - ours / plain) < 0.02
    assert re.search(r"HNSW build, 1,000 rows: [\d.]+ s", out)
    assert re.search(r"HNSW build, 2,000 rows: [\d.]+ s", out)
    with psycopg.connect(fresh_database) as conn:  # it cleans up after itself
        left = conn.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'mrl_bench%'")
        assert left.fetchone() == (0,)


class Spy:
    """Stands in for a function of :mod:`mrl_pg.bench`: runs ``during`` just before each
    call and ``after`` just after it, and times the call alone and with those checks."""

    def __init__(self, function: Any, during: Any = None, after: Any = None) -> None:
        self.function, self.during, self.after = function, during, after
        self.spans: list[tuple[float, float]] = []  # (call alone, call with the checks)
        self.seen: list[Any] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        outer = time.perf_counter()
        before = self.during() if self.during else None
        inner = time.perf_counter()
        result = self.function(*args, **kwargs)
        done = time.perf_counter()
        self.seen.append((before, self.after(result) if self.after else None))
        self.spans.append((done - inner, time.perf_counter() - outer))
        return result


def test_load_benchmark_reports_what_it_loaded_and_the_time_it_took(conn, monkeypatch):
    """The ratio's inputs, checked against the loads as they happened (not against each other)."""
    rows = 1500
    load_table, index = "mrl_bench_load", "mrl_bench_load_embedding_prefix_hnsw"

    def count(table: str) -> int:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        return int(row.fetchone()[0])

    def index_present() -> bool:
        return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (index,)).fetchone()[0]

    copy = Spy(bench._plain_copy, after=lambda _: count("mrl_bench_plain_copy"))
    ingest = Spy(bench.ingest_arrays, during=index_present, after=lambda _: count(load_table))
    monkeypatch.setattr(bench, "_plain_copy", copy)
    monkeypatch.setattr(bench, "ingest_arrays", ingest)
    report = bench.bench_load(conn, rows=rows, batch_size=500)

    assert report.rows == rows
    assert copy.seen == [(None, rows)]
    assert ingest.seen == [(False, rows), (False, rows)]  # no HNSW index during either load
    # bench_load times the ingest calls around the spy (only a return in between) and the
    # plain COPY inside it (after its CREATE TABLE).
    [(copy_alone, _)] = copy.spans
    (_, first), (_, again) = ingest.spans
    slack = 0.005
    assert first <= report.ingest_seconds <= first + slack
    assert again <= report.reload_seconds <= again + slack
    # The plain COPY is timed inside the spied call (which also creates its table), so only
    # the upper bound is structural; a lower bound in wall-clock time is machine noise.
    assert 0 < report.plain_copy_seconds <= copy_alone
    assert 0 < report.ratio <= copy_alone / first
    assert report.ratio == pytest.approx(report.plain_copy_seconds / report.ingest_seconds)


def test_index_benchmark_reports_the_rows_and_size_of_the_index_it_built(conn, monkeypatch):
    def measure(built: Any) -> tuple[int, int, float]:
        row = conn.execute(
            "SELECT count(*), pg_relation_size('mrl_bench_index_embedding_prefix_hnsw') "
            "FROM mrl_bench_index"
        ).fetchone()
        return int(row[0]), int(row[1]), built.seconds

    build = Spy(bench.build_hnsw_index, after=measure)
    monkeypatch.setattr(bench, "build_hnsw_index", build)
    results = bench.bench_index(conn, sizes=(400, 900), full_dim=256, prefix_dim=64)

    assert [r.rows for r in results] == [400, 900]
    # Each figure is the build's own report (its timer runs inside the spied call).
    assert [seen for _, seen in build.seen] == [
        (r.rows, r.index_bytes, r.seconds) for r in results
    ]
    assert all(r.index_bytes > 8192 for r in results)
    for result, (alone, _) in zip(results, build.spans, strict=True):
        assert 0 < result.seconds <= alone
