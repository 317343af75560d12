"""`mrl-pg adopt` and the commands that follow it, on a table mrl_pg did not create."""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import pytest
from click.testing import CliRunner, Result
from psycopg import sql

from mrl_pg.bench.synthetic import make_corpus, make_queries
from mrl_pg.cli._app import cli
from mrl_pg.psycopg._search import exact_search
from mrl_pg.schema.catalog import describe_table
from mrl_pg.statement.tuning import DEFAULT_TUNING, load_tuning
from tests.fix_openai import TEST_API_KEY, FakeOpenAIServer, fake_embedding

DIM = 256
PREFIX = 64
ROWS = 8000
K = 10


@dataclass(frozen=True)
class Articles:
    """The user's own table, its vectors (row i has id i + 1) and the CLI's common arguments."""

    schema: str
    dsn: str
    vectors: npt.NDArray[np.float32]
    authors: npt.NDArray[np.int64]
    args: list[str]

    def invoke(self, *args: str) -> Result:
        return CliRunner().invoke(cli, [*args, *self.args])


def create_articles(conn: psycopg.Connection[Any], schema: str, rows: int = ROWS) -> Articles:
    """``articles`` as an application made it, filled by COPY; no mrl_pg involved."""
    table = sql.Identifier(schema, "articles")
    conn.execute(sql.SQL(
        "CREATE TABLE {} (id bigserial PRIMARY KEY, title text, body text, author_id bigint, "
        "embedding vector({}))").format(table, sql.Literal(DIM)))
    corpus = make_corpus(rows, DIM, seed=3)
    # author_id is a column of its own, drawn apart from the vectors: one author is 1%.
    authors = np.array([m["bucket"] for m in corpus.metadata], dtype=np.int64)
    with conn.cursor() as cur, cur.copy(sql.SQL(
            "COPY {} (id, title, body, author_id, embedding) FROM STDIN WITH (FORMAT BINARY)"
    ).format(table)) as copy:
        copy.set_types(["int8", "text", "text", "int8", "vector"])
        for i, vector in enumerate(corpus.embeddings):
            copy.write_row((i + 1, f"title {i + 1}", f"body of article {i + 1}",
                            int(authors[i]), vector))
    conn.execute(sql.SQL("SELECT setval(pg_get_serial_sequence({}, 'id'), {})").format(
        sql.Literal(f"{schema}.articles"), sql.Literal(rows)))
    conn.execute(sql.SQL("ANALYZE {}").format(table))
    return Articles(schema, "", corpus.embeddings, authors, [])


@pytest.fixture
def articles(conn: psycopg.Connection[Any], schema: str, schema_dsn: str) -> Articles:
    made = create_articles(conn, schema)
    return Articles(schema, schema_dsn, made.vectors, made.authors,
                    ["--dsn", schema_dsn, "--schema", schema])


@pytest.fixture
def adopted(articles: Articles) -> Articles:
    result = articles.invoke("adopt", "articles", "--embedding", "embedding",
                             "--prefix-dim", str(PREFIX))
    assert result.exit_code == 0, result.output
    return articles


def checksum(conn: psycopg.Connection[Any], schema: str, table: str = "articles") -> Any:
    row = conn.execute(sql.SQL("SELECT count(*), md5(string_agg(t::text, '|' ORDER BY id)) "
                               "FROM {} AS t").format(sql.Identifier(schema, table))).fetchone()
    return row


def query_file(tmp_path: Path, vector: npt.ArrayLike, name: str = "q.npy") -> str:
    np.save(tmp_path / name, np.asarray(vector, dtype=np.float32))
    return str(tmp_path / name)


def json_lines(result: Result) -> list[dict[str, Any]]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def one_line_error(result: Result, message: str) -> None:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    assert result.output.count("\n") == 1, result.output
    assert message in result.output, result.output


def write_jsonl(path: Path, records: Sequence[dict[str, Any] | str]) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n"
                            for r in records))
    return str(path)


def test_adopting_twice_builds_the_index_once_and_keeps_it(
    conn: psycopg.Connection[Any], articles: Articles
) -> None:
    before = checksum(conn, articles.schema)
    first = articles.invoke("adopt", "articles", "--embedding", "embedding",
                            "--prefix-dim", str(PREFIX))
    assert first.exit_code == 0, first.output
    assert f"adopted {articles.schema}.articles: vector({DIM}) column embedding" in first.stdout
    assert "built concurrently on 8,000 rows" in first.stdout
    second = articles.invoke("adopt", "articles", "--embedding", "embedding",
                             "--prefix-dim", str(PREFIX))
    assert second.exit_code == 0, second.output
    assert "articles_embedding_prefix_hnsw: already there and valid, kept" in second.stdout
    assert "built" not in second.stdout
    config = describe_table(conn, "articles", schema=articles.schema)
    assert (config.adopted, config.full_dim, config.prefix_dim) == (True, DIM, PREFIX)
    assert checksum(conn, articles.schema) == before


def test_search_json_returns_the_tables_own_columns_for_the_filtered_author(
    adopted: Articles, tmp_path: Path
) -> None:
    query = query_file(tmp_path, make_queries(1, DIM, seed=3)[0])
    rows = json_lines(adopted.invoke("search", "--vector", query, "--table", "articles",
                                     "--json", "--where", '{"author_id": 7}', "-k", str(K)))
    assert len(rows) == K
    for row in rows:
        assert {"id", "title", "author_id", "distance"} <= set(row), row
        assert row["author_id"] == 7
        assert row["title"] == f"title {row['id']}"
    assert [r["distance"] for r in rows] == sorted(r["distance"] for r in rows)


def test_a_one_percent_filter_returns_k_rows_with_recall_against_exact_search(
    conn: psycopg.Connection[Any], adopted: Articles, tmp_path: Path
) -> None:
    config = describe_table(conn, "articles", schema=adopted.schema)
    queries = make_queries(10, DIM, seed=3)
    found = 0
    for n, (query, author) in enumerate(zip(queries, [3, 7, 11, 19, 23, 42, 55, 61, 77, 98],
                                            strict=True)):
        where = {"author_id": author}
        assert np.count_nonzero(adopted.authors == author) < ROWS * 0.02
        rows = json_lines(adopted.invoke(
            "search", "--vector", query_file(tmp_path, query, f"q{n}.npy"), "--table",
            "articles", "--json", "--where", json.dumps(where), "-k", str(K)))
        truth = exact_search(conn, config, query, k=K, where=where)
        assert len(rows) == K and all(r["author_id"] == author for r in rows)
        found += len({r["id"] for r in rows} & {t.id for t in truth})
    print(f"\nCLI search --where, 1% of rows: recall@{K} {found / (K * len(queries)):.3f} "
          f"over {len(queries)} queries")
    assert found / (K * len(queries)) >= 0.95


def test_search_text_output_shows_every_returned_column(
    adopted: Articles, tmp_path: Path
) -> None:
    query = query_file(tmp_path, adopted.vectors[41])
    result = adopted.invoke("search", "--vector", query, "--table", "articles", "-k", "3")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["#", "distance", "id", "title", "body", "author_id"]
    assert lines[1].split() == ["1", "0.0000", "42", "title", "42", "body", "of", "article",
                                "42", str(adopted.authors[41])]
    assert len(lines) == 4


def test_index_build_rebuilds_the_expression_index_and_keeps_the_adoption(
    conn: psycopg.Connection[Any], articles: Articles, tmp_path: Path
) -> None:
    adopt = articles.invoke("adopt", "articles", "--prefix-dim", str(PREFIX),
                            "--columns", "id,title,author_id")
    assert adopt.exit_code == 0, adopt.output
    oid = conn.execute("SELECT to_regclass(%s)::oid", (
        f"{articles.schema}.articles_embedding_prefix_hnsw",)).fetchone()
    built = articles.invoke("index", "build", "--table", "articles")
    assert built.exit_code == 0, built.output
    assert built.stdout.startswith(
        f"built articles_embedding_prefix_hnsw on {articles.schema}.articles: 8,000 rows")
    status = articles.invoke("index", "status", "--table", "articles")
    assert "articles_embedding_prefix_hnsw: valid" in status.stdout, status.output
    assert f"l2_normalize(subvector(embedding, 1, {PREFIX}))" in status.stdout
    assert conn.execute("SELECT to_regclass(%s)::oid", (
        f"{articles.schema}.articles_embedding_prefix_hnsw",)).fetchone() != oid
    # The adoption's choices survive the new index: a search still returns just these columns.
    query = query_file(tmp_path, articles.vectors[9])
    rows = json_lines(articles.invoke("search", "--vector", query, "--table", "articles",
                                      "--json", "-k", "1"))
    assert rows[0].keys() == {"id", "title", "author_id", "distance"} and rows[0]["id"] == 10


def test_ingest_upserts_an_existing_id_and_inserts_a_new_one(
    conn: psycopg.Connection[Any], adopted: Articles, tmp_path: Path
) -> None:
    rng = np.random.default_rng(11)
    moved, fresh = rng.standard_normal((2, DIM)).tolist()
    path = write_jsonl(tmp_path / "articles.jsonl", [
        {"id": 5, "title": "rewritten", "embedding": moved},
        {"id": 9001, "title": "new one", "author_id": 7, "embedding": fresh},
    ])
    result = adopted.invoke("ingest", path, "--table", "articles")
    assert result.exit_code == 0, result.output
    assert "read 2 rows: 1 inserted, 1 updated, 0 unchanged" in result.stderr
    again = adopted.invoke("ingest", path, "--table", "articles")
    assert "read 2 rows: 0 inserted, 0 updated, 2 unchanged" in again.stderr, again.output
    # Columns a record leaves out keep their values.
    assert conn.execute(sql.SQL("SELECT title, body, author_id FROM {} WHERE id = 5").format(
        sql.Identifier(adopted.schema, "articles"))).fetchone() == (
            "rewritten", "body of article 5", int(adopted.authors[4]))
    for key, vector in ((5, moved), (9001, fresh)):
        rows = json_lines(adopted.invoke("search", "--vector", query_file(tmp_path, vector),
                                         "--table", "articles", "--json", "-k", "1"))
        assert rows[0]["id"] == key and rows[0]["distance"] < 1e-6


def test_ingest_embeds_the_text_column_and_reuses_stored_embeddings(
    conn: psycopg.Connection[Any], adopted: Articles, tmp_path: Path,
    openai_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", TEST_API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    path = write_jsonl(tmp_path / "text.jsonl", [
        {"id": 3, "body": "a body rewritten"}, {"id": 9002, "body": "a new body"}])
    result = adopted.invoke("ingest", path, "--table", "articles", "--text-column", "body")
    assert result.exit_code == 0, result.output
    assert "1 inserted, 1 updated" in result.stderr
    assert [r.inputs for r in openai_server.requests] == [["a body rewritten", "a new body"]]
    assert openai_server.requests[0].dimensions == DIM
    stored = conn.execute(sql.SQL("SELECT embedding FROM {} WHERE id = 9002").format(
        sql.Identifier(adopted.schema, "articles"))).fetchone()
    assert stored is not None
    assert np.allclose(stored[0].to_numpy(), fake_embedding("a new body", DIM), atol=1e-6)
    again = adopted.invoke("ingest", path, "--table", "articles", "--text-column", "body")
    assert "0 inserted, 0 updated, 2 unchanged" in again.stderr, again.output
    assert len(openai_server.requests) == 1  # same key, same text: the stored embedding


def test_ingest_reads_csv_and_parquet_where_an_empty_cell_leaves_the_column_alone(
    conn: psycopg.Connection[Any], adopted: Articles, tmp_path: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    vectors = np.random.default_rng(5).standard_normal((4, DIM)).astype(np.float32)
    csv_path = tmp_path / "articles.csv"
    csv_path.write_text("id,title,author_id,embedding\n" + "".join(
        f'{i},csv {i},{"" if i == 1 else 5},"{json.dumps(vectors[i - 1].tolist())}"\n'
        for i in (1, 2)))
    result = adopted.invoke("ingest", str(csv_path), "--table", "articles", "--batch-size", "1",
                            "--commit-each-batch")
    assert result.exit_code == 0, result.output
    assert "read 2 rows: 0 inserted, 2 updated" in result.stderr
    parquet_path = tmp_path / "articles.parquet"
    pq.write_table(pa.table({"id": [3, 9003], "title": ["pq 3", "pq new"],
                             "embedding": [v.tolist() for v in vectors[2:]]}), parquet_path)
    result = adopted.invoke("ingest", str(parquet_path), "--table", "articles")
    assert result.exit_code == 0, result.output
    assert "read 2 rows: 1 inserted, 1 updated" in result.stderr
    stored = conn.execute(sql.SQL(
        "SELECT id, title, author_id, embedding FROM {} WHERE id IN (1, 2, 3, 9003) ORDER BY id"
    ).format(sql.Identifier(adopted.schema, "articles"))).fetchall()
    assert [r[:3] for r in stored] == [(1, "csv 1", int(adopted.authors[0])), (2, "csv 2", 5),
                                       (3, "pq 3", int(adopted.authors[2])),
                                       (9003, "pq new", None)]
    for row, vector in zip(stored, vectors, strict=True):
        assert np.array_equal(row[3].to_numpy(), vector)  # float32 through text, exactly


def bad_cases(tmp_path: Path, conn: psycopg.Connection[Any], schema: str) -> list[
        tuple[str, list[str], str]]:
    good = [float(x) for x in np.random.default_rng(2).standard_normal(DIM)]
    conn.execute(sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, embedding vector({}))").format(
        sql.Identifier(schema, "plain"), sql.Literal(DIM)))
    query = query_file(tmp_path, good)
    return [
        ("unknown column in --where",
         ["search", "--vector", query, "--table", "articles", "--where", '{"nope": 1}'],
         "has no filterable column 'nope'"),
        ("--where not an object",
         ["search", "--vector", query, "--table", "articles", "--where", "[1]"],
         "--where must be a JSON object"),
        ("a table that was not adopted", ["search", "--vector", query, "--table", "plain"],
         "adopt it first (mrl-pg adopt plain --embedding COLUMN)"),
        ("--dim that disagrees with the catalog",
         ["search", "--vector", query, "--table", "articles", "--dim", "1536"],
         "but --dim 1536 was given"),
        ("unknown column in a record",
         ["ingest", write_jsonl(tmp_path / "unknown.jsonl", [
             {"id": 1, "title": "fine", "embedding": good},
             {"id": 2, "nope": 1, "also_not": 2, "embedding": good}]), "--table", "articles"],
         "unknown.jsonl:2: unknown columns 'nope', 'also_not'"),
        ("unknown column in a CSV header",
         ["ingest", str(_write(tmp_path / "unknown.csv", "id,nope,embedding\n")),
          "--table", "articles"],
         "unknown.csv:1: the header: unknown column 'nope'"),
        ("a value the column's type refuses",
         ["ingest", write_jsonl(tmp_path / "type.jsonl", [
             {"id": 1, "title": "fine", "embedding": good},
             {"id": 2, "author_id": "seven", "embedding": good}]), "--table", "articles"],
         'type.jsonl:2: author_id: invalid input syntax for type bigint: "seven"'),
        ("an object for a bigint column",
         ["ingest", write_jsonl(tmp_path / "object.jsonl", [
             {"id": 2, "author_id": {"n": 7}, "embedding": good}]), "--table", "articles"],
         "object.jsonl:1: author_id is a int8 column, got an object"),
        ("the same key twice",
         ["ingest", write_jsonl(tmp_path / "twice.jsonl", [
             {"id": 4, "embedding": good}, {"id": 4, "title": "again", "embedding": good}]),
          "--table", "articles"],
         "twice.jsonl:2: duplicate key (id)=(4), also on line 1"),
        ("no embedding and no text column",
         ["ingest", write_jsonl(tmp_path / "bare.jsonl", [{"id": 4, "body": "text"}]),
          "--table", "articles"],
         "bare.jsonl:1: no embedding embedding, and no text column named"),
        ("a text column that is not text",
         ["ingest", write_jsonl(tmp_path / "text.jsonl", [{"id": 4, "body": "text"}]),
          "--table", "articles", "--text-column", "author_id"],
         "text column 'author_id'"),
        ("an embedding of the wrong width",
         ["ingest", write_jsonl(tmp_path / "wide.jsonl", [{"id": 4, "embedding": [1.0] * 3}]),
          "--table", "articles"],
         "wide.jsonl:1: embedding has 3 dimensions"),
        ("--defer-index on an adopted table",
         ["ingest", write_jsonl(tmp_path / "ok.jsonl", [{"id": 4, "embedding": good}]),
          "--table", "articles", "--defer-index"],
         "--defer-index would drop the index"),
        ("a tenant on a table without a tenant column",
         ["ingest", str(tmp_path / "ok.jsonl"), "--table", "articles", "--tenant", "acme"],
         "has no tenant column"),
        ("adopting again with another prefix",
         ["adopt", "articles", "--prefix-dim", "32"], "release it first"),
        ("index drop on an adopted table",
         ["index", "drop", "--table", "articles"], "mrl-pg adopt --release articles"),
        ("delete on an adopted table",
         ["delete", "--id", "4", "--table", "articles"], "delete its rows with SQL"),
    ]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_bad_input_is_one_line_without_traceback_and_changes_nothing(
    conn: psycopg.Connection[Any], adopted: Articles, tmp_path: Path
) -> None:
    before = checksum(conn, adopted.schema)
    cases = bad_cases(tmp_path, conn, adopted.schema)
    for case, args, message in cases:
        result = adopted.invoke(*args)
        assert result.exit_code != 0, (case, result.output)
        assert "Traceback" not in result.output, case
        assert result.output.count("\n") == 1, (case, result.output)
        assert message in result.output, (case, result.output)
    assert checksum(conn, adopted.schema) == before
    assert len(cases) >= 15


def test_release_drops_the_index_and_the_function_and_leaves_the_rows(
    conn: psycopg.Connection[Any], adopted: Articles, tmp_path: Path
) -> None:
    before = checksum(conn, adopted.schema)
    index = f"{adopted.schema}.articles_embedding_prefix_hnsw"
    function = f"{adopted.schema}.mrl_search_articles"
    assert conn.execute("SELECT to_regclass(%s) IS NOT NULL", (index,)).fetchone() == (True,)
    released = adopted.invoke("adopt", "--release", "articles")
    assert released.exit_code == 0, released.output
    assert "function mrl_search_articles dropped, index articles_embedding_prefix_hnsw dropped" \
        in released.stdout
    assert conn.execute("SELECT to_regclass(%s) IS NULL", (index,)).fetchone() == (True,)
    assert conn.execute("SELECT count(*) FROM pg_proc WHERE oid::regprocedure::text LIKE %s",
                        (f"{function}(%",)).fetchone() == (0,)
    assert checksum(conn, adopted.schema) == before
    gone = adopted.invoke("search", "--vector", query_file(tmp_path, adopted.vectors[0]),
                          "--table", "articles")
    one_line_error(gone, "adopt it first")
    # A second release (a retried deploy script) has nothing to do, and says so.
    again = adopted.invoke("adopt", "--release", "articles")
    assert again.exit_code == 0, again.output
    assert again.stdout == (f"{adopted.schema}.articles: nothing adopted (no index "
                            "articles_embedding_prefix_hnsw, no function mrl_search_articles); "
                            "nothing to release\n")
    assert checksum(conn, adopted.schema) == before


def test_every_adopt_option_has_help_text() -> None:
    result = CliRunner().invoke(cli, ["adopt", "--help"])
    assert result.exit_code == 0
    for option in ("--embedding", "--prefix-dim", "--schema", "--key", "--columns",
                   "--metadata", "--tenant-column", "--release", "--dsn"):
        assert option in result.output, option


def test_values_of_any_type_go_in_as_text_and_come_out_as_json(
    conn: psycopg.Connection[Any], schema: str, schema_dsn: str, tmp_path: Path
) -> None:
    conn.execute(sql.SQL(
        "CREATE TABLE {} (id uuid PRIMARY KEY, at timestamptz, amount numeric(10, 2), "
        "tags text[], extra jsonb, embedding halfvec(8))").format(
            sql.Identifier(schema, "events")))
    args = ["--dsn", schema_dsn, "--schema", schema]
    first = "0b5f2f5e-3f7a-4d7e-9a53-0d2f8e1e6b01"
    path = write_jsonl(tmp_path / "events.jsonl", [
        {"id": first, "at": "2024-05-01T12:00:00Z", "amount": "12.50", "tags": ["a", "b"],
         "extra": {"k": [1, 2]}, "embedding": [1, 2, 3, 4, 5, 6, 7, 8]},
        {"id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "at": None, "amount": 3,
         "embedding": [8, 7, 6, 5, 4, 3, 2, 1]}])
    assert CliRunner().invoke(cli, ["adopt", "events", "--prefix-dim", "4", *args]).exit_code == 0
    loaded = CliRunner().invoke(cli, ["ingest", path, "--table", "events", *args])
    assert loaded.exit_code == 0, loaded.output
    assert "2 inserted" in loaded.stderr
    query = query_file(tmp_path, [1, 2, 3, 4, 5, 6, 7, 8])
    rows = json_lines(CliRunner().invoke(cli, ["search", "--vector", query, "--table", "events",
                                               "--json", "-k", "2", *args]))
    at = datetime.datetime.fromisoformat(rows[0].pop("at"))  # in the session's time zone
    assert at == datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.timezone.utc)
    assert rows[0] == {"id": first, "amount": "12.50", "tags": ["a", "b"],
                       "extra": {"k": [1, 2]}, "distance": pytest.approx(0.0, abs=1e-3)}
    assert rows[1]["at"] is None and rows[1]["amount"] == "3.00"
    text = CliRunner().invoke(cli, ["search", "--vector", query, "--table", "events", "-k", "1",
                                    *args])
    header, row = text.stdout.splitlines()
    assert header.split() == ["#", "distance", "id", "at", "amount", "tags", "extra"], text.output
    # A uuid whole and unquoted, a number as PostgreSQL prints it, JSON for arrays and objects.
    cells = re.split(r"\s{2,}", row)
    assert cells[:3] == ["1", "0.0000", first], text.output
    assert cells[4:] == ["12.50", '["a", "b"]', '{"k": [1, 2]}'], text.output


def test_tune_measures_the_adopted_table_with_a_where_workload_and_saves_it(
    conn: psycopg.Connection[Any], adopted: Articles
) -> None:
    config = describe_table(conn, "articles", schema=adopted.schema)
    bad = adopted.invoke("tune", "--table", "articles", "--where", '{"ghost": 1}',
                         "--queries", "5")
    one_line_error(bad, "no filterable column 'ghost'")
    assert load_tuning(conn, config) == DEFAULT_TUNING
    result = adopted.invoke("tune", "--table", "articles", "--where", '{"author_id": {"lt": 50}}',
                            "--queries", "20", "--rounds", "1", "--oversample", "4,8",
                            "--ef-search", "80", "--target-recall", "0.5", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["saved"] is True
    assert load_tuning(conn, config) != DEFAULT_TUNING
