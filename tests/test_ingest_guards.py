"""Ingest guards a mutation run found unwatched: each test fails when its guard is removed."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import pytest

from mrl_pg.config import TableConfig
from mrl_pg.errors import EmbeddingError, IngestError, InvalidVectorError
from mrl_pg.ingest.load import ingest_arrays, ingest_records
from mrl_pg.schema.install import install
from tests.test_ingest import DIM, PREFIX, record, state


@pytest.fixture
def config(conn: psycopg.Connection[Any], schema: str) -> TableConfig:
    table = TableConfig("docs", full_dim=DIM, prefix_dim=PREFIX, schema=schema)
    install(conn, table)
    ingest_records(conn, table, [record(0)])  # not empty: later loads go through staging
    return table


def _temp_tables(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema() "
                       "AND relkind = 'r'").fetchone()
    assert row is not None
    return int(row[0])


def test_the_staging_table_is_gone_when_the_load_commits(conn, config):
    before = _temp_tables(conn)
    ingest_records(conn, config, [record(i) for i in range(1, 30)], batch_size=10)
    ingest_records(conn, config, [record(i) for i in range(30, 40)], commit_each_batch=True,
                   batch_size=5)
    assert _temp_tables(conn) == before


class WrongShape:
    dimensions = DIM

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        return np.ones((len(texts) + 1, DIM), dtype=np.float32)  # one embedding too many


def test_an_embedder_returning_the_wrong_shape_is_an_embedding_error_and_writes_nothing(
    conn, config
):
    before = state(conn, config)
    missing = [record(i, embedding=None) for i in range(1, 4)]
    with pytest.raises(EmbeddingError, match=r"asked for 3 embeddings of 64 dimensions, the "
                                             r"embedder returned shape \(4, 64\)"):
        ingest_records(conn, config, missing, embedder=WrongShape())
    assert state(conn, config) == before


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_a_blank_external_id_is_refused_by_line(conn, config, blank):
    before = state(conn, config)
    with pytest.raises(IngestError, match="record 2: .*external_id"):
        ingest_records(conn, config, [record(1), record(2, external_id=blank)])
    assert state(conn, config) == before


def test_an_array_row_whose_prefix_is_zero_is_refused_by_row_number(conn, config):
    matrix = np.random.default_rng(3).standard_normal((5, DIM)).astype(np.float32)
    matrix[3, :PREFIX] = 0.0
    before = state(conn, config)
    with pytest.raises(InvalidVectorError, match=f"row 3: .*first {PREFIX} dimensions"):
        ingest_arrays(conn, config, matrix, external_ids=[f"a{i}" for i in range(5)])
    assert state(conn, config) == before
