"""The benchmark commands run and report consistent figures (small sizes)."""

from __future__ import annotations

import re

import psycopg
from click.testing import CliRunner

from mrl_pg.cli._app import cli


def test_bench_reports_load_ratio_and_index_build_times(fresh_database):
    result = CliRunner().invoke(
        cli, ["bench", "--dsn", fresh_database, "--rows", "2000", "--index-rows", "1000,2000"]
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
