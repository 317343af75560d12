"""Tenants: a key unique per tenant, searches scoped to one tenant, no cross-tenant overwrite."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from click.testing import CliRunner, Result
from psycopg import sql

from mrl_pg.cli._app import cli
from mrl_pg.config import TableConfig
from mrl_pg.errors import IngestError, InvalidConfigError
from mrl_pg.ingest.load import ingest_arrays, ingest_records
from mrl_pg.psycopg._search import exact_search, search
from mrl_pg.schema.catalog import describe_table
from mrl_pg.schema.install import install
from tests.test_adopt_cli import DIM as ADOPTED_DIM
from tests.test_adopt_cli import PREFIX as ADOPTED_PREFIX
from tests.test_adopt_cli import one_line_error, query_file, write_jsonl

DIM = 64
PREFIX = 16


def vec(seed: int, dim: int = DIM) -> list[float]:
    values: list[float] = np.random.default_rng(seed).standard_normal(dim).tolist()
    return values


@pytest.fixture
def tenanted(conn: psycopg.Connection[Any], schema: str) -> TableConfig:
    config = TableConfig("docs", full_dim=DIM, prefix_dim=PREFIX, schema=schema,
                         tenant_column="tenant")
    install(conn, config)
    return config


def rows_of(conn: psycopg.Connection[Any], config: TableConfig) -> list[tuple[Any, ...]]:
    return conn.execute(sql.SQL(
        "SELECT tenant, external_id, content FROM {} ORDER BY tenant, external_id"
    ).format(config.table)).fetchall()


def test_two_tenants_ingesting_art_1_get_two_rows_and_each_search_sees_its_own(
    conn: psycopg.Connection[Any], tenanted: TableConfig
) -> None:
    first = ingest_records(conn, tenanted, [
        {"external_id": "art-1", "content": "acme's", "embedding": vec(1)}], tenant="acme")
    second = ingest_records(conn, tenanted, [
        {"external_id": "art-1", "content": "globex's", "embedding": vec(2)}], tenant="globex")
    assert (first.inserted, first.updated) == (1, 0)
    assert (second.inserted, second.updated) == (1, 0)  # was "0 inserted, 1 updated"
    assert rows_of(conn, tenanted) == [("acme", "art-1", "acme's"),
                                       ("globex", "art-1", "globex's")]
    for tenant, content in (("acme", "acme's"), ("globex", "globex's")):
        # Query with the *other* tenant's vector: scoping, not nearness, decides.
        other = vec(2) if tenant == "acme" else vec(1)
        for found in (search(conn, tenanted, other, k=5, tenant=tenant),
                      exact_search(conn, tenanted, other, k=5, tenant=tenant)):
            assert [(r.tenant, r.content) for r in found] == [(tenant, content)]
    again = ingest_records(conn, tenanted, [
        {"external_id": "art-1", "content": "acme's, edited", "embedding": vec(1)}],
        tenant="acme")
    assert (again.inserted, again.updated) == (0, 1)
    assert rows_of(conn, tenanted)[1] == ("globex", "art-1", "globex's")


def test_ingest_arrays_and_stored_embeddings_stay_within_the_tenant(
    conn: psycopg.Connection[Any], tenanted: TableConfig
) -> None:
    ingest_arrays(conn, tenanted, np.array([vec(1)]), external_ids=["a"], contents=["same"],
                  tenant="acme")

    class Counting:
        dimensions = DIM
        texts: list[str] = []

        def embed(self, texts: Sequence[str]) -> Any:
            self.texts.extend(texts)
            return np.array([vec(9) for _ in texts], dtype=np.float32)

    embedder = Counting()
    report = ingest_records(conn, tenanted, [{"external_id": "a", "content": "same"}],
                            embedder=embedder, tenant="globex")
    # acme's stored embedding of the same id and content is not globex's to reuse.
    assert report.inserted == 1 and embedder.texts == ["same"]
    stored = dict(conn.execute(sql.SQL("SELECT tenant, embedding FROM {}").format(
        tenanted.table)).fetchall())
    assert np.allclose(stored["acme"].to_numpy(), vec(1), atol=1e-6)
    assert np.allclose(stored["globex"].to_numpy(), vec(9), atol=1e-6)


@pytest.mark.parametrize(("tenant", "message"), [
    (None, "has the tenant column 'tenant': name the tenant"),
    ("", "the tenant must be a non-empty string"),
])
def test_a_tenant_table_refuses_a_load_without_its_tenant(
    conn: psycopg.Connection[Any], tenanted: TableConfig, tenant: str | None, message: str
) -> None:
    with pytest.raises(InvalidConfigError, match=message):
        ingest_records(conn, tenanted, [{"external_id": "x", "embedding": vec(1)}],
                       tenant=tenant)
    with pytest.raises(InvalidConfigError, match="has no tenant column"):
        ingest_records(conn, TableConfig("docs", full_dim=DIM, prefix_dim=PREFIX),
                       [{"external_id": "x", "embedding": vec(1)}], tenant="acme")
    assert rows_of(conn, tenanted) == []


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_cli_creates_a_tenant_table_ingests_per_tenant_and_scopes_search(
    conn: psycopg.Connection[Any], schema: str, schema_dsn: str, tmp_path: Path
) -> None:
    table = ["--dsn", schema_dsn, "--schema", schema, "--table", "docs"]
    acme = write_jsonl(tmp_path / "acme.jsonl", [
        {"external_id": "art-1", "content": "acme one", "embedding": vec(1)},
        {"external_id": "art-2", "content": "acme two", "embedding": vec(3)}])
    globex = write_jsonl(tmp_path / "globex.jsonl", [
        {"external_id": "art-1", "content": "globex one", "embedding": vec(2)}])
    created = invoke("ingest", acme, *table, "--dim", str(DIM), "--prefix-dim", str(PREFIX),
                     "--create", "--tenant-column", "tenant", "--tenant", "acme")
    assert created.exit_code == 0, created.output
    assert "2 inserted, 0 updated" in created.stderr
    second = invoke("ingest", globex, *table, "--tenant", "globex")
    assert second.exit_code == 0, second.output
    assert "read 1 rows: 1 inserted, 0 updated, 0 unchanged" in second.stderr
    config = describe_table(conn, "docs", schema=schema)
    assert config.tenant_column == "tenant" and len(rows_of(conn, config)) == 3

    query = query_file(tmp_path, vec(2))
    for tenant, expected in (("acme", {"art-1", "art-2"}), ("globex", {"art-1"})):
        result = invoke("search", "--vector", query, *table, "--tenant", tenant, "--json")
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        assert {r["tenant"] for r in rows} == {tenant}
        assert {r["external_id"] for r in rows} == expected
    unscoped = invoke("search", "--vector", query, *table, "--json")
    assert len(unscoped.stdout.splitlines()) == 3

    one_line_error(invoke("ingest", globex, *table), "name the tenant the rows belong to")
    one_line_error(invoke("ingest", globex, *table, "--tenant-column", "org", "--tenant", "x"),
                   "exists with the tenant column 'tenant'")
    one_line_error(invoke("delete", "--id", "art-1", *table),
                   "has a tenant column (tenant): name the tenant whose rows to delete")
    one_line_error(invoke("delete", "--filter", "{}", "--tenant", "acme", *table),
                   "an empty filter matches every row")
    assert len(rows_of(conn, config)) == 3
    deleted = invoke("delete", "--id", "art-1", "--tenant", "globex", *table)
    assert deleted.exit_code == 0, deleted.output
    assert "deleted 1 rows" in deleted.stdout
    left = {(r.tenant, r.external_id) for r in search(conn, config, vec(2), k=10)}
    assert left == {("acme", "art-1"), ("acme", "art-2")}  # acme's art-1 stays


@pytest.fixture
def adopted_with_tenants(conn: psycopg.Connection[Any], schema: str, schema_dsn: str) -> list[str]:
    """An application's table with an ``org`` column whose key (id) does not include it."""
    table = sql.Identifier(schema, "notes")
    conn.execute(sql.SQL(
        "CREATE TABLE {} (id bigint PRIMARY KEY, org text NOT NULL, note text, "
        "embedding vector({}))").format(table, sql.Literal(ADOPTED_DIM)))
    with conn.cursor() as cur, cur.copy(sql.SQL(
            "COPY {} (id, org, note, embedding) FROM STDIN WITH (FORMAT BINARY)"
    ).format(table)) as copy:
        copy.set_types(["int8", "text", "text", "vector"])
        for i in range(1, 401):
            copy.write_row((i, "acme" if i % 2 else "globex", f"note {i}",
                            np.asarray(vec(i, ADOPTED_DIM), dtype=np.float32)))
    args = ["--dsn", schema_dsn, "--schema", schema]
    result = invoke("adopt", "notes", "--prefix-dim", str(ADOPTED_PREFIX), "--tenant-column",
                    "org", *args)
    assert result.exit_code == 0, result.output
    assert "tenant column org" in result.stdout
    return args


def notes(conn: psycopg.Connection[Any], schema: str) -> list[tuple[Any, ...]]:
    return conn.execute(sql.SQL("SELECT id, org, note, embedding::text FROM {} ORDER BY id")
                        .format(sql.Identifier(schema, "notes"))).fetchall()


def test_an_adopted_table_never_overwrites_another_tenants_row(
    conn: psycopg.Connection[Any], schema: str, adopted_with_tenants: list[str],
    tmp_path: Path,
) -> None:
    before = notes(conn, schema)
    # Row 2 belongs to globex; acme's load names it among rows of its own (1, 3) and a new one.
    path = write_jsonl(tmp_path / "acme.jsonl", [
        {"id": 1, "note": "acme edits its own", "embedding": vec(1, ADOPTED_DIM)},
        {"id": 3, "note": "and another", "embedding": vec(3, ADOPTED_DIM)},
        {"id": 2, "note": "acme takes globex's row", "embedding": vec(99, ADOPTED_DIM)},
        {"id": 1000, "note": "new", "embedding": vec(1000, ADOPTED_DIM)}])
    result = invoke("ingest", path, "--table", "notes", "--tenant", "acme",
                    *adopted_with_tenants)
    one_line_error(result, f"{path}:3: (id)=(2) is a row of another tenant")
    assert "globex" not in result.output
    assert notes(conn, schema) == before  # nothing written, acme's own rows included

    config = describe_table(conn, "notes", schema=schema)
    with pytest.raises(IngestError, match=r"record 1: \(id\)=\(4\) is a row of another tenant"):
        ingest_records(conn, config, [{"id": 4, "note": "x", "embedding": vec(4, ADOPTED_DIM)}],
                       tenant="acme")
    with pytest.raises(IngestError, match="org is 'globex', but this load is for tenant 'acme'"):
        ingest_records(conn, config, [{"id": 4, "org": "globex", "note": "x",
                                       "embedding": vec(4, ADOPTED_DIM)}], tenant="acme")
    assert notes(conn, schema) == before

    own = write_jsonl(tmp_path / "own.jsonl", [
        {"id": 1, "note": "acme edits its own", "embedding": vec(1, ADOPTED_DIM)},
        {"id": 1000, "note": "new", "embedding": vec(1000, ADOPTED_DIM)}])
    fine = invoke("ingest", own, "--table", "notes", "--tenant", "acme", *adopted_with_tenants)
    assert fine.exit_code == 0, fine.output
    assert "1 inserted, 1 updated" in fine.stderr
    after = {r[0]: r[1:3] for r in notes(conn, schema)}
    assert after[1] == ("acme", "acme edits its own") and after[1000] == ("acme", "new")
    assert after[2] == ("globex", "note 2")


def test_search_on_an_adopted_table_is_scoped_to_the_tenant(
    adopted_with_tenants: list[str], tmp_path: Path
) -> None:
    query = query_file(tmp_path, vec(2, ADOPTED_DIM))  # row 2 is globex's
    for tenant in ("acme", "globex"):
        result = invoke("search", "--vector", query, "--table", "notes", "--tenant", tenant,
                        "--json", "-k", "10", *adopted_with_tenants)
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        assert len(rows) == 10 and {r["org"] for r in rows} == {tenant}
        assert (rows[0]["id"] == 2) == (tenant == "globex")
