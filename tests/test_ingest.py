"""Bulk ingest against the real server: file formats, upserts, errors by line, transactions, CLI."""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

from mrl_pg.cli._app import cli
from mrl_pg.config import TableConfig
from mrl_pg.errors import (
    DatabaseError,
    EmbeddingError,
    IngestError,
    InvalidConfigError,
    InvalidVectorError,
)
from mrl_pg.ingest.load import ingest_arrays, ingest_file, ingest_records
from mrl_pg.ingest.readers import count_records, read_records
from mrl_pg.schema.install import install

DIM = 64
PREFIX = 16


def vec(seed: int) -> list[float]:
    values: list[float] = np.random.default_rng(seed).standard_normal(DIM).tolist()
    return values


def record(i: int, **changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "external_id": f"doc-{i}",
        "content": f"text number {i}",
        "metadata": {"n": i, "tag": "even" if i % 2 == 0 else "odd"},
        "embedding": vec(i),
    }
    fields.update(changes)
    return fields


def write_jsonl(path: Path, lines: Sequence[dict[str, Any] | str]) -> Path:
    with open(path, "w", encoding="utf-8") as file:
        for line in lines:
            file.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    return path


def write_csv(path: Path, records: Sequence[dict[str, Any]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["external_id", "content", "metadata", "embedding"])
        for r in records:
            writer.writerow([r["external_id"], r.get("content") or "",
                             json.dumps(r["metadata"]) if "metadata" in r else "",
                             json.dumps(r["embedding"]) if r.get("embedding") else ""])
    return path


class HashEmbedder:
    """Deterministic embeddings from a hash of the text; counts what it was asked."""

    def __init__(self, dimensions: int = DIM) -> None:
        self.dimensions = dimensions
        self.texts: list[str] = []

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.texts.extend(texts)
        return np.stack([self.vector(t) for t in texts]).astype(np.float32)

    def vector(self, text: str) -> npt.NDArray[np.float32]:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        return np.random.default_rng(seed).standard_normal(self.dimensions).astype(np.float32)


class FailingEmbedder:
    dimensions = DIM

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        raise RuntimeError("the embedding service is down")


@pytest.fixture
def config(conn: psycopg.Connection[Any], schema: str) -> TableConfig:
    cfg = TableConfig("docs", full_dim=DIM, prefix_dim=PREFIX, schema=schema)
    install(conn, cfg)
    return cfg


@pytest.fixture
def preloaded(conn: psycopg.Connection[Any], config: TableConfig) -> TableConfig:
    """The table with doc-100 .. doc-102 already in it."""
    ingest_records(conn, config, [record(i) for i in range(100, 103)])
    return config


def state(conn: psycopg.Connection[Any], config: TableConfig) -> tuple[int, str]:
    """Row count and a checksum of every column and row version."""
    row = conn.execute(
        sql.SQL(
            "SELECT count(*), md5(coalesce(string_agg(concat_ws('|', id, external_id, content,"
            " metadata::text, embedding::text, xmin::text), E'\\n' ORDER BY id), ''))"
            " FROM {}"
        ).format(config.table)
    ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def rows(conn: psycopg.Connection[Any], config: TableConfig) -> dict[str, tuple[Any, ...]]:
    result = conn.execute(
        sql.SQL("SELECT external_id, content, metadata, embedding, xmin::text FROM {}").format(
            config.table)
    ).fetchall()
    return {r[0]: (r[1], r[2], r[3].to_numpy(), r[4]) for r in result}


# Loading each format


def test_a_jsonl_file_loads_every_field_of_every_record(
    conn: psycopg.Connection[Any], config: TableConfig, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", [record(i) for i in range(5)])
    report = ingest_file(conn, config, path, batch_size=2)
    assert (report.rows_read, report.inserted, report.updated, report.unchanged) == (5, 5, 0, 0)
    assert report.batches == 3
    stored = rows(conn, config)
    assert sorted(stored) == [f"doc-{i}" for i in range(5)]
    content, metadata, embedding, _ = stored["doc-3"]
    assert content == "text number 3"
    assert metadata == {"n": 3, "tag": "odd"}
    assert np.array_equal(embedding, np.array(vec(3), dtype=np.float32))


def test_a_csv_file_with_json_columns_loads_like_jsonl(
    conn: psycopg.Connection[Any], config: TableConfig, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "docs.csv", [record(i) for i in range(4)])
    report = ingest_file(conn, config, path)
    assert report.inserted == 4
    content, metadata, embedding, _ = rows(conn, config)["doc-2"]
    assert (content, metadata) == ("text number 2", {"n": 2, "tag": "even"})
    assert np.array_equal(embedding, np.array(vec(2), dtype=np.float32))


def test_a_parquet_file_with_list_embeddings_loads(
    conn: psycopg.Connection[Any], config: TableConfig, tmp_path: Path
) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    records = [record(i) for i in range(6)]
    table = pa.table({
        "external_id": [r["external_id"] for r in records],
        "content": [r["content"] for r in records],
        "metadata": [json.dumps(r["metadata"]) for r in records],
        "embedding": pa.array([r["embedding"] for r in records], type=pa.list_(pa.float32())),
    })
    path = tmp_path / "docs.parquet"
    pq.write_table(table, path)
    assert count_records(path) == 6
    report = ingest_file(conn, config, path)
    assert report.inserted == 6
    content, metadata, embedding, _ = rows(conn, config)["doc-5"]
    assert (content, metadata) == ("text number 5", {"n": 5, "tag": "odd"})
    assert np.array_equal(embedding, np.array(vec(5), dtype=np.float32))


def test_a_parquet_row_without_an_embedding_is_embedded_from_its_content(
    conn: psycopg.Connection[Any], config: TableConfig, tmp_path: Path
) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"external_id": ["a", "b"], "content": ["first", "second"],
                      "embedding": pa.array([vec(0), None], type=pa.list_(pa.float32()))})
    pq.write_table(table, tmp_path / "docs.parquet")
    embedder = HashEmbedder()
    assert ingest_file(conn, config, tmp_path / "docs.parquet", embedder=embedder).inserted == 2
    assert embedder.texts == ["second"]
    assert np.array_equal(rows(conn, config)["b"][2], embedder.vector("second"))


def test_a_parquet_row_is_named_by_its_row_number(
    conn: psycopg.Connection[Any], config: TableConfig, tmp_path: Path
) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    embeddings = [vec(0), vec(1), vec(2)[:10]]
    table = pa.table({"external_id": ["a", "b", "c"],
                      "embedding": pa.array(embeddings, type=pa.list_(pa.float64()))})
    pq.write_table(table, tmp_path / "bad.parquet")
    with pytest.raises(IngestError, match=r"bad\.parquet:3: embedding has 10 dimensions"):
        ingest_file(conn, config, tmp_path / "bad.parquet")
    assert state(conn, config)[0] == 0


def test_reading_parquet_without_pyarrow_says_how_to_install_it(
    config: TableConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(IngestError, match="pip install pyarrow"):
        list(read_records(tmp_path / "docs.parquet", config))


def test_the_format_option_overrides_the_extension(
    conn: psycopg.Connection[Any], config: TableConfig, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "docs.txt", [record(1)])
    with pytest.raises(IngestError, match="cannot tell the format"):
        ingest_file(conn, config, path)
    assert ingest_file(conn, config, path, format="ndjson").inserted == 1


def test_blank_jsonl_lines_are_skipped_and_line_numbers_stay_true(
    conn: psycopg.Connection[Any], config: TableConfig, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl",
                       [record(1), "", "   ", record(2), record(3, embedding=[1.0])])
    with pytest.raises(IngestError, match=r"docs\.jsonl:5: embedding has 1 dimensions"):
        ingest_file(conn, config, path)


def test_csv_line_numbers_count_the_header_and_multi_line_fields(
    conn: psycopg.Connection[Any], config: TableConfig, tmp_path: Path
) -> None:
    records = [record(1, content="first\nsecond\nthird"), record(2), record(3, embedding=[1.0])]
    path = write_csv(tmp_path / "docs.csv", records)
    # Header on line 1, record 1 on lines 2-4, record 2 on line 5, record 3 on line 6.
    with pytest.raises(IngestError, match=r"docs\.csv:6: embedding has 1 dimensions"):
        ingest_file(conn, config, path)


# Re-running and updating


def test_loading_the_same_file_again_writes_no_new_row_versions(
    conn: psycopg.Connection[Any], config: TableConfig, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", [record(i) for i in range(7)])
    ingest_file(conn, config, path, batch_size=3)
    before = state(conn, config)
    for _ in range(2):
        report = ingest_file(conn, config, path, batch_size=3)
        assert (report.inserted, report.updated, report.unchanged) == (0, 0, 7)
    assert state(conn, config) == before
    count = conn.execute(
        sql.SQL("SELECT count(DISTINCT external_id), count(*) FROM {}").format(config.table)
    ).fetchone()
    assert count == (7, 7)


def test_a_changed_line_updates_only_that_row_and_new_lines_are_inserted(
    conn: psycopg.Connection[Any], config: TableConfig, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", [record(i) for i in range(5)])
    ingest_file(conn, config, path)
    before = rows(conn, config)
    changed = [record(i) for i in range(5)]
    changed[2]["metadata"] = {"n": 2, "tag": "changed"}
    changed.append(record(5))
    report = ingest_file(conn, config, write_jsonl(tmp_path / "docs2.jsonl", changed))
    assert (report.inserted, report.updated, report.unchanged) == (1, 1, 4)
    after = rows(conn, config)
    assert after["doc-2"][1] == {"n": 2, "tag": "changed"}
    assert after["doc-2"][3] != before["doc-2"][3]
    assert all(after[f"doc-{i}"][3] == before[f"doc-{i}"][3] for i in (0, 1, 3, 4))
    assert "doc-5" in after


def test_metadata_key_order_does_not_count_as_a_change(
    conn: psycopg.Connection[Any], config: TableConfig
) -> None:
    ingest_records(conn, config, [record(1, metadata={"a": 1, "b": 2})])
    report = ingest_records(conn, config, [record(1, metadata={"b": 2, "a": 1})])
    assert report.unchanged == 1


# Errors and the all-or-nothing load


def test_malformed_json_on_line_7_in_batch_2_names_the_line_and_changes_nothing(
    conn: psycopg.Connection[Any], preloaded: TableConfig, tmp_path: Path
) -> None:
    lines: list[dict[str, Any] | str] = [record(i) for i in range(10)]
    lines[6] = '{"external_id": "doc-6", "content": "oops",'
    path = write_jsonl(tmp_path / "docs.jsonl", lines)
    before = state(conn, preloaded)
    with pytest.raises(IngestError) as caught:
        ingest_file(conn, preloaded, path, batch_size=4)
    assert str(caught.value).startswith(f"{path}:7: invalid JSON")
    assert (caught.value.path, caught.value.line) == (path, 7)
    assert state(conn, preloaded) == before


def test_commit_each_batch_keeps_the_batches_before_the_bad_one_and_nothing_of_it(
    conn: psycopg.Connection[Any], preloaded: TableConfig, tmp_path: Path
) -> None:
    lines: list[dict[str, Any] | str] = [record(i) for i in range(10)]
    lines[6] = "{not json"
    path = write_jsonl(tmp_path / "docs.jsonl", lines)
    with pytest.raises(IngestError, match=r":7: invalid JSON"):
        ingest_file(conn, preloaded, path, batch_size=4, commit_each_batch=True)
    assert sorted(rows(conn, preloaded)) == sorted(
        [f"doc-{i}" for i in range(4)] + [f"doc-{i}" for i in range(100, 103)]
    )


def test_commit_each_batch_into_an_empty_table_also_stops_at_the_bad_batch(
    conn: psycopg.Connection[Any], config: TableConfig, tmp_path: Path
) -> None:
    lines: list[dict[str, Any] | str] = [record(i) for i in range(10)]
    lines[6] = "{not json"
    path = write_jsonl(tmp_path / "docs.jsonl", lines)
    with pytest.raises(IngestError):
        ingest_file(conn, config, path, batch_size=4, commit_each_batch=True)
    assert sorted(rows(conn, config)) == [f"doc-{i}" for i in range(4)]


BAD_RECORDS = [
    pytest.param(record(2, embedding=vec(2)[:10]), "embedding has 10 dimensions, expected 64",
                 id="wrong-dimension"),
    pytest.param('{"external_id": "x", "embedding": [NaN' + ", 1.0" * (DIM - 1) + "]}",
                 "contains NaN", id="nan"),
    pytest.param('{"external_id": "x", "embedding": [Infinity' + ", 1.0" * (DIM - 1) + "]}",
                 "contains infinity", id="infinity"),
    pytest.param(record(2, embedding=["Infinity"] + [1.0] * (DIM - 1)),
                 "embedding must be an array of numbers only", id="infinity-as-string"),
    pytest.param(record(2, embedding=[0.0] * DIM), "zero vector", id="zero-vector"),
    pytest.param(record(2, embedding=[0.0] * PREFIX + [1.0] * (DIM - PREFIX)),
                 f"the first {PREFIX} dimensions are all zero", id="zero-prefix"),
    pytest.param(record(2, metadata=[1, 2]), "metadata must be a JSON object, got an array",
                 id="metadata-array"),
    pytest.param(record(2, metadata="{}"), "metadata must be a JSON object, got a string",
                 id="metadata-string"),
    pytest.param(record(2, title="x"),
                 "unknown field 'title'; allowed fields: external_id, content, metadata, embedding",
                 id="unknown-field"),
    pytest.param({"content": "no id", "embedding": vec(2)}, "external_id is missing",
                 id="missing-external-id"),
    pytest.param(record(2, external_id=1.5), "external_id must be a string, got a number",
                 id="float-external-id"),
    pytest.param(record(2, content=7), "content must be a string", id="content-number"),
    pytest.param(record(2, content="a\u0000b"), "NUL character", id="nul-in-content"),
    pytest.param(record(0), "duplicate external_id 'doc-0', also on line 1",
                 id="duplicate-external-id"),
    pytest.param(record(2, embedding=None, content=""), "no embedding, and no content",
                 id="nothing-to-embed"),
    pytest.param("[1, 2, 3]", "expected a JSON object, got an array", id="not-an-object"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_RECORDS)
def test_a_bad_record_names_file_and_line_and_changes_nothing(
    conn: psycopg.Connection[Any], preloaded: TableConfig, tmp_path: Path,
    bad: dict[str, Any] | str, message: str,
) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", [record(0), record(1), bad, record(3)])
    before = state(conn, preloaded)
    with pytest.raises(IngestError) as caught:
        ingest_file(conn, preloaded, path, embedder=HashEmbedder())
    assert str(caught.value).startswith(f"{path}:3: ")
    assert message in str(caught.value)
    assert state(conn, preloaded) == before


def test_integer_external_ids_are_stored_as_text(
    conn: psycopg.Connection[Any], config: TableConfig
) -> None:
    ingest_records(conn, config, [record(1, external_id=42)])
    assert "42" in rows(conn, config)


def test_a_database_error_names_the_batch_and_changes_nothing(
    conn: psycopg.Connection[Any], preloaded: TableConfig, tmp_path: Path
) -> None:
    conn.execute(sql.SQL(
        "CREATE FUNCTION {schema}.refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN IF NEW.external_id = 'boom' THEN RAISE EXCEPTION 'boom refused'; END IF;"
        " RETURN NEW; END $$"
    ).format(schema=sql.Identifier(str(preloaded.schema))))
    conn.execute(sql.SQL(
        "CREATE TRIGGER refuse_boom BEFORE INSERT ON {} FOR EACH ROW EXECUTE FUNCTION {}()"
    ).format(preloaded.table, preloaded.qualified("refuse_boom")))
    lines = [record(i) for i in range(10)]
    lines[5] = record(5, external_id="boom")
    path = write_jsonl(tmp_path / "docs.jsonl", lines)
    before = state(conn, preloaded)
    with pytest.raises(DatabaseError, match=r"lines 5-8: boom refused"):
        ingest_file(conn, preloaded, path, batch_size=4)
    assert state(conn, preloaded) == before


def test_a_table_of_another_dimension_is_refused_before_anything_is_read(
    conn: psycopg.Connection[Any], config: TableConfig
) -> None:
    other = TableConfig("docs", full_dim=32, prefix_dim=PREFIX, schema=config.schema)
    with pytest.raises(InvalidConfigError, match=r"vector\(64\).*full_dim=32"):
        ingest_records(conn, other, [])


def test_a_missing_table_is_a_database_error(
    conn: psycopg.Connection[Any], schema: str
) -> None:
    missing = TableConfig("nowhere", full_dim=DIM, prefix_dim=PREFIX, schema=schema)
    with pytest.raises(DatabaseError, match="nowhere does not exist"):
        ingest_records(conn, missing, [record(1)])


# Hostile text


def test_hostile_ids_content_and_metadata_are_stored_verbatim(
    conn: psycopg.Connection[Any], config: TableConfig, tmp_path: Path
) -> None:
    conn.execute(sql.SQL("CREATE TABLE {} (a int)").format(config.qualified("x")))
    hostile = "'); drop table x; --"
    records = [
        record(1, external_id=hostile, content=f'say "{hostile}" \\ \\\\ \t ü 💥',
               metadata={hostile: hostile, "nested": {"q": "'\"", "list": [hostile]}}),
        record(2, external_id='"; DELETE FROM docs; --', content="$$ $tag$ E'\\x00'"),
    ]
    jsonl = write_jsonl(tmp_path / "h.jsonl", records)
    ingest_file(conn, config, jsonl)
    ingest_file(conn, config, write_csv(tmp_path / "h.csv", records))  # same again via CSV
    stored = rows(conn, config)
    assert set(stored) == {hostile, '"; DELETE FROM docs; --'}
    assert stored[hostile][0] == records[0]["content"]
    assert stored[hostile][1] == records[0]["metadata"]
    assert stored['"; DELETE FROM docs; --'][0] == "$$ $tag$ E'\\x00'"
    assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
        config.qualified("x"))).fetchone() == (0,)


def test_a_literal_backslash_u0000_is_text_not_a_nul_character(
    conn: psycopg.Connection[Any], config: TableConfig
) -> None:
    ingest_records(conn, config, [record(1, content="\\u0000", metadata={"k": "\\u0000"})])
    content, metadata, _, _ = rows(conn, config)["doc-1"]
    assert (content, metadata) == ("\\u0000", {"k": "\\u0000"})


def test_a_nul_character_in_metadata_is_refused_with_its_record(
    conn: psycopg.Connection[Any], config: TableConfig
) -> None:
    with pytest.raises(IngestError, match="record 2: metadata contains a NUL character"):
        ingest_records(conn, config, [record(1), record(2, metadata={"k": "a\u0000b"})])


# Embedding records that have none


def test_records_without_an_embedding_are_embedded_from_their_content(
    conn: psycopg.Connection[Any], config: TableConfig, tmp_path: Path
) -> None:
    embedder = HashEmbedder()
    lines = [record(1), record(2, embedding=None), {"external_id": "doc-3", "content": "three"}]
    ingest_file(conn, config, write_jsonl(tmp_path / "docs.jsonl", lines), embedder=embedder)
    assert embedder.texts == ["text number 2", "three"]
    stored = rows(conn, config)
    assert np.array_equal(stored["doc-3"][2], embedder.vector("three"))
    assert np.array_equal(stored["doc-1"][2], np.array(vec(1), dtype=np.float32))


def test_a_rerun_does_not_embed_unchanged_content_again(
    conn: psycopg.Connection[Any], config: TableConfig, tmp_path: Path
) -> None:
    lines = [{"external_id": f"d{i}", "content": f"text {i}"} for i in range(5)]
    path = write_jsonl(tmp_path / "docs.jsonl", lines)
    ingest_file(conn, config, path, embedder=HashEmbedder())
    lines[3] = {"external_id": "d3", "content": "new text"}
    second = HashEmbedder()
    report = ingest_file(conn, config, write_jsonl(tmp_path / "docs2.jsonl", lines),
                         embedder=second)
    assert second.texts == ["new text"]
    assert (report.updated, report.unchanged) == (1, 4)
    forced = HashEmbedder()
    ingest_file(conn, config, path, embedder=forced, reuse_embeddings=False)
    assert len(forced.texts) == 5


def test_a_record_needing_an_embedding_without_an_embedder_names_its_line(
    conn: psycopg.Connection[Any], preloaded: TableConfig, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", [record(1), {"external_id": "e", "content": "x"}])
    before = state(conn, preloaded)
    with pytest.raises(IngestError, match=r"docs\.jsonl:2: no embedding, and no embedder"):
        ingest_file(conn, preloaded, path)
    assert state(conn, preloaded) == before


def test_an_embedder_that_fails_leaves_the_table_as_it_was(
    conn: psycopg.Connection[Any], preloaded: TableConfig, tmp_path: Path
) -> None:
    lines = [record(i) for i in range(6)] + [{"external_id": "e", "content": "needs one"}]
    path = write_jsonl(tmp_path / "docs.jsonl", lines)
    before = state(conn, preloaded)
    with pytest.raises(EmbeddingError, match=r"docs\.jsonl lines 5-7: the embedding service"):
        ingest_file(conn, preloaded, path, batch_size=4, embedder=FailingEmbedder())
    assert state(conn, preloaded) == before


def test_an_embedder_of_the_wrong_width_is_refused(
    conn: psycopg.Connection[Any], config: TableConfig
) -> None:
    with pytest.raises(InvalidConfigError, match="32-dimensional"):
        ingest_records(conn, config, [record(1)], embedder=HashEmbedder(dimensions=32))


# Records from Python


def test_records_from_python_are_checked_and_named_by_position(
    conn: psycopg.Connection[Any], config: TableConfig
) -> None:
    with pytest.raises(IngestError, match=r"^record 2: metadata must be a JSON object"):
        ingest_records(conn, config, [record(1), record(2, metadata=3)])
    assert state(conn, config)[0] == 0


def test_progress_is_reported_after_every_batch(
    conn: psycopg.Connection[Any], config: TableConfig
) -> None:
    seen: list[int] = []
    ingest_records(conn, config, [record(i) for i in range(7)], batch_size=3,
                   on_progress=seen.append)
    assert seen == [3, 6, 7]


def test_commit_each_batch_inside_an_open_transaction_is_refused(
    schema_dsn: str, config: TableConfig
) -> None:
    with psycopg.connect(schema_dsn) as other:
        other.execute("SELECT 1")
        with pytest.raises(InvalidConfigError, match="not inside a transaction"):
            ingest_records(other, config, [record(1)], commit_each_batch=True)


def test_a_load_joins_the_callers_transaction_and_rolls_back_with_it(
    schema_dsn: str, conn: psycopg.Connection[Any], config: TableConfig
) -> None:
    with psycopg.connect(schema_dsn) as other:
        other.execute("SELECT 1")
        ingest_records(other, config, [record(1), record(2)])
        other.rollback()
    assert state(conn, config)[0] == 0


# Arrays


def test_ingest_arrays_loads_a_matrix_then_upserts_on_the_next_call(
    conn: psycopg.Connection[Any], config: TableConfig
) -> None:
    matrix = np.stack([np.array(vec(i), dtype=np.float32) for i in range(50)])
    ids = [f"a{i}" for i in range(50)]
    metas = [{"bucket": i % 7} for i in range(50)]
    first = ingest_arrays(conn, config, matrix, external_ids=ids, metadatas=metas, batch_size=16)
    assert (first.inserted, first.batches) == (50, 4)
    stored = rows(conn, config)
    assert np.array_equal(stored["a17"][2], matrix[17])
    assert stored["a17"][1] == {"bucket": 3}
    before = state(conn, config)
    again = ingest_arrays(conn, config, matrix, external_ids=ids, metadatas=metas)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 50)
    assert state(conn, config) == before
    matrix[9] *= -1
    changed = ingest_arrays(conn, config, matrix, external_ids=ids, metadatas=metas)
    assert (changed.updated, changed.unchanged) == (1, 49)


def test_ingest_arrays_names_the_bad_row(
    conn: psycopg.Connection[Any], config: TableConfig
) -> None:
    matrix = np.ones((5, DIM), dtype=np.float32)
    matrix[3, 0] = np.nan
    with pytest.raises(InvalidVectorError, match="row 3"):
        ingest_arrays(conn, config, matrix, external_ids=list("abcde"))
    with pytest.raises(IngestError, match="row 4: duplicate external_id 'a', already in row 0"):
        ingest_arrays(conn, config, np.ones((5, DIM)), external_ids=list("abcda"))
    with pytest.raises(IngestError, match="external_ids has 2 items for 5 embeddings"):
        ingest_arrays(conn, config, np.ones((5, DIM)), external_ids=["a", "b"])
    with pytest.raises(IngestError, match="row 2: content contains a NUL character"):
        ingest_arrays(conn, config, np.ones((3, DIM)), external_ids=list("abc"),
                      contents=["x", None, "y\x00"])
    with pytest.raises(IngestError, match="row 1: metadata contains NaN"):
        ingest_arrays(conn, config, np.ones((3, DIM)), external_ids=list("abc"),
                      metadatas=[None, {"x": float("nan")}, {}])
    with pytest.raises(IngestError, match="row 2: metadata must be a JSON object"):
        ingest_arrays(conn, config, np.ones((3, DIM)), external_ids=list("abc"),
                      metadatas=[None, {}, ["x"]])  # type: ignore[list-item]
    with pytest.raises(IngestError, match="row 1: external_id must be a non-empty string"):
        ingest_arrays(conn, config, np.ones((3, DIM)), external_ids=["a", " ", "c"])
    assert state(conn, config)[0] == 0


# The command line


def cli_args(schema: str, dsn: str, *more: str) -> list[str]:
    return ["ingest", "--dsn", dsn, "--schema", schema, "--table", "docs",
            "--dim", str(DIM), "--prefix-dim", str(PREFIX), *more]


def test_cli_ingest_loads_a_file_and_prints_a_summary(
    conn: psycopg.Connection[Any], config: TableConfig, schema: str, schema_dsn: str,
    tmp_path: Path,
) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", [record(i) for i in range(5)])
    result = CliRunner().invoke(cli, cli_args(schema, schema_dsn, str(path)))
    assert result.exit_code == 0, result.output
    assert "read 5 rows: 5 inserted, 0 updated, 0 unchanged" in result.stderr
    assert "rows/s" in result.stderr
    again = CliRunner().invoke(cli, cli_args(schema, schema_dsn, str(path), "--batch-size", "2"))
    assert "0 inserted, 0 updated, 5 unchanged" in again.stderr
    assert state(conn, config)[0] == 5


def test_cli_bad_file_exits_1_with_one_error_line_and_no_traceback(
    conn: psycopg.Connection[Any], config: TableConfig, schema: str, schema_dsn: str,
    tmp_path: Path,
) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", [record(1), record(2, embedding=[0.0] * DIM)])
    result = CliRunner().invoke(cli, cli_args(schema, schema_dsn, str(path)))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"Error: {path}:2: embedding is the zero vector: cosine distance is undefined for it"
    ]
    assert "Traceback" not in result.output
    assert state(conn, config)[0] == 0


def test_cli_refuses_a_missing_table_and_creates_it_with_create(
    conn: psycopg.Connection[Any], schema: str, schema_dsn: str, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", [record(1)])
    refused = CliRunner().invoke(cli, cli_args(schema, schema_dsn, str(path)))
    assert refused.exit_code == 1
    assert "does not exist: pass --create" in refused.stderr
    created = CliRunner().invoke(cli, cli_args(schema, schema_dsn, str(path), "--create"))
    assert created.exit_code == 0, created.output
    config = TableConfig("docs", full_dim=DIM, prefix_dim=PREFIX, schema=schema)
    assert state(conn, config)[0] == 1


def watch_the_index_during_inserts(conn: psycopg.Connection[Any], config: TableConfig) -> None:
    """After each INSERT or COPY statement into the table, note whether its HNSW index exists."""
    seen, note = config.qualified("index_seen"), config.qualified("note_index")
    conn.execute(sql.SQL("CREATE TABLE {} (absent boolean NOT NULL)").format(seen))
    conn.execute(sql.SQL(
        "CREATE FUNCTION {note}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "INSERT INTO {seen} (absent) VALUES (to_regclass(TG_ARGV[0]) IS NULL); RETURN NULL; "
        "END $$"
    ).format(note=note, seen=seen))
    conn.execute(sql.SQL(
        "CREATE TRIGGER note_index AFTER INSERT ON {table} FOR EACH STATEMENT "
        "EXECUTE FUNCTION {note}({index})"
    ).format(table=config.table, note=note, index=sql.Literal(
        config.qualified(config.hnsw_index_name).as_string(conn))))


def index_seen(conn: psycopg.Connection[Any], config: TableConfig) -> list[bool]:
    """What :func:`watch_the_index_during_inserts` noted: True where the index was absent."""
    return [r[0] for r in conn.execute(
        sql.SQL("SELECT absent FROM {}").format(config.qualified("index_seen"))).fetchall()]


def hnsw_index_oid(conn: psycopg.Connection[Any], config: TableConfig) -> int | None:
    row = conn.execute("SELECT to_regclass(%s)::oid",
                       (config.qualified(config.hnsw_index_name).as_string(conn),)).fetchone()
    assert row is not None
    return None if row[0] is None else int(row[0])


def test_cli_defer_index_loads_without_the_hnsw_index_and_rebuilds_it(
    conn: psycopg.Connection[Any], config: TableConfig, schema: str, schema_dsn: str,
    tmp_path: Path,
) -> None:
    path = write_csv(tmp_path / "docs.csv", [record(i) for i in range(20)])
    before = hnsw_index_oid(conn, config)
    watch_the_index_during_inserts(conn, config)
    result = CliRunner().invoke(cli, cli_args(schema, schema_dsn, str(path), "--defer-index"))
    assert result.exit_code == 0, result.output
    assert "built the HNSW index" in result.stderr
    assert index_seen(conn, config) == [True]  # one COPY into the empty table, no index
    after = hnsw_index_oid(conn, config)
    assert before is not None and after is not None and after != before
    assert state(conn, config)[0] == 20


def test_cli_defer_index_restores_the_index_when_the_load_fails(
    conn: psycopg.Connection[Any], config: TableConfig, schema: str, schema_dsn: str,
    tmp_path: Path,
) -> None:
    """A batch is committed before the broken line, so the load did run without the index."""
    path = write_jsonl(tmp_path / "docs.jsonl", [record(1), "{broken"])
    before = hnsw_index_oid(conn, config)
    watch_the_index_during_inserts(conn, config)
    result = CliRunner().invoke(cli, cli_args(schema, schema_dsn, str(path), "--defer-index",
                                              "--commit-each-batch", "--batch-size", "1"))
    assert result.exit_code == 1
    assert f"Error: {path}:2: invalid JSON" in result.stderr
    assert index_seen(conn, config) == [True]
    assert "load failed; rebuilding the HNSW index" in result.stderr
    after = hnsw_index_oid(conn, config)
    assert before is not None and after is not None and after != before
    assert state(conn, config)[0] == 1


def test_cli_creates_the_embedding_client_only_when_a_record_needs_it(
    conn: psycopg.Connection[Any], config: TableConfig, schema: str, schema_dsn: str,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mrl_pg.embeddings

    made: list[dict[str, Any]] = []

    class FakeClient(HashEmbedder):
        def __init__(self, **options: Any) -> None:
            super().__init__(options["dimensions"])
            made.append(options)

        def close(self) -> None:
            pass

    monkeypatch.setattr(mrl_pg.embeddings, "EmbeddingClient", FakeClient)
    with_vectors = write_jsonl(tmp_path / "a.jsonl", [record(1)])
    result = CliRunner().invoke(cli, cli_args(schema, schema_dsn, str(with_vectors),
                                              "--model", "some-model"))
    assert result.exit_code == 0, result.output
    assert made == []
    text_only = write_jsonl(tmp_path / "b.jsonl", [{"external_id": "t", "content": "hello"}])
    result = CliRunner().invoke(cli, cli_args(schema, schema_dsn, str(text_only),
                                              "--model", "some-model"))
    assert result.exit_code == 0, result.output
    assert made == [{"model": "some-model", "dimensions": DIM}]
    assert np.array_equal(rows(conn, config)["t"][2], HashEmbedder().vector("hello"))


def test_every_ingest_option_has_help_text() -> None:
    result = CliRunner().invoke(cli, ["ingest", "--help"])
    assert result.exit_code == 0
    for option in ("--format", "--batch-size", "--create", "--commit-each-batch",
                   "--defer-index", "--model", "--re-embed", "--dsn"):
        line = next(line for line in result.output.splitlines() if option in line)
        assert len(line.split(option, 1)[1].strip()) > 5, line
