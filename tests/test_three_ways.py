"""The three ways in (psycopg, ORM, SQL function) agree, and the CLI path from file to search."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from psycopg import sql
from sqlalchemy import pool
from sqlalchemy.orm import DeclarativeBase, Session

from mrl_pg import TableConfig, install, search
from mrl_pg.cli._app import cli
from mrl_pg.db import create_engine
from mrl_pg.errors import EmbeddingError
from mrl_pg.ingest.load import ingest_file
from mrl_pg.sqlalchemy._search import MrlMixin
from mrl_pg.sqlalchemy._search import search as orm_search


def test_orm_psycopg_and_sql_function_return_identical_ids(corpus, corpus_conn):
    class Base(DeclarativeBase):
        pass

    class Document(MrlMixin, Base):
        mrl_config = corpus.config

    engine = create_engine(corpus.dsn, poolclass=pool.NullPool)
    function = corpus.config.qualified(corpus.config.search_function_name)
    with Session(engine) as session:
        for i, query in enumerate(corpus.queries[:15]):
            flt = {"lang": "fr"} if i % 3 == 0 else {}
            psycopg_ids = [r.id for r in search(corpus_conn, corpus.config, query, filter=flt)]
            orm_ids = [d.id for d, _ in orm_search(
                session, Document, query, where=[Document.meta.contains(flt)] if flt else ())]
            session.commit()
            function_ids = [r[0] for r in corpus_conn.execute(
                sql.SQL("SELECT id FROM {}(%s, 10, 8, %s)").format(function),
                (query, json.dumps(flt)),
            )]
            assert psycopg_ids == orm_ids == function_ids
            assert len(psycopg_ids) == 10
    engine.dispose()


def test_fresh_database_to_search_results_with_three_commands(fresh_database, tmp_path):
    rng = np.random.default_rng(11)
    vectors = rng.normal(size=(50, 1536)).astype(np.float32)
    path = tmp_path / "my_docs.jsonl"
    path.write_text("".join(
        json.dumps({"external_id": f"a{i}", "content": f"text {i}", "metadata": {"i": i},
                    "embedding": v.tolist()}) + "\n"
        for i, v in enumerate(vectors)
    ))
    np.save(tmp_path / "q.npy", vectors[7])
    runner = CliRunner()
    assert runner.invoke(cli, ["migrate", "--dsn", fresh_database]).exit_code == 0
    loaded = runner.invoke(cli, ["ingest", str(path), "--dsn", fresh_database])
    assert loaded.exit_code == 0, loaded.output
    found = runner.invoke(cli, ["search", "--vector", str(tmp_path / "q.npy"), "-k", "3",
                                "--json", "--dsn", fresh_database])
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout.splitlines()[0])["external_id"] == "a7"


def test_a_failing_embedding_server_leaves_the_table_as_it_was(
    conn, schema, tmp_path, openai_server, embedding_client
):
    config = TableConfig("docs", full_dim=256, prefix_dim=64, schema=schema)
    install(conn, config)
    path = tmp_path / "texts.jsonl"
    path.write_text("".join(
        json.dumps({"external_id": f"t{i}", "content": f"passage number {i}"}) + "\n"
        for i in range(30)
    ))
    ingest_file(conn, config, path, embedder=embedding_client, batch_size=10)
    before = conn.execute(sql.SQL("SELECT id, content, embedding::text FROM {} ORDER BY id")
                          .format(config.table)).fetchall()
    path.write_text("".join(
        json.dumps({"external_id": f"t{i}", "content": f"changed passage {i}"}) + "\n"
        for i in range(40)
    ))
    openai_server.fail_always(status=500)
    with pytest.raises(EmbeddingError):
        ingest_file(conn, config, path, embedder=embedding_client, batch_size=10)
    after = conn.execute(sql.SQL("SELECT id, content, embedding::text FROM {} ORDER BY id")
                         .format(config.table)).fetchall()
    assert after == before and len(after) == 30
