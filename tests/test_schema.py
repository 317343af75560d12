"""The table that the one-source DDL creates, read back from the catalog."""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

from mrl_pg import TableConfig, create_ddl, install
from mrl_pg.errors import DatabaseError, InvalidVectorError
from mrl_pg.schema.search_function import SEARCH_FUNCTION_ARGS
from mrl_pg.schema.tables import check_constraints, render
from mrl_pg.vectors import as_embedding, truncate_and_normalize
from tests.catalog import describe_table


def _insert(conn: psycopg.Connection[Any], config: TableConfig, vector: Any, eid: str) -> None:
    conn.execute(
        sql.SQL("INSERT INTO {} (external_id, embedding) VALUES (%s, %s)").format(config.table),
        (eid, vector),
    )


def _count(conn: psycopg.Connection[Any], config: TableConfig) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(config.table)).fetchone()
    assert row is not None
    return int(row[0])


def test_default_table_has_the_documented_columns_and_types(conn, schema):
    install(conn, TableConfig(schema=schema))
    table = describe_table(conn, schema, "mrl_documents")
    columns = {c[0]: c for c in table["columns"]}
    assert list(columns) == [
        "id", "external_id", "content", "metadata", "embedding", "embedding_prefix", "created_at"
    ]
    assert columns["id"][1] == "bigint" and columns["id"][4] == "a"  # identity ALWAYS
    assert columns["embedding"][1:3] == ("vector(1536)", True)
    assert columns["embedding_prefix"][1] == "halfvec(512)"
    assert columns["embedding_prefix"][3] == "s"  # generated, stored
    assert columns["embedding_prefix"][5] == (
        "(l2_normalize(subvector(embedding, 1, 512)))::halfvec(512)"
    )
    assert columns["metadata"][1:3] == ("jsonb", True)
    assert columns["created_at"][1] == "timestamp with time zone"


def test_default_table_has_hnsw_on_the_prefix_and_gin_on_metadata(conn, schema):
    install(conn, TableConfig(schema=schema))
    indexes = dict(describe_table(conn, schema, "mrl_documents")["indexes"])
    hnsw = indexes["mrl_documents_embedding_prefix_hnsw"]
    assert "USING hnsw (embedding_prefix halfvec_cosine_ops)" in hnsw
    assert "m='16'" in hnsw and "ef_construction='128'" in hnsw
    assert "USING gin (metadata jsonb_path_ops)" in indexes["mrl_documents_metadata_gin"]
    methods = conn.execute(
        "SELECT am.amname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_am am ON am.oid = c.relam WHERE c.relname = %s",
        ("mrl_documents_embedding_prefix_hnsw",),
    ).fetchone()
    assert methods == ("hnsw",)


def test_hnsw_parameters_come_from_the_config(conn, schema):
    install(conn, TableConfig("tuned", schema=schema, hnsw_m=24, hnsw_ef_construction=100))
    indexes = dict(describe_table(conn, schema, "tuned")["indexes"])
    assert "m='24'" in indexes["tuned_embedding_prefix_hnsw"]
    assert "ef_construction='100'" in indexes["tuned_embedding_prefix_hnsw"]


def test_stored_prefix_is_numpys_truncate_and_renormalize_at_halfvec_precision(conn, schema):
    config = TableConfig("docs", full_dim=1536, prefix_dim=512, schema=schema)
    install(conn, config)
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(5, 1536)).astype(np.float32) * rng.uniform(0.1, 10, (5, 1))
    for i, v in enumerate(vectors):
        _insert(conn, config, v, f"v{i}")
    rows = conn.execute("SELECT embedding_prefix FROM docs ORDER BY id").fetchall()
    expected = truncate_and_normalize(vectors, 512).astype(np.float16)
    for (stored,), want in zip(rows, expected, strict=True):
        got = stored.to_numpy()
        assert got.dtype == np.float16
        np.testing.assert_array_equal(got, want)
        assert abs(np.linalg.norm(got.astype(np.float64)) - 1) < 1e-3


@pytest.mark.parametrize(
    ("full_dim", "prefix_dim"), [(3072, 512), (3072, 256), (384, 128), (1536, 512)]
)
def test_custom_dimensions_create_matching_columns(conn, schema, full_dim, prefix_dim):
    config = TableConfig(f"t_{full_dim}_{prefix_dim}", full_dim=full_dim, prefix_dim=prefix_dim,
                         schema=schema)
    install(conn, config)
    columns = {c[0]: c[1] for c in describe_table(conn, schema, config.name)["columns"]}
    assert columns["embedding"] == f"vector({full_dim})"
    assert columns["embedding_prefix"] == f"halfvec({prefix_dim})"
    vector = np.linspace(1, 2, full_dim, dtype=np.float32)
    _insert(conn, config, vector, "one")
    stored = conn.execute(
        sql.SQL("SELECT embedding_prefix FROM {}").format(config.table)
    ).fetchone()
    assert stored is not None
    np.testing.assert_array_equal(
        stored[0].to_numpy(), truncate_and_normalize(vector, prefix_dim).astype(np.float16)
    )


@pytest.mark.parametrize(
    ("vector", "sqlstate", "check", "message"),
    [
        (np.ones(100, dtype=np.float32), "22000", None, "expected 64 dimensions, not 100"),
        (np.r_[np.ones(63), np.nan].astype(np.float32), "22000", None,
         "NaN not allowed in vector"),
        (np.r_[np.ones(63), np.inf].astype(np.float32), "22000", None,
         "infinite value not allowed in vector"),
        (np.zeros(64, dtype=np.float32), "23514", "nonzero_check_name",
         'violates check constraint "docs_embedding_nonzero"'),
        (np.r_[np.zeros(16), np.ones(48)].astype(np.float32), "23514",
         "prefix_nonzero_check_name", 'violates check constraint "docs_embedding_prefix_nonzero"'),
    ],
    ids=["wrong-dimension", "nan", "infinity", "zero-vector", "zero-prefix"],
)
def test_database_rejects_bad_vectors_and_leaves_the_table_unchanged(
    conn, schema, vector, sqlstate, check, message
):
    """pgvector refuses malformed vectors itself; each zero case trips its own named CHECK."""
    config = TableConfig("docs", full_dim=64, prefix_dim=16, schema=schema)
    install(conn, config)
    _insert(conn, config, np.ones(64, dtype=np.float32), "good")
    with pytest.raises(psycopg.Error, match=message) as excinfo:
        _insert(conn, config, vector, "bad")
    assert excinfo.value.sqlstate == sqlstate
    constraint = getattr(config, check) if check else None
    assert constraint is None or constraint in dict(check_constraints(config))
    assert excinfo.value.diag.constraint_name == constraint
    assert _count(conn, config) == 1


@pytest.mark.parametrize(
    ("vector", "message"),
    [
        (np.ones(100), "has 100 dimensions, expected 64"),
        (np.r_[np.ones(63), np.nan], "contains NaN at index 63"),
        (np.r_[np.ones(63), -np.inf], "contains infinity at index 63"),
        (np.zeros(64), "is the zero vector"),
        (np.r_[np.zeros(16), np.ones(48)], "first 16 dimensions are all zero"),
        ("[1,2,3]", "not a list of numbers"),
        (None, "is missing"),
    ],
)
def test_client_side_check_names_the_problem(vector, message):
    with pytest.raises(InvalidVectorError, match=message.replace("[", r"\[")):
        as_embedding(vector, 64, prefix_dim=16)


def test_metadata_must_be_a_json_object(conn, schema):
    config = TableConfig("docs", full_dim=8, prefix_dim=4, schema=schema)
    install(conn, config)
    with pytest.raises(psycopg.errors.CheckViolation, match="docs_metadata_object"):
        conn.execute(
            "INSERT INTO docs (embedding, metadata) VALUES ('[1,1,1,1,1,1,1,1]', '[1, 2]')"
        )


def test_clients_cannot_write_the_prefix(conn, schema):
    config = TableConfig("docs", full_dim=8, prefix_dim=4, schema=schema)
    install(conn, config)
    with pytest.raises(psycopg.errors.GeneratedAlways):
        conn.execute(
            "INSERT INTO docs (embedding, embedding_prefix) "
            "VALUES ('[1,1,1,1,1,1,1,1]', '[1,0,0,0]')"
        )


def test_install_is_all_or_nothing(conn, schema):
    """The search function is created last; when it fails, the table and its indexes go too."""
    config = TableConfig("docs", full_dim=8, prefix_dim=4, schema=schema)
    last = render(create_ddl(config)[-1])
    assert last.startswith("DO $mrl_pg_install$") and "CREATE OR REPLACE FUNCTION" in last
    # Same name and argument types, another return type: CREATE OR REPLACE cannot replace it.
    conn.execute(sql.SQL("CREATE FUNCTION {}({}) RETURNS integer LANGUAGE sql AS 'SELECT 1'")
                 .format(config.qualified(config.search_function_name),
                         sql.SQL(SEARCH_FUNCTION_ARGS)))
    with pytest.raises(DatabaseError, match=f"could not create {schema}.docs: .*return type"
                       ) as excinfo:
        install(conn, config)
    assert isinstance(excinfo.value.__cause__, psycopg.errors.InvalidFunctionDefinition)
    left = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s", (schema,)
    ).fetchall()
    assert left == []


def test_installing_over_an_existing_table_is_refused(conn, schema):
    config = TableConfig("docs", full_dim=8, prefix_dim=4, schema=schema)
    install(conn, config)
    _insert(conn, config, np.ones(8, dtype=np.float32), "kept")
    with pytest.raises(DatabaseError, match=f"could not create {schema}.docs: .*already exists"):
        install(conn, config)
    assert _count(conn, config) == 1
