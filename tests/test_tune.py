"""``mrl-pg tune``: it measures, saves the fastest setting meeting the target, and every way
in (psycopg sync and async, SQLAlchemy sync and async, the SQL function, the CLI) then
searches with it when the caller leaves oversample unset."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from pgvector.sqlalchemy import VECTOR
from psycopg import sql
from sqlalchemy import BigInteger, Integer
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import mrl_pg
from mrl_pg import TableConfig, install
from mrl_pg.bench.synthetic import make_corpus, make_queries
from mrl_pg.cli._app import cli
from mrl_pg.db import create_async_engine, create_engine
from mrl_pg.errors import InvalidSearchError
from mrl_pg.index.adopt import adopt_table
from mrl_pg.index.saved_tuning import TuningRecord, clear_tuning, save_tuning
from mrl_pg.index.tune import TuneOptions, tune
from mrl_pg.schema.catalog import describe_table, table_config
from mrl_pg.statement.tuning import DEFAULT_TUNING, SearchTuning, load_tuning
from tests.fix_corpus import copy_rows
from tests.test_sqlalchemy import make_model

DIM, PREFIX, ROWS = 64, 8, 3000
# A prefix of 8 of 64 dimensions ranks rows poorly, so the pool changes the answer.
TUNED = SearchTuning(oversample=1, ef_search=40, k=10)


@pytest.fixture
def table(conn, schema):
    config = TableConfig("docs", full_dim=DIM, prefix_dim=PREFIX, schema=schema)
    install(conn, config)
    corpus = make_corpus(ROWS, DIM, seed=11)
    copy_rows(conn, config, corpus.embeddings, corpus.external_ids)
    conn.execute(sql.SQL("ANALYZE {}").format(config.table))
    return config


@pytest.fixture
def queries():
    return make_queries(20, DIM, seed=11)


def _ids(results) -> list[int]:
    return [r.id for r in results]


def _save_and_check_psycopg(conn, config, queries) -> tuple[list[list[int]], list[list[int]]]:
    """Save TUNED for the table; psycopg searches with the default before and TUNED after.
    Returns the ids an explicit TUNED and an explicit default search find per query."""
    explicit_tuned = [_ids(mrl_pg.search(conn, config, q, k=10, oversample=TUNED.oversample,
                                         ef_search=TUNED.ef_search)) for q in queries]
    explicit_default = [_ids(mrl_pg.search(conn, config, q, k=10, oversample=8, ef_search=160))
                        for q in queries]
    assert explicit_tuned != explicit_default  # the pool changes answers on this table
    assert [_ids(mrl_pg.search(conn, config, q, k=10)) for q in queries] == explicit_default

    save_tuning(conn, config, TuningRecord(TUNED, target_recall=0.5))
    assert load_tuning(conn, config) == TUNED
    assert [_ids(mrl_pg.search(conn, config, q, k=10)) for q in queries] == explicit_tuned
    return explicit_tuned, explicit_default


def _check_function_and_cli(conn, config, queries, expected, cli_args, tmp_path) -> None:
    """The SQL function (named arguments) and `mrl-pg search --json` find ``expected``."""
    function = sql.Identifier(config.schema, config.search_function_name)
    for q, ids in zip(queries, expected, strict=True):
        rows = conn.execute(sql.SQL("SELECT id FROM {}(query_embedding => %s, match_count => 10)")
                            .format(function), (q,)).fetchall()
        assert [r[0] for r in rows] == ids
    runner = CliRunner()
    for i in (0, 1):
        path = str(tmp_path / f"q{i}.npy")
        np.save(path, queries[i])
        result = runner.invoke(cli, ["search", "--vector", path, "--json", *cli_args])
        assert result.exit_code == 0, result.output
        assert [json.loads(line)["id"] for line in result.output.splitlines()] == expected[i]


def test_a_saved_setting_is_what_every_way_in_searches_with(
    conn, table, queries, schema_dsn, schema, tmp_path
):
    explicit_tuned, explicit_default = _save_and_check_psycopg(conn, table, queries)
    _check_function_and_cli(conn, table, queries, explicit_tuned, [
        "--table", "docs", "--schema", schema, "--dim", str(DIM), "--prefix-dim", str(PREFIX),
        "--dsn", schema_dsn], tmp_path)

    # SQLAlchemy, sync
    _, model = make_model(table)
    engine = create_engine(schema_dsn)
    try:
        with Session(engine) as session:
            found = [[doc.id for doc, _ in mrl_pg.sqlalchemy.search(session, model, q, k=10)]
                     for q in queries]
    finally:
        engine.dispose()
    assert found == explicit_tuned

    # An explicit argument still wins over the saved setting.
    assert _ids(mrl_pg.search(conn, table, queries[0], k=10, oversample=8, ef_search=160)) == (
        explicit_default[0])
    assert clear_tuning(conn, table) is True
    assert load_tuning(conn, table) is DEFAULT_TUNING
    assert _ids(mrl_pg.search(conn, table, queries[0], k=10)) == explicit_default[0]


async def test_the_async_ways_in_read_the_saved_setting_too(
    conn, aconn, table, queries, schema_dsn
):
    from sqlalchemy.ext.asyncio import AsyncSession

    explicit = [_ids(mrl_pg.search(conn, table, q, k=10, oversample=1, ef_search=40))
                for q in queries[:5]]
    save_tuning(conn, table, TuningRecord(TUNED))
    assert [_ids(await mrl_pg.search_async(aconn, table, q, k=10)) for q in queries[:5]] == (
        explicit)
    _, model = make_model(table)
    engine = create_async_engine(schema_dsn)
    try:
        async with AsyncSession(engine) as session:
            found = [[d.id for d, _ in await mrl_pg.sqlalchemy.search_async(session, model, q,
                                                                          k=10)]
                     for q in queries[:5]]
    finally:
        await engine.dispose()
    assert found == explicit


def test_reading_the_setting_inside_a_callers_transaction_leaves_it_open_and_clean(
    conn, table, queries
):
    save_tuning(conn, table, TuningRecord(TUNED))
    with conn.transaction():
        mrl_pg.search(conn, table, queries[0], k=10)
        assert conn.info.transaction_status.name == "INTRANS"
        assert conn.execute("SHOW hnsw.ef_search").fetchone() == ("40",)  # pgvector's default
    assert conn.info.transaction_status.name == "IDLE"


def test_a_table_without_mrl_pg_tuning_searches_with_the_defaults(conn, table, queries):
    """A table from before the tuning table existed keeps working after an upgrade."""
    conn.execute(sql.SQL("DROP TABLE {}").format(table.qualified("mrl_pg_tuning")))
    expected = _ids(mrl_pg.search(conn, table, queries[0], k=10, oversample=8, ef_search=160))
    assert _ids(mrl_pg.search(conn, table, queries[0], k=10)) == expected


def test_tune_saves_the_fastest_setting_meeting_the_target(conn, table):
    options = TuneOptions(queries=30, target_recall=0.45, oversample=(1, 4, 16),
                          ef_search=(40,), rounds=1)
    report = tune(conn, table, options)
    assert [r.tuning.oversample for r in report.results] == [1, 4, 16]
    passing = [r for r in report.results if r.min_recall >= 0.45 and r.uses_index]
    assert passing, [r.recall for r in report.results]
    assert report.recommended is max(passing, key=lambda r: r.qps)
    assert report.saved and load_tuning(conn, table) == report.recommended.tuning
    assert report.previous is DEFAULT_TUNING
    row = conn.execute(sql.SQL("SELECT table_rows, queries, target_recall, measured_recall "
                               "FROM {} WHERE table_name = 'docs'").format(
                                   table.qualified("mrl_pg_tuning"))).fetchone()
    assert row == (ROWS, 30, 0.45, pytest.approx(report.recommended.min_recall))
    # Oversample 1 re-ranks nothing: on this table it cannot be the one chosen.
    assert report.results[0].min_recall < report.results[-1].min_recall


def test_a_high_ef_search_keeps_the_hnsw_walk(conn, table):
    """On 3,000 rows the planner used to trade the HNSW scan for a sequential scan at high
    ef_search (the search's settings now leave it no sequential scan for the candidates)."""
    report = tune(conn, table, TuneOptions(queries=10, target_recall=0.1, oversample=(16,),
                                           ef_search=(40, 1000), rounds=1, dry_run=True))
    by_ef = {r.tuning.ef_search: r for r in report.results}
    assert by_ef[40].uses_index and by_ef[1000].uses_index
    assert not report.saved and load_tuning(conn, table) is DEFAULT_TUNING


def test_a_setting_whose_plan_leaves_the_index_is_never_saved_even_when_alone(conn, table):
    conn.execute(sql.SQL("DROP INDEX {}").format(table.qualified(table.hnsw_index_name)))
    report = tune(conn, table, TuneOptions(queries=5, target_recall=0.1, oversample=(16,),
                                           ef_search=(1000,), rounds=1))
    (only,) = report.results
    assert not only.uses_index and only.min_recall >= 0.1  # a full comparison is exact
    assert report.recommended is None and not report.saved
    assert load_tuning(conn, table) is DEFAULT_TUNING


def test_a_sampled_row_counts_neither_in_its_truth_nor_in_its_results():
    from mrl_pg.index.tune import _recall

    assert _recall([7, 1, 2], [7, 1, 3], own=7) == 0.5  # 1 of its 2 other neighbours
    assert _recall([1, 2, 3], [1, 2, 4], own=None) == pytest.approx(2 / 3)
    assert _recall([7], [7], own=7) == 1.0


def test_dropping_a_table_forgets_its_tuning(conn, table):
    from mrl_pg.schema.install import drop_ddl

    save_tuning(conn, table, TuningRecord(TUNED))
    for statement in drop_ddl(table):
        conn.execute(statement)
    install(conn, table)  # a new table of the same name starts from the defaults
    assert load_tuning(conn, table) is DEFAULT_TUNING


def test_tune_with_a_filter_must_meet_the_target_on_both_workloads(conn, table):
    report = tune(conn, table, TuneOptions(queries=10, target_recall=0.5, oversample=(4,),
                                           ef_search=(40,), rounds=1, filter={"bucket": 3},
                                           dry_run=True))
    assert set(report.results[0].recall) == {"all", "filtered"}


def test_the_cli_reports_saves_updates_and_resets(conn, table, schema_dsn, schema):
    base = ["tune", "--table", "docs", "--schema", schema, "--dim", str(DIM), "--prefix-dim",
            str(PREFIX), "--dsn", schema_dsn, "--queries", "20", "--rounds", "1",
            "--ef-search", "40"]
    runner = CliRunner()
    dry = runner.invoke(cli, [*base, "--oversample", "2,8", "--target-recall", "0.5",
                              "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "| 2 | 40 |" in dry.output and "**recommended**" in dry.output
    assert "would save" in dry.output
    assert load_tuning(conn, table) is DEFAULT_TUNING

    saved = runner.invoke(cli, [*base, "--oversample", "3", "--target-recall", "0.1"])
    assert saved.exit_code == 0, saved.output
    assert load_tuning(conn, table) == SearchTuning(oversample=3, ef_search=40, k=10)
    # After the data changed, running it again replaces the row.
    again = runner.invoke(cli, [*base, "--oversample", "5", "--target-recall", "0.1", "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["in_effect"] == {"oversample": 5, "ef_search": 40, "k": 10}

    reset = runner.invoke(cli, ["tune", "--reset", "--table", "docs", "--schema", schema,
                                "--dim", str(DIM), "--prefix-dim", str(PREFIX), "--dsn",
                                schema_dsn])
    assert reset.exit_code == 0 and "removed" in reset.output
    assert load_tuning(conn, table) is DEFAULT_TUNING


def test_when_nothing_meets_the_target_nothing_is_saved_and_the_cli_fails(
    conn, table, schema_dsn, schema
):
    save_tuning(conn, table, TuningRecord(SearchTuning(oversample=6, ef_search=120, k=10)))
    result = CliRunner().invoke(cli, [
        "tune", "--table", "docs", "--schema", schema, "--dim", str(DIM), "--prefix-dim",
        str(PREFIX), "--dsn", schema_dsn, "--queries", "20", "--rounds", "1",
        "--oversample", "1", "--ef-search", "40", "--target-recall", "1.0"])
    assert result.exit_code == 1
    assert "no setting reached recall 1.0" in result.output
    assert "Traceback" not in result.output
    assert load_tuning(conn, table) == SearchTuning(oversample=6, ef_search=120, k=10)


@pytest.mark.parametrize(("options", "message"), [
    ({"target_recall": 0.0}, "target recall must be in"),
    ({"target_recall": 1.5}, "target recall must be in"),
    ({"queries": 0}, "queries must be at least 1"),
    ({"rounds": 0}, "rounds must be at least 1"),
    ({"oversample": ()}, "at least one oversample"),
    ({"oversample": (0,)}, "oversample must be at least 1"),
    ({"ef_search": (1001,)}, "ef_search must be between 1 and 1000"),
    ({"k": 0}, "k must be between 1 and 1000"),
    ({"filter": ["not", "an", "object"]}, "filter must be a JSON object"),
])
def test_bad_tune_options_are_refused_before_anything_runs(options, message):
    with pytest.raises(InvalidSearchError, match=message):
        TuneOptions(**options)


def test_without_the_prefix_index_tune_says_so_and_saves_nothing(conn, table, schema_dsn, schema):
    from mrl_pg.index.build import drop_hnsw_index

    drop_hnsw_index(conn, table)
    result = CliRunner().invoke(cli, [
        "tune", "--table", "docs", "--schema", schema, "--dim", str(DIM), "--prefix-dim",
        str(PREFIX), "--dsn", schema_dsn, "--queries", "5", "--rounds", "1",
        "--oversample", "2", "--ef-search", "40", "--target-recall", "0.1"])
    assert result.exit_code == 1
    assert "walks the prefix index" in result.output and "mrl-pg index build" in result.output
    assert load_tuning(conn, table) is DEFAULT_TUNING


class _UserBase(DeclarativeBase):
    pass


class _Shelf(_UserBase):
    """A user's own model of an adopted table: nothing of mrl_pg's in it."""

    __tablename__ = "shelf"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    aisle: Mapped[int] = mapped_column(Integer)
    embedding: Mapped[Any] = mapped_column(VECTOR(DIM))


def test_a_saved_setting_on_an_adopted_table_is_what_every_way_in_searches_with(
    conn, queries, schema_dsn, schema, tmp_path
):
    conn.execute(f"CREATE TABLE shelf (id bigint PRIMARY KEY, aisle int, embedding vector({DIM}))")
    corpus = make_corpus(ROWS, DIM, seed=11)
    with conn.cursor() as cur, cur.copy("COPY shelf FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["int8", "int4", "vector"])
        for i, vector in enumerate(corpus.embeddings):
            copy.write_row((i + 1, i % 7, vector))
    conn.execute("ANALYZE shelf")
    adopt_table(conn, table_config(conn, "shelf", embedding="embedding",
                                             prefix_dim=PREFIX))
    config = describe_table(conn, "shelf", schema=schema)
    assert config.adopted and config.prefix_column is None  # the expression-index layout

    explicit_tuned, _ = _save_and_check_psycopg(conn, config, queries)
    _check_function_and_cli(conn, config, queries, explicit_tuned, [
        "--table", "shelf", "--schema", schema, "--dsn", schema_dsn], tmp_path)
    engine = create_engine(schema_dsn)
    try:
        with Session(engine) as session:
            found = [[row.id for row, _ in mrl_pg.sqlalchemy.search(session, _Shelf.embedding,
                                                                     q, k=10)]
                     for q in queries]
    finally:
        engine.dispose()
    assert found == explicit_tuned
