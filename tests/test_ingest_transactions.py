"""Ingest never calls the embedding service while it holds a transaction open.

The local OpenAI-compatible server looks up the ingesting backend in
``pg_stat_activity`` as each request arrives, so these tests see what
PostgreSQL saw: idle, or idle in transaction holding back vacuum.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

import mrl_pg.ingest.batches
from mrl_pg.config import TableConfig
from mrl_pg.embeddings import EmbeddingClient
from mrl_pg.errors import EmbeddingError
from mrl_pg.ingest.load import ingest_file, ingest_records
from mrl_pg.schema.install import install
from tests.fix_openai import FakeOpenAIServer, RecordedRequest, fake_embedding
from tests.test_ingest import state, write_jsonl

DIM = 256  # what the embedding_client fixture asks for
PREFIX = 64

BackendState = tuple[str | None, bool]
"""``pg_stat_activity.state`` and whether ``xact_start`` was set."""


def text_record(i: int) -> dict[str, Any]:
    return {"external_id": f"doc-{i}", "content": f"passage number {i}"}


def expected_embedding(i: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    return fake_embedding(f"passage number {i}", DIM).astype(np.float32)


@pytest.fixture
def config(conn: psycopg.Connection[Any], schema: str) -> TableConfig:
    """A table of the embedding client's width holding doc-0 .. doc-2 as the server embeds them."""
    cfg = TableConfig("docs", full_dim=DIM, prefix_dim=PREFIX, schema=schema)
    install(conn, cfg)
    ingest_records(conn, cfg, [
        {**text_record(i), "embedding": expected_embedding(i).tolist()} for i in range(3)
    ])
    return cfg


@pytest.fixture
def observer(schema_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A second connection, for reading pg_stat_activity while the load runs."""
    with psycopg.connect(schema_dsn, autocommit=True) as connection:
        yield connection


def watch(
    server: FakeOpenAIServer, observer: psycopg.Connection[Any], pid: int
) -> list[BackendState]:
    """Record the state of backend ``pid`` as each embedding request arrives."""
    seen: list[BackendState] = []

    def look(request: RecordedRequest) -> None:
        row = observer.execute(
            "SELECT state, xact_start IS NOT NULL FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
        seen.append((None, False) if row is None else (row[0], bool(row[1])))

    server.on_request(look)
    return seen


MODES = [
    pytest.param(False, True, id="all-or-nothing-autocommit"),
    pytest.param(False, False, id="all-or-nothing-transactional-connection"),
    pytest.param(True, True, id="commit-each-batch-autocommit"),
    pytest.param(True, False, id="commit-each-batch-transactional-connection"),
]


@pytest.mark.parametrize(("commit_each_batch", "autocommit"), MODES)
def test_no_embedding_request_arrives_while_the_load_has_a_transaction_open(
    schema_dsn: str, conn: psycopg.Connection[Any], config: TableConfig,
    observer: psycopg.Connection[Any], openai_server: FakeOpenAIServer,
    embedding_client: EmbeddingClient, tmp_path: Path,
    commit_each_batch: bool, autocommit: bool,
) -> None:
    # doc-0 .. doc-2 are stored with this content, so the first batch reuses
    # their embeddings (a database read); the other three batches are embedded.
    path = write_jsonl(tmp_path / "docs.jsonl", [text_record(i) for i in range(10)])
    with psycopg.connect(schema_dsn, autocommit=autocommit) as loader:
        seen = watch(openai_server, observer, loader.info.backend_pid)
        report = ingest_file(loader, config, path, batch_size=3, embedder=embedding_client,
                             commit_each_batch=commit_each_batch)
        assert loader.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert (report.inserted, report.unchanged) == (7, 3)
    assert [len(r.inputs) for r in openai_server.requests] == [3, 3, 1]
    assert seen == [("idle", False)] * 3
    stored = dict(conn.execute(
        "SELECT external_id, embedding FROM docs ORDER BY external_id").fetchall())
    for i in range(10):
        assert np.allclose(stored[f"doc-{i}"].to_numpy(), expected_embedding(i), atol=1e-6)


def test_an_embedding_server_failing_on_a_later_batch_leaves_the_table_as_it_was(
    conn: psycopg.Connection[Any], config: TableConfig, observer: psycopg.Connection[Any],
    openai_server: FakeOpenAIServer, embedding_client: EmbeddingClient, tmp_path: Path,
) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", [text_record(i) for i in range(3, 12)])
    before = state(conn, config)
    seen = watch(openai_server, observer, conn.info.backend_pid)
    openai_server.fail_after(1)
    with pytest.raises(EmbeddingError, match=r"could not embed .*docs\.jsonl lines 4-6: "):
        ingest_file(conn, config, path, batch_size=3, embedder=embedding_client)
    assert len(openai_server.requests) == 1 + 3  # the good batch, then the bad one and 2 retries
    assert seen == [("idle", False)] * 4
    assert state(conn, config) == before


def test_commit_each_batch_keeps_the_batches_embedded_before_the_server_failed(
    conn: psycopg.Connection[Any], config: TableConfig, observer: psycopg.Connection[Any],
    openai_server: FakeOpenAIServer, embedding_client: EmbeddingClient, tmp_path: Path,
) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", [text_record(i) for i in range(3, 12)])
    seen = watch(openai_server, observer, conn.info.backend_pid)
    openai_server.fail_after(1)
    with pytest.raises(EmbeddingError, match=r"docs\.jsonl lines 4-6: "):
        ingest_file(conn, config, path, batch_size=3, embedder=embedding_client,
                    commit_each_batch=True)
    assert seen == [("idle", False)] * 4
    stored = [r[0] for r in conn.execute("SELECT external_id FROM docs ORDER BY id").fetchall()]
    assert stored == [f"doc-{i}" for i in range(6)]


def test_a_load_joining_the_callers_transaction_embeds_inside_it_and_rolls_back_with_it(
    schema_dsn: str, conn: psycopg.Connection[Any], config: TableConfig,
    observer: psycopg.Connection[Any], openai_server: FakeOpenAIServer,
    embedding_client: EmbeddingClient,
) -> None:
    before = state(conn, config)
    with psycopg.connect(schema_dsn) as caller:
        caller.execute("SELECT 1")
        seen = watch(openai_server, observer, caller.info.backend_pid)
        report = ingest_records(caller, config, [text_record(i) for i in range(3, 8)],
                                batch_size=2, embedder=embedding_client)
        assert report.inserted == 5
        caller.rollback()
    assert [s for s, _ in seen] == ["idle in transaction"] * 3
    assert state(conn, config) == before


@pytest.fixture
def spools(monkeypatch: pytest.MonkeyPatch) -> list[tempfile.SpooledTemporaryFile[bytes]]:
    """Every spool file the loads of a test open; each spills to disk after its first byte."""
    made: list[tempfile.SpooledTemporaryFile[bytes]] = []
    real: Callable[..., tempfile.SpooledTemporaryFile[bytes]] = tempfile.SpooledTemporaryFile

    def spy(*args: Any, **kwargs: Any) -> tempfile.SpooledTemporaryFile[bytes]:
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", spy)
    monkeypatch.setattr(mrl_pg.ingest.batches, "_SPOOL_MEMORY_BYTES", 1)
    return made


def test_embedded_batches_spilled_to_disk_are_written_intact_and_the_file_closed(
    conn: psycopg.Connection[Any], config: TableConfig, embedding_client: EmbeddingClient,
    spools: list[tempfile.SpooledTemporaryFile[bytes]], tmp_path: Path,
) -> None:
    given = {"external_id": "given", "content": "x", "metadata": {"k": [1, "two"]},
             "embedding": expected_embedding(99).tolist()}
    lines = [text_record(i) for i in range(3, 10)] + [given]
    report = ingest_file(conn, config, write_jsonl(tmp_path / "docs.jsonl", lines),
                         batch_size=3, embedder=embedding_client)
    assert (report.inserted, report.batches) == (8, 3)
    assert len(spools) == 1
    assert spools[0]._rolled and spools[0].closed  # type: ignore[attr-defined]
    stored = {r[0]: (r[1], r[2], r[3].to_numpy()) for r in conn.execute(
        "SELECT external_id, content, metadata, embedding FROM docs").fetchall()}
    assert stored["given"][:2] == ("x", {"k": [1, "two"]})
    assert np.array_equal(stored["given"][2], expected_embedding(99))
    for i in range(3, 10):
        assert np.allclose(stored[f"doc-{i}"][2], expected_embedding(i), atol=1e-6)


def test_the_spool_file_is_closed_when_the_load_fails(
    conn: psycopg.Connection[Any], config: TableConfig, openai_server: FakeOpenAIServer,
    embedding_client: EmbeddingClient, spools: list[tempfile.SpooledTemporaryFile[bytes]],
) -> None:
    openai_server.fail_after(1)
    with pytest.raises(EmbeddingError):
        ingest_records(conn, config, [text_record(i) for i in range(3, 9)], batch_size=3,
                       embedder=embedding_client)
    assert len(spools) == 1 and spools[0].closed


def test_a_load_without_an_embedder_streams_without_a_spool(
    conn: psycopg.Connection[Any], config: TableConfig,
    spools: list[tempfile.SpooledTemporaryFile[bytes]],
) -> None:
    records = [{**text_record(i), "embedding": expected_embedding(i).tolist()}
               for i in range(3, 9)]
    seen: list[int] = []
    report = ingest_records(conn, config, records, batch_size=4, on_progress=seen.append)
    assert (report.inserted, seen) == (6, [4, 6])
    assert spools == []
