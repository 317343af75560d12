"""A 20,000 x 1536 Matryoshka-like table shared by the search tests (read-only)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from mrl_pg import TableConfig, install
from mrl_pg.bench.synthetic import SyntheticCorpus, make_corpus, make_queries
from mrl_pg.db import configure_connection
from mrl_pg.statement.prefix import hnsw_index_ddl

CORPUS_ROWS = 20_000
CORPUS_DIM = 1536


@dataclass(frozen=True)
class LoadedCorpus:
    config: TableConfig
    corpus: SyntheticCorpus
    queries: npt.NDArray[np.float32]
    dsn: str


def copy_rows(
    conn: psycopg.Connection[Any],
    config: TableConfig,
    embeddings: npt.NDArray[np.float32],
    external_ids: list[str],
    metadata: list[dict[str, Any]] | None = None,
    contents: list[str] | None = None,
) -> None:
    """Plain binary COPY into the table (test setup only; ingest has its own tests).

    An existing prefix index is dropped for the load and built again after it, as
    ``--defer-index`` does: inserting rows one by one into an HNSW graph costs about a
    millisecond each, a bulk build a fraction of that.
    """
    index = conn.execute("SELECT to_regclass(%s)", (config.qualified(config.hnsw_index_name)
                                                   .as_string(conn),)).fetchone()
    rebuild = index is not None and index[0] is not None
    if rebuild:
        conn.execute(sql.SQL("DROP INDEX {}").format(config.qualified(config.hnsw_index_name)))
    statement = sql.SQL(
        "COPY {} (external_id, content, metadata, embedding) FROM STDIN WITH (FORMAT BINARY)"
    ).format(config.table)
    with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.set_types(["text", "text", "jsonb", "vector"])
        for i, vector in enumerate(embeddings):
            copy.write_row((
                external_ids[i],
                contents[i] if contents else f"document {external_ids[i]}",
                Jsonb(metadata[i] if metadata else {}),
                vector,
            ))
    if rebuild:
        conn.execute(hnsw_index_ddl(config))


@pytest.fixture(scope="session")
def corpus(database_dsn: str) -> Iterator[LoadedCorpus]:
    """Built once per session in its own schema: load first, then index, then ANALYZE."""
    schema = f"corpus_{uuid.uuid4().hex[:8]}"
    config = TableConfig("docs", schema=schema)
    data = make_corpus(CORPUS_ROWS, CORPUS_DIM, seed=1)
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        configure_connection(conn)
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        install(conn, config)
        conn.execute(sql.SQL("DROP INDEX {}").format(config.qualified(config.hnsw_index_name)))
        with conn.transaction():
            copy_rows(conn, config, data.embeddings, data.external_ids, data.metadata)
        conn.execute("SET maintenance_work_mem = '512MB'")
        from mrl_pg.statement.prefix import hnsw_index_ddl

        conn.execute(hnsw_index_ddl(config))
        conn.execute(sql.SQL("ANALYZE {}").format(config.table))
    yield LoadedCorpus(
        config=config, corpus=data, queries=make_queries(200, CORPUS_DIM, seed=1),
        dsn=database_dsn,
    )
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def corpus_conn(corpus: LoadedCorpus) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(corpus.dsn, autocommit=True) as conn:
        configure_connection(conn)
        yield conn
