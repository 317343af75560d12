"""``mrl-pg bench``: every method side by side, on a few thousand small rows (no timing asserts)."""

from __future__ import annotations

import dataclasses
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from mrl_pg import TableConfig, install
from mrl_pg.bench.methods import (
    ADAPTIVE,
    EXACT,
    FAMILIES,
    PREFIX_ONLY,
    SINGLE_PASS,
    SUPABASE,
    BenchTable,
    Method,
    PlanGuardError,
    check_plan,
    default_methods,
    explain_method,
    run_method,
    tuned_method,
)
from mrl_pg.bench.plot import pareto_frontier, plot_search
from mrl_pg.bench.report import (
    DataInfo,
    Environment,
    IndexInfo,
    MethodResult,
    SearchBenchReport,
)
from mrl_pg.bench.run import TrueNeighbours, measure
from mrl_pg.bench.search import (
    SearchBenchOptions,
    file_data,
    run_search_bench,
    search_markdown,
    synthetic_data,
    to_json,
)
from mrl_pg.cli._app import cli
from mrl_pg.db import connect
from mrl_pg.errors import InvalidConfigError, InvalidVectorError
from mrl_pg.index.build import build_hnsw_index
from mrl_pg.ingest.load import ingest_arrays
from mrl_pg.statement.stages import BinaryPrefixHnsw
from mrl_pg.statement.tuning import SearchTuning

pytestmark = pytest.mark.slow  # the benchmark command end to end

ROWS, DIM, PREFIX, QUERIES, ROUNDS = 3000, 256, 64, 30, 2
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# On 3,000 rows the planner prefers a sequential scan above ef_search ~100 (at 2,000 rows
# even for mrl_pg's default of 160), and the plan guard stops the run: sweep below that.
SMALL = SearchBenchOptions(
    prefix_dim=PREFIX, rounds=ROUNDS, clients=(1, 2), ef_search=(40, 80),
    prefix_ef_search=(40, 80), oversample=(2, 8), adaptive_ef_search=(40, 80),
    buffer_sample=5,
)
SMALL_CLI = [
    "--dim", str(DIM), "--prefix-dim", str(PREFIX), "--queries", "20", "--rounds", "2",
    "--ef-search", "40,80", "--prefix-ef-search", "40", "--oversample", "2,8",
    "--adaptive-ef-search", "40", "--buffer-sample", "3",
]


def _schema_dsn(database_dsn: str, schema: str) -> str:
    options = conninfo_to_dict(database_dsn).get("options") or ""
    return make_conninfo(database_dsn, options=f"{options} -c search_path={schema},public".strip())


@pytest.fixture(scope="module")
def bench_dsn(database_dsn: str) -> Iterator[str]:
    """A schema of its own for the module's one benchmark run."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    yield _schema_dsn(database_dsn, schema)
    with psycopg.connect(database_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(scope="module")
def report(bench_dsn: str) -> SearchBenchReport:
    data = synthetic_data(ROWS, DIM, QUERIES, seed=3)
    steps: list[str] = []
    result = run_search_bench(bench_dsn, data, SMALL, command="pytest", on_step=steps.append)
    assert any("single-pass HNSW index" in s for s in steps)
    return result


def test_every_method_runs_and_appears_in_the_report(report):
    table = BenchTable(TableConfig(SMALL.table, full_dim=DIM, prefix_dim=PREFIX), False)
    expected = [m.name for m in default_methods(
        table, ef_search=SMALL.ef_search, prefix_ef_search=SMALL.prefix_ef_search,
        oversample=SMALL.oversample, adaptive_ef_search=SMALL.adaptive_ef_search)]
    assert report.tuning is not None and report.tuning.recommended is not None
    chosen = SearchTuning(k=10, **report.tuning.recommended)
    expected.append(tuned_method(table, chosen).name)
    assert [m.name for m in report.methods] == expected
    assert {m.family for m in report.methods} == set(FAMILIES)
    assert sum(m.product_default for m in report.methods) == 1
    for order in report.round_orders:  # every round runs every method once
        assert sorted(order) == sorted(expected)
    assert len(report.round_orders) == ROUNDS
    for m in report.methods:
        assert 0.0 <= m.recall <= 1.0
        assert m.p50_ms > 0 and m.p99_ms >= m.p50_ms
        assert m.buffers_per_query > 0 and m.buffer_sample == SMALL.buffer_sample
    markdown = search_markdown(report)
    assert all(f"| {m.name}" in markdown for m in report.methods)


def test_the_tune_step_saves_a_setting_and_the_tuned_method_runs_with_it(report):
    """The tuned method passes no oversample: its pool shows the saved one was read."""
    assert report.tuning is not None and report.tuning.recommended is not None
    assert report.tuning.recall_on_rows >= report.tuning.target_recall
    tuned = next(m for m in report.methods if m.tuned)
    assert tuned.index_rows == 10 * report.tuning.recommended["oversample"]
    assert tuned.settings["oversample"] == report.tuning.recommended["oversample"]
    assert "**(as tuned)**" in search_markdown(report)


def test_exact_recall_is_one_and_adaptive_beats_prefix_only(report):
    assert report.method(EXACT).recall == 1.0
    default = next(m for m in report.methods if m.product_default)
    prefix = report.method(f"{PREFIX_ONLY} ef=40")
    assert default.recall > prefix.recall  # re-ranking by the full vector helps


def test_two_client_qps_is_measured_every_round(report):
    for m in report.methods:
        assert set(m.qps) == {1, 2}
        assert all(len(m.qps_rounds[c]) == ROUNDS for c in (1, 2))
        assert all(q > 0 for c in (1, 2) for q in m.qps_rounds[c])
        assert m.qps[2] == pytest.approx(float(np.median(m.qps_rounds[2])))


def test_each_method_read_the_index_it_claims(report):
    full = next(i for i in report.indexes if i.role == "full")
    prefix = next(i for i in report.indexes if i.role == "prefix")
    assert full.bytes > 0 and prefix.bytes > 0 and full.build_seconds > 0
    assert "vector_cosine_ops" in full.definition
    for m in report.methods:
        if m.family == EXACT:
            assert m.index is None and not any("Index" in n for n in m.plan_nodes)
            continue
        expected = full if m.family == SINGLE_PASS else prefix
        assert m.index == expected.name and m.index_bytes == expected.bytes
        assert f"Index Scan using {expected.name}" in m.plan_nodes


def test_supabase_recipe_gets_40_candidates_however_many_it_asks_for(report):
    supabase = report.method(f"{SUPABASE} recipe")
    assert supabase.settings["pool"] == 80 and supabase.settings["ef_search"] is None
    assert supabase.index_rows == 40  # hnsw.ef_search stays at pgvector's default
    default = next(m for m in report.methods if m.product_default)
    assert default.index_rows == 80  # mrl_pg raises ef_search: the whole pool


def _field_names(cls: Any) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_json_has_every_field(report):
    document = json.loads(to_json(report))
    assert set(document) == _field_names(SearchBenchReport)
    assert set(document["data"]) == _field_names(DataInfo)
    assert set(document["environment"]) == _field_names(Environment)
    assert all(set(i) == _field_names(IndexInfo) for i in document["indexes"])
    assert all(set(m) == _field_names(MethodResult) for m in document["methods"])
    env = document["environment"]
    assert env["command"] == "pytest" and env["cpu_count"] >= 1 and env["ram_bytes"] > 2**20
    assert env["postgresql"][:2].isdigit() and env["pgvector"].startswith("0.")
    assert document["data"] == {"source": "synthetic", "rows": ROWS, "full_dim": DIM,
                                "prefix_dim": PREFIX, "queries": QUERIES, "k": 10, "seed": 3,
                                "queries_source": "synthetic"}
    assert document["options"]["rounds"] == ROUNDS
    assert set(document["methods"][0]["qps"]) == {"1", "2"}


def test_plot_is_a_png_matplotlib_can_read(report, tmp_path):
    image = pytest.importorskip("matplotlib.image")
    path = tmp_path / "bench.png"
    plot_search(report, path)
    assert path.read_bytes()[:8] == PNG_MAGIC
    pixels = image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 200


def test_the_benchmark_drops_its_table(report, bench_dsn):
    with psycopg.connect(bench_dsn) as conn:
        row = conn.execute("SELECT to_regclass(%s)", (SMALL.table,)).fetchone()
    assert row == (None,)


def test_pareto_frontier_keeps_the_points_nothing_else_beats():
    points = [(0.90, 500.0), (0.95, 400.0), (0.93, 300.0), (0.99, 100.0), (0.80, 450.0),
              (0.99, 90.0)]
    assert pareto_frontier(points) == [(0.90, 500.0), (0.95, 400.0), (0.99, 100.0)]
    assert pareto_frontier([]) == []


@pytest.fixture
def small_table(conn, schema_dsn) -> Iterator[tuple[BenchTable, Any, TrueNeighbours, str]]:
    """A 3,000 x 256 MRL table with both HNSW indexes; the full one on halfvec (the cast path)."""
    data = synthetic_data(ROWS, DIM, 12, seed=5)
    table = BenchTable(TableConfig("guarded", full_dim=DIM, prefix_dim=PREFIX), full_halfvec=True)
    install(conn, table.config, with_search_function=False)
    ingest_arrays(conn, table.config, data.vectors, external_ids=data.external_ids)
    build_hnsw_index(conn, table.config)
    conn.execute(table.full_index_ddl())
    conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(table.config.table))
    yield table, data, TrueNeighbours(data.vectors, data.external_ids, data.queries, 10), schema_dsn


def test_exact_sql_agrees_with_numpy(conn, small_table):
    table, data, truth, _ = small_table
    exact = next(m for m in default_methods(table) if m.family == EXACT)
    for i, query in enumerate(data.queries):
        found = run_method(conn, table, exact, query, 10)
        assert truth.recall(i, found) == 1.0
        assert set(found) == set(truth.top_ids(i, data.external_ids))


def test_true_neighbours_match_a_full_sort():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(500, 32)).astype(np.float32)
    queries = rng.normal(size=(5, 32)).astype(np.float32)
    ids = [str(i) for i in range(500)]
    truth = TrueNeighbours(vectors, ids, queries, 10)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for q in range(5):
        expected = np.argsort(-(unit @ (queries[q] / np.linalg.norm(queries[q]))))[:10]
        assert truth.top[q].tolist() == expected.tolist()
        assert truth.recall(q, [ids[i] for i in expected]) == 1.0
        assert truth.recall(q, [ids[i] for i in expected[:5]]) == 0.5


def test_plan_guard_raises_when_the_index_is_missing(conn, small_table):
    table, data, truth, dsn = small_table
    methods = default_methods(table, ef_search=(40,), prefix_ef_search=(40,), oversample=(4,),
                              adaptive_ef_search=(40,))
    single = next(m for m in methods if m.family == SINGLE_PASS)
    for method in methods:  # with both indexes every plan passes (halfvec cast included)
        check_plan(table, method, explain_method(conn, table, method, data.queries[0], 10))

    conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(table.full_index_name)))
    with pytest.raises(PlanGuardError, match=table.full_index_name) as caught:
        check_plan(table, single, explain_method(conn, table, single, data.queries[0], 10))
    assert caught.value.method == single.name
    assert any("Seq Scan" in node for node in caught.value.nodes)
    with connect(dsn, autocommit=True) as other:  # measure() checks before timing
        with pytest.raises(PlanGuardError):
            measure([other], table, methods, data.queries, truth, {}, k=10, rounds=1,
                    clients=(1,), seed=0, buffer_sample=1)

    conn.execute(sql.SQL("DROP INDEX {}").format(
        sql.Identifier(table.config.hnsw_index_name)))
    for method in methods:
        if method.family in (ADAPTIVE, PREFIX_ONLY, SUPABASE):
            with pytest.raises(PlanGuardError, match=table.config.hnsw_index_name):
                check_plan(table, method,
                           explain_method(conn, table, method, data.queries[0], 10))


def test_when_the_planner_drops_the_full_index_single_pass_is_forced_onto_it(conn, small_table):
    """On 3,000 rows the planner prefers a sequential scan at ef_search 1000: the user's
    alternative is enable_seqscan = off, and the report says so in the method's name."""
    table, data, truth, dsn = small_table
    method = Method("single-pass ef=1000", SINGLE_PASS, table.full_index_name, ef_search=1000)
    with pytest.raises(PlanGuardError):
        check_plan(table, method, explain_method(conn, table, method, data.queries[0], 10))
    with connect(dsn, autocommit=True) as other:
        measured = measure([other], table, [method], data.queries, truth, {}, k=10, rounds=1,
                           clients=(1,), seed=0, buffer_sample=1)
    (result,) = measured.results
    assert result.name == "single-pass ef=1000 (seqscan off)"
    assert result.settings == {"ef_search": 1000, "enable_seqscan": 0}
    assert any(table.full_index_name in node for node in result.plan_nodes)


def test_cli_runs_end_to_end_and_writes_three_files(fresh_database, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["bench", "--dsn", fresh_database, "--rows", "3000",
                                      *SMALL_CLI, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "| method | recall@10 | QPS 1 client | QPS 2 clients |" in result.stdout
    assert "adaptive default (8x, ef=160)" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["bench.json", "bench.md", "bench.png"]
    document = json.loads((out / "bench.json").read_text())
    assert document["kind"] == "search" and document["data"]["rows"] == 3000
    assert document["environment"]["command"].startswith("mrl-pg bench --rows 3000")
    assert fresh_database not in (out / "bench.json").read_text()  # no DSN in the record
    assert (out / "bench.md").read_text() in result.stdout
    assert (out / "bench.png").read_bytes()[:8] == PNG_MAGIC


def test_cli_rows_sweep_of_files_without_matplotlib_skips_the_plot(fresh_database, tmp_path,
                                                                   monkeypatch):
    data = synthetic_data(4000, DIM, 20, seed=9)
    vectors, queries = tmp_path / "vectors.npy", tmp_path / "queries.npy"
    np.save(vectors, data.vectors)
    np.save(queries, data.queries)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["bench", "--dsn", fresh_database, "--rows", "3000,4000",
                                      *SMALL_CLI, "--vectors", str(vectors),
                                      "--queries-file", str(queries), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "matplotlib is not installed" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["bench.json", "bench.md"]
    document = json.loads((out / "bench.json").read_text())
    assert document["kind"] == "rows-sweep"
    assert document["data"]["source"] == str(vectors)
    assert document["data"]["queries_source"] == str(queries)
    assert [p["rows"] for p in document["points"]] == [3000, 4000]
    for point in document["points"]:
        families = [m["family"] for m in point["methods"]]
        assert families == [ADAPTIVE, SINGLE_PASS, PREFIX_ONLY]
        assert {i["role"] for i in point["indexes"]} == {"prefix", "full"}
        assert all(m["qps"]["2"] > 0 and m["buffers_per_query"] > 0 for m in point["methods"])


def test_files_must_be_two_dimensional_and_of_one_width(tmp_path):
    np.save(tmp_path / "v.npy", np.ones((10, 8), dtype=np.float32))
    np.save(tmp_path / "q.npy", np.ones((3, 6), dtype=np.float32))
    np.save(tmp_path / "flat.npy", np.ones(8, dtype=np.float32))
    with pytest.raises(InvalidVectorError, match="queries have 6 dimensions"):
        file_data(tmp_path / "v.npy", tmp_path / "q.npy")
    with pytest.raises(InvalidVectorError, match="must be a 2-D array"):
        file_data(tmp_path / "flat.npy", tmp_path / "q.npy")
    data = file_data(tmp_path / "v.npy", tmp_path / "v.npy", rows=4, query_count=2)
    assert data.vectors.shape == (4, 8) and data.queries.shape == (2, 8)
    assert data.external_ids == [f"row-{i:08d}" for i in range(4)]


def test_options_refuse_ef_search_pgvector_cannot_take():
    with pytest.raises(InvalidConfigError, match="at most 1000"):
        SearchBenchOptions(ef_search=(40, 2000))
    with pytest.raises(InvalidConfigError, match="clients"):
        SearchBenchOptions(clients=(0,))


def test_cli_refuses_vectors_without_queries(tmp_path):
    vectors = Path(tmp_path / "v.npy")
    np.save(vectors, np.ones((10, 8), dtype=np.float32))
    result = CliRunner().invoke(cli, ["bench", "--dsn", "postgresql:///unused",
                                      "--vectors", str(vectors)])
    assert result.exit_code != 0
    assert "--vectors and --queries-file go together" in result.output


def test_supabase_statement_is_the_published_recipe_on_our_prefix_column():
    from mrl_pg.bench.methods import _statement

    table = BenchTable(TableConfig("docs", full_dim=3072, prefix_dim=512), full_halfvec=True)
    method = next(m for m in default_methods(table) if m.family == SUPABASE)
    stmt = _statement(table, method, np.ones(3072, dtype=np.float32), 10)
    text = " ".join(stmt.statement.as_string(None).split())
    assert "SELECT * FROM \"docs\" ORDER BY \"embedding_prefix\" <=> (SELECT l2_normalize(" in text
    assert "LIMIT %(match_count)s * 8" in text
    assert text.endswith("LIMIT least(%(match_count)s, 200)")
    assert stmt.params["match_count"] == 10
    assert "hnsw.ef_search" not in stmt.setting_names  # as published: the pool stays at 40
    single = next(m for m in default_methods(table) if m.family == SINGLE_PASS)
    single_text = _statement(table, single, np.ones(3072, dtype=np.float32), 10).statement
    assert '("embedding"::halfvec(3072)) <=> %(query)s::halfvec(3072)' in single_text.as_string(
        None)
    assert "halfvec_cosine_ops" in table.full_index_ddl().as_string(None)


def test_another_first_stage_is_measured_beside_the_default_without_a_new_statement(bench_dsn):
    """--binary-stage: the same grid through the bit(P) index, its own index and plan."""
    options = SearchBenchOptions(
        prefix_dim=PREFIX, rounds=1, clients=(1,), ef_search=(40,), prefix_ef_search=(40,),
        oversample=(4,), adaptive_ef_search=(40,), buffer_sample=2, tune=False,
        binary_stage=True, table="mrl_bench_binary")
    data = synthetic_data(ROWS, DIM, 8, seed=6)
    result = run_search_bench(bench_dsn, data, options)
    stage = BinaryPrefixHnsw()
    index = stage.index_name(TableConfig(options.table, full_dim=DIM, prefix_dim=PREFIX))
    binary = result.method(f"{ADAPTIVE} {stage.name} 4x ef=40")
    assert binary.index == index and binary.index_role == "binary prefix"
    assert any(index in node for node in binary.plan_nodes)
    assert binary.index_rows == 40 and 0.0 < binary.recall <= 1.0
    assert {i.role for i in result.indexes} == {"prefix", "full", "binary prefix"}


def test_the_single_pass_index_is_built_like_the_prefix_index_unless_told_otherwise():
    from mrl_pg.statement.prefix import hnsw_index_ddl

    config = TableConfig("docs", full_dim=1536, prefix_dim=512)
    full = " ".join(BenchTable(config, full_halfvec=False).full_index_ddl().as_string(None).split())
    assert full.endswith("USING hnsw (\"embedding\" vector_cosine_ops) "
                         "WITH (m = 16, ef_construction = 128)")  # the prefix index's
    assert "WITH (m = 16, ef_construction = 128)" in hnsw_index_ddl(config).as_string(None)
    weaker = BenchTable(config, full_halfvec=False, full_ef_construction=64).full_index_ddl()
    assert "ef_construction = 64" in weaker.as_string(None)  # pgvector's default, on request
    with pytest.raises(InvalidConfigError, match="full_ef_construction must be between 32"):
        SearchBenchOptions(full_ef_construction=16)
