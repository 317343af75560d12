"""Adopting a table again: another prefix is refused (library, Alembic, CLI), what was
recorded is kept, and the search function follows the table's columns with its grants."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner, Result
from psycopg import sql
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from mrl_pg import TableConfig
from mrl_pg import alembic as mrl_alembic
from mrl_pg.bench.synthetic import make_corpus
from mrl_pg.cli._app import cli
from mrl_pg.errors import InvalidConfigError
from mrl_pg.index.adopt import adopt_table
from mrl_pg.psycopg._search import search
from mrl_pg.schema.adoption import adopt_ddl
from mrl_pg.schema.catalog import describe_table, table_config
from mrl_pg.schema.tables import render

DIM, ROWS = 32, 300
VECTORS = make_corpus(ROWS, DIM, seed=21).embeddings


def _items(conn: psycopg.Connection[Any], name: str = "items", *, key: str = "id bigint "
           "PRIMARY KEY") -> None:
    """An application's own table: a key, a tenant, a title, a price and the embedding."""
    table = sql.Identifier(name)
    conn.execute(sql.SQL(
        "CREATE TABLE {} ({}, ext text NOT NULL UNIQUE, tenant_id int NOT NULL, title text, "
        "price numeric, embedding vector({}))").format(table, sql.SQL(key), sql.Literal(DIM)))
    id_column = [sql.Identifier("id")] if key.startswith("id ") else []
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                table, sql.SQL(", ").join([*id_column, *map(sql.Identifier, (
                    "ext", "tenant_id", "title", "price", "embedding"))]),
                sql.SQL(", ").join(sql.Placeholder() for _ in range(5 + len(id_column)))),
            [((i,) if id_column else ()) + (f"e{i}", i % 3, f"title {i}", i, v)
             for i, v in enumerate(VECTORS)])
    conn.execute(sql.SQL("ANALYZE {}").format(table))


def _expression(conn: psycopg.Connection[Any], index: str) -> str:
    row = conn.execute("SELECT pg_get_expr(indexprs, indrelid) FROM pg_index "
                       "WHERE indexrelid = to_regclass(%s)",
                       (sql.Identifier(index).as_string(conn),)).fetchone()
    assert row is not None
    return str(row[0])


def _function_source(conn: psycopg.Connection[Any], function: str) -> str:
    row = conn.execute("SELECT prosrc FROM pg_proc WHERE proname = %s", (function,)).fetchone()
    assert row is not None
    return str(row[0])


def _invoke(schema_dsn: str, schema: str, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--dsn", schema_dsn, "--schema", schema])


def _one_line_error(result: Result, *messages: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1, result.output
    for message in messages:
        assert message in result.output, result.output


@contextmanager
def _alembic(schema_dsn: str) -> Iterator[None]:
    """An online Alembic migration context on the test's schema, as a revision runs in."""
    engine = create_engine("postgresql+psycopg://", poolclass=NullPool,
                           creator=lambda: psycopg.connect(schema_dsn))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection)
            with Operations.context(context), context.begin_transaction():
                yield
            connection.commit()
    finally:
        engine.dispose()


# --- 4. another prefix size -------------------------------------------------------------

REFUSED = ("is already adopted with a 8-dimension prefix of 'embedding'; release it first "
           "(mrl-pg adopt --release items", "to adopt it with a 4-dimension prefix of "
           "'embedding', or rebuild it in place without a moment unindexed (mrl-pg adopt "
           "items --rebuild, or rebuild=True): keeping that index would leave a search "
           "function no index serves")


def _assert_still_prefix_8(conn: psycopg.Connection[Any]) -> None:
    """The index and the function both still hold the 8-dimension prefix, and the function's
    plan walks the index."""
    assert _expression(conn, "items_embedding_prefix_hnsw") == (
        "(l2_normalize(subvector(embedding, 1, 8)))::halfvec(8)")
    source = _function_source(conn, "mrl_search_items")
    assert 'subvector("embedding", 1, 8)' in source
    assert 'subvector("embedding", 1, 4)' not in source
    assert [r.id for r in search(conn, table_config(conn, "items"), VECTORS[7], k=1)] == [7]


def test_the_library_refuses_another_prefix_size_and_keeps_index_and_function(conn):
    _items(conn)
    adopt_table(conn, table_config(conn, "items", prefix_dim=8))
    with pytest.raises(InvalidConfigError) as refused:
        adopt_table(conn, table_config(conn, "items", prefix_dim=4))
    for part in REFUSED:
        assert part in str(refused.value)
    _assert_still_prefix_8(conn)


def test_the_library_refuses_a_prefix_of_another_column(conn):
    _items(conn)
    conn.execute(f"ALTER TABLE items ADD COLUMN other vector({DIM})")
    conn.execute("UPDATE items SET other = embedding")
    adopt_table(conn, table_config(conn, "items", prefix_dim=8))
    with pytest.raises(InvalidConfigError,
                       match="to adopt it with a 8-dimension prefix of 'other'"):
        adopt_table(conn, table_config(conn, "items", embedding="other", prefix_dim=8))
    _assert_still_prefix_8(conn)


def test_the_alembic_op_refuses_another_prefix_size(conn, schema_dsn):
    _items(conn)
    with _alembic(schema_dsn):
        mrl_alembic.adopt_table("items", prefix_dim=8)
    with pytest.raises(InvalidConfigError) as refused, _alembic(schema_dsn):
        mrl_alembic.adopt_table("items", prefix_dim=4)
    for part in REFUSED:
        assert part in str(refused.value)
    _assert_still_prefix_8(conn)


def test_the_cli_refuses_another_prefix_size_naming_both(conn, schema, schema_dsn):
    _items(conn)
    assert _invoke(schema_dsn, schema, "adopt", "items", "--prefix-dim", "8").exit_code == 0
    _one_line_error(_invoke(schema_dsn, schema, "adopt", "items", "--prefix-dim", "4"),
                    *REFUSED)
    _assert_still_prefix_8(conn)


def test_release_then_adopt_with_the_new_prefix_is_the_way_out(conn, schema, schema_dsn):
    _items(conn)
    assert _invoke(schema_dsn, schema, "adopt", "items", "--prefix-dim", "8").exit_code == 0
    assert _invoke(schema_dsn, schema, "adopt", "items", "--release").exit_code == 0
    again = _invoke(schema_dsn, schema, "adopt", "items", "--prefix-dim", "4")
    assert again.exit_code == 0, again.output
    assert describe_table(conn, "items").prefix_dim == 4
    assert "subvector(embedding, 1, 4)" in _expression(conn, "items_embedding_prefix_hnsw")


def _offline(config: TableConfig, **kwargs: Any) -> str:
    """The SQL an offline (``--sql``) Alembic run of ``adopt_table(config)`` writes."""
    import io

    buffer = io.StringIO()
    context = MigrationContext.configure(dialect_name="postgresql", opts={
        "as_sql": True, "output_buffer": buffer, "transactional_ddl": True})
    with Operations.context(context), context.begin_transaction():
        mrl_alembic.adopt_table(config, **kwargs)
    return buffer.getvalue()


def _psql(dsn: str, script: str) -> Any:
    import subprocess

    from tests.test_sql_script import _psql as psql

    return subprocess.run([psql(), dsn, "-q", "-v", "ON_ERROR_STOP=1"], input=script,
                          capture_output=True, text=True, check=False)


def test_an_offline_alembic_script_refuses_another_prefix_or_rebuilds_when_asked(
    conn, schema_dsn
):
    _items(conn)
    adopt_table(conn, table_config(conn, "items", prefix_dim=8))
    asked = table_config(conn, "items", prefix_dim=4)
    refused = _psql(schema_dsn, _offline(asked))
    assert refused.returncode != 0
    assert "is already adopted with a 8-dimension prefix of 'embedding'" in refused.stderr
    _assert_still_prefix_8(conn)
    rebuilt = _psql(schema_dsn, _offline(asked, rebuild=True))
    assert rebuilt.returncode == 0, rebuilt.stderr
    _assert_rebuilt_to_4(conn)


def test_an_offline_alembic_script_carries_the_refusal():
    described = TableConfig("items", full_dim=DIM, prefix_dim=4, key=("id",),
                            prefix_column=None, metadata_column=None, adopted=True,
                            column_types=(("id", "pg_catalog", "int8", "_int8"),))
    [check, guard] = [render(s) for s in adopt_ddl(described).before]
    assert "pgvector" in check
    assert "is already adopted with a " in guard and "(l2_normalize(subvector(embedding, 1, 4)))" \
        "::halfvec(4)" in guard


# --- 5. what was recorded is kept -------------------------------------------------------

def test_a_plain_cli_adopt_keeps_the_recorded_tenant_key_columns_and_prefix(
    conn, schema, schema_dsn, tmp_path: Path
):
    _items(conn)
    first = _invoke(schema_dsn, schema, "adopt", "items", "--prefix-dim", "8",
                    "--tenant-column", "tenant_id", "--columns", "id,tenant_id,title")
    assert first.exit_code == 0, first.output
    again = _invoke(schema_dsn, schema, "adopt", "items")
    assert again.exit_code == 0, again.output
    assert "tenant column tenant_id" in again.stdout and "prefix 8" in again.stdout
    config = describe_table(conn, "items")
    assert (config.tenant_column, config.key, config.returned_columns, config.prefix_dim) == (
        "tenant_id", ("id",), ("id", "tenant_id", "title"), 8)
    np.save(tmp_path / "q.npy", VECTORS[5])
    found = CliRunner().invoke(cli, ["search", "--vector", str(tmp_path / "q.npy"), "--table",
                                     "items", "--tenant", "2", "--json", "-k", "3",
                                     "--dsn", schema_dsn, "--schema", schema])
    assert found.exit_code == 0, found.output
    assert '"id": 5' in found.stdout.splitlines()[0]
    assert all('"tenant_id": 2' in line for line in found.stdout.splitlines())


def test_table_config_reads_back_the_recorded_key_tenant_and_columns(conn):
    _items(conn, "keyless", key="serial int")  # no primary key: only ext is unique
    adopt_table(conn, table_config(conn, "keyless", prefix_dim=8, key=["ext"],
                                   tenant="tenant_id", columns=["ext", "title"]))
    config = table_config(conn, "keyless")
    assert (config.key, config.tenant_column, config.returned_columns, config.prefix_dim) == (
        ("ext",), "tenant_id", ("ext", "title"), 8)
    assert describe_table(conn, "keyless") == config
    adopt_table(conn, config)  # and adopting it again needs nothing else
    # A name given explicitly still wins over the record.
    assert table_config(conn, "keyless", columns=["ext"]).returned_columns == ("ext",)


def test_the_alembic_op_keeps_what_was_recorded_on_a_mixed_case_table(conn, schema_dsn):
    _items(conn, "CamelItems")
    with _alembic(schema_dsn):
        mrl_alembic.adopt_table("CamelItems", prefix_dim=8, tenant="tenant_id",
                                columns=["id", "tenant_id", "title"])
    with _alembic(schema_dsn):
        again = mrl_alembic.adopt_table("CamelItems")
    assert (again.tenant_column, again.returned_columns, again.prefix_dim) == (
        "tenant_id", ("id", "tenant_id", "title"), 8)
    assert describe_table(conn, "CamelItems") == again
    found = search(conn, again, VECTORS[4], k=3, tenant=1)
    assert found[0].id == 4 and {r.tenant_id for r in found} == {1}


# --- 6. the table changed ----------------------------------------------------------------

def _returned(conn: psycopg.Connection[Any], function: str) -> list[str]:
    cur = conn.execute(sql.SQL("SELECT * FROM {}(%s, 1)").format(sql.Identifier(function)),
                       (VECTORS[3],))
    return [d.name for d in cur.description or []]


def test_re_adopting_after_add_column_recreates_the_function_and_keeps_its_grants(conn):
    _items(conn)
    role = f"reader_{uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    try:
        adopt_table(conn, table_config(conn, "items", prefix_dim=8))
        conn.execute(sql.SQL("REVOKE ALL ON FUNCTION mrl_search_items FROM PUBLIC; "
                             "GRANT EXECUTE ON FUNCTION mrl_search_items TO {} "
                             "WITH GRANT OPTION").format(sql.Identifier(role)))
        conn.execute("ALTER TABLE items ADD COLUMN brand text")
        conn.execute("UPDATE items SET brand = 'b' || id")
        adopt_table(conn, table_config(conn, "items"))
        assert _returned(conn, "mrl_search_items") == [
            "id", "ext", "tenant_id", "title", "price", "brand", "distance"]
        privileges = conn.execute(
            "SELECT has_function_privilege(%s, 'mrl_search_items(vector, integer, integer, "
            "jsonb, integer)', 'EXECUTE'), has_function_privilege(%s, "
            "'mrl_search_items(vector, integer, integer, jsonb, integer)', "
            "'EXECUTE WITH GRANT OPTION'), "
            "has_function_privilege('public', 'mrl_search_items(vector, integer, integer, "
            "jsonb, integer)', 'EXECUTE')", (role, role)).fetchone()
        assert privileges == (True, True, False)
    finally:
        conn.execute("DROP FUNCTION IF EXISTS mrl_search_items")
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_dropped_column_is_named_with_the_repair_command_then_adopting_repairs_it(
    conn, schema, schema_dsn, tmp_path: Path
):
    _items(conn)
    assert _invoke(schema_dsn, schema, "adopt", "items", "--prefix-dim", "8").exit_code == 0
    conn.execute("ALTER TABLE items DROP COLUMN price")
    np.save(tmp_path / "q.npy", VECTORS[9])
    args = ["search", "--vector", str(tmp_path / "q.npy"), "--table", "items", "--json"]
    broken = _invoke(schema_dsn, schema, *args)
    _one_line_error(broken, "changed since it was adopted", "'price'",
                    "adopt it again to follow the table: mrl-pg adopt items")
    with pytest.raises(InvalidConfigError, match=re.escape(
            "'price' of its adoption (search function mrl_search_items) no longer exists")):
        describe_table(conn, "items")
    # What the SQL function says (documented in the adopt command's help).
    with pytest.raises(psycopg.errors.UndefinedColumn, match="price"):
        _returned(conn, "mrl_search_items")
    repaired = _invoke(schema_dsn, schema, "adopt", "items")
    assert repaired.exit_code == 0, repaired.output
    assert _returned(conn, "mrl_search_items") == ["id", "ext", "tenant_id", "title",
                                                   "distance"]
    rows = _invoke(schema_dsn, schema, *args, "-k", "1")
    assert rows.exit_code == 0, rows.output
    assert '"id": 9' in rows.stdout and "price" not in rows.stdout
    assert [r.id for r in search(conn, table_config(conn, "items"), VECTORS[9], k=1)] == [9]


def test_re_adopting_with_other_columns_and_through_alembic_after_a_change(conn, schema_dsn):
    _items(conn)
    adopt_table(conn, table_config(conn, "items", prefix_dim=8, columns=["id", "title"]))
    assert _returned(conn, "mrl_search_items") == ["id", "title", "distance"]
    adopt_table(conn, table_config(conn, "items", columns=["id", "title", "price"]))
    assert _returned(conn, "mrl_search_items") == ["id", "title", "price", "distance"]
    conn.execute("ALTER TABLE items DROP COLUMN price")
    with _alembic(schema_dsn):
        mrl_alembic.adopt_table("items")
    # The column named on purpose and then dropped is left out; the others stay as named.
    assert _returned(conn, "mrl_search_items") == ["id", "title", "distance"]


# --- 12. names users have ----------------------------------------------------------------

def test_a_mixed_case_table_is_adopted_searched_and_called_through_every_way(
    conn, schema, schema_dsn, tmp_path: Path
):
    _items(conn, "CamelProducts")
    adopted = _invoke(schema_dsn, schema, "adopt", "CamelProducts", "--prefix-dim", "8")
    assert adopted.exit_code == 0, adopted.output
    assert adopted.stdout.startswith(f"adopted {schema}.CamelProducts:")
    config = table_config(conn, "CamelProducts")
    assert config.name == "CamelProducts" and config.prefix_dim == 8
    assert [r.id for r in search(conn, config, VECTORS[11], k=1)] == [11]
    rows = conn.execute('SELECT id FROM "mrl_search_CamelProducts"(%s, 2)',
                        (VECTORS[11],)).fetchall()
    assert rows[0] == (11,)
    np.save(tmp_path / "q.npy", VECTORS[11])
    found = _invoke(schema_dsn, schema, "search", "--vector", str(tmp_path / "q.npy"),
                    "--table", "CamelProducts", "--json", "-k", "1")
    assert found.exit_code == 0, found.output
    assert '"id": 11' in found.stdout
    # The index is the table's own; index build, ingest and tune take the name as it is.
    assert "subvector(embedding, 1, 8)" in _expression(conn,
                                                        "CamelProducts_embedding_prefix_hnsw")
    built = _invoke(schema_dsn, schema, "index", "build", "--table", "CamelProducts")
    assert built.exit_code == 0, built.output
    (tmp_path / "new.jsonl").write_text(json.dumps(
        {"id": 9001, "ext": "new", "tenant_id": 1, "embedding": [1.0] * DIM}) + "\n")
    loaded = _invoke(schema_dsn, schema, "ingest", str(tmp_path / "new.jsonl"), "--table",
                     "CamelProducts")
    assert loaded.exit_code == 0 and "1 inserted" in loaded.stderr, loaded.output
    tuned = _invoke(schema_dsn, schema, "tune", "--table", "CamelProducts", "--queries", "5",
                    "--rounds", "1", "--oversample", "4", "--ef-search", "40", "--dry-run",
                    "--target-recall", "0.1")
    assert "| 4 | 40 |" in tuned.stdout, tuned.output
    released = _invoke(schema_dsn, schema, "adopt", "CamelProducts", "--release")
    assert released.exit_code == 0 and "released" in released.stdout, released.output
    # A lower-case spelling is another table, as in PostgreSQL.
    with pytest.raises(InvalidConfigError, match="camelproducts does not exist"):
        table_config(conn, "camelproducts")


@pytest.mark.parametrize(("column", "kind"), [
    ("embedding", "vector"), ("Embedding", "vector"), ("order", "vector"),
    ("my vec", "vector"), ("embedding", "halfvec")])
def test_the_guard_expects_the_expression_as_postgresql_prints_it(conn, column, kind):
    from mrl_pg.schema.adoption import indexed_expression

    conn.execute(sql.SQL("CREATE TABLE quoted (id int PRIMARY KEY, {} {}(8))").format(
        sql.Identifier(column), sql.SQL(kind)))
    config = table_config(conn, "quoted", embedding=column, prefix_dim=4)
    adopt_table(conn, config)
    assert _expression(conn, "quoted_embedding_prefix_hnsw") == indexed_expression(config)
    adopt_table(conn, table_config(conn, "quoted"))  # again: the guard lets it through


def test_an_undimensioned_vector_column_is_refused_naming_the_alter_that_fixes_it(conn):
    conn.execute('CREATE TABLE "Loose" (id int PRIMARY KEY, "Vec" vector)')
    conn.execute("""INSERT INTO "Loose" VALUES (1, '[1,2,3]'), (2, '[3,2,1]')""")
    with pytest.raises(InvalidConfigError, match=re.escape(
            'all its rows have 3 dimensions, so declare it so: '
            'ALTER TABLE "Loose" ALTER COLUMN "Vec" TYPE vector(3)')):
        table_config(conn, "Loose", embedding="Vec", prefix_dim=2)
    conn.execute("""INSERT INTO "Loose" VALUES (3, '[1,2]')""")
    with pytest.raises(InvalidConfigError, match="its rows have 2 to 3 dimensions"):
        table_config(conn, "Loose", embedding="Vec", prefix_dim=2)
    conn.execute("""DELETE FROM "Loose" WHERE id = 3""")
    conn.execute('ALTER TABLE "Loose" ALTER COLUMN "Vec" TYPE vector(3)')  # the fix, as named
    assert table_config(conn, "Loose", embedding="Vec", prefix_dim=2).full_dim == 3


# --- 4b. or rebuild in place, never unindexed -------------------------------------------

_COVERED = """
SELECT (regexp_match(p.prosrc, 'subvector\\("embedding", 1, (\\d+)\\)'))[1],
       array(SELECT (regexp_match(pg_get_expr(i.indexprs, i.indrelid),
                                  'subvector\\(embedding, 1, (\\d+)\\)'))[1]
             FROM pg_index AS i WHERE i.indrelid = 'items'::regclass AND i.indisvalid
               AND i.indexprs IS NOT NULL)
FROM pg_proc AS p WHERE p.proname = 'mrl_search_items'
"""


def _assert_rebuilt_to_4(conn: psycopg.Connection[Any]) -> None:
    assert _expression(conn, "items_embedding_prefix_hnsw") == (
        "(l2_normalize(subvector(embedding, 1, 4)))::halfvec(4)")
    assert conn.execute(_COVERED).fetchone() == ("4", ["4"])  # one index, no leftovers
    config = table_config(conn, "items")
    assert config.prefix_dim == 4
    assert [r.id for r in search(conn, config, VECTORS[7], k=1)] == [7]


def test_rebuild_swaps_index_and_function_with_no_moment_unindexed(conn, schema_dsn):
    """A watcher reads, in one catalog snapshot at a time, the prefix the search function
    orders by and the prefixes valid indexes hold, all through the rebuild: the function's
    prefix must always have its index."""
    import threading

    _items(conn)
    with conn.cursor() as cur:  # enough rows that the build takes a while
        cur.executemany("INSERT INTO items (id, ext, tenant_id, embedding) "
                        "VALUES (%s, %s, 0, %s)",
                        [(ROWS + i, f"x{i}", v) for i, v in enumerate(
                            make_corpus(6000, DIM, seed=22).embeddings)])
    adopt_table(conn, table_config(conn, "items", prefix_dim=8))
    seen: list[tuple[str, list[str]]] = []
    stop = threading.Event()

    def watch() -> None:
        with psycopg.connect(schema_dsn, autocommit=True) as watcher:
            while not stop.is_set():
                row = watcher.execute(_COVERED).fetchone()
                assert row is not None
                seen.append((row[0], row[1]))

    thread = threading.Thread(target=watch)
    thread.start()
    try:
        report = adopt_table(conn, table_config(conn, "items", prefix_dim=4), rebuild=True)
    finally:
        stop.set()
        thread.join()
    assert report.rebuilt and "swapped in one transaction" in report.lines()[0]
    assert {fn for fn, _ in seen} == {"8", "4"}, seen[:3]  # the watcher saw both sides
    uncovered = [(fn, held) for fn, held in seen if fn not in held]
    assert uncovered == [], uncovered[:5]
    _assert_rebuilt_to_4(conn)


def test_rebuild_through_the_cli_and_the_alembic_op(conn, schema, schema_dsn):
    _items(conn)
    assert _invoke(schema_dsn, schema, "adopt", "items", "--prefix-dim", "8").exit_code == 0
    rebuilt = _invoke(schema_dsn, schema, "adopt", "items", "--prefix-dim", "4", "--rebuild")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "rebuilt concurrently beside the old one" in rebuilt.stdout
    _assert_rebuilt_to_4(conn)
    # Same prefix with --rebuild: nothing to swap, the index is kept.
    kept = _invoke(schema_dsn, schema, "adopt", "items", "--rebuild")
    assert kept.exit_code == 0 and "already there and valid, kept" in kept.stdout, kept.output
    with _alembic(schema_dsn):
        mrl_alembic.adopt_table("items", prefix_dim=8, rebuild=True)
    assert _expression(conn, "items_embedding_prefix_hnsw") == (
        "(l2_normalize(subvector(embedding, 1, 8)))::halfvec(8)")
    assert conn.execute(_COVERED).fetchone() == ("8", ["8"])


def test_the_function_under_an_older_signature_is_replaced_and_its_grants_carried_over(conn):
    """An mrl_pg whose search function took other arguments left one behind: adopting
    again drops it (two overloads with defaults make a short call ambiguous) and gives its
    EXECUTE grants to the new one; releasing drops every signature."""
    _items(conn)
    role = f"caller_{uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    try:
        conn.execute("CREATE FUNCTION mrl_search_items(query_embedding vector, "
                     "match_count integer DEFAULT 10) RETURNS TABLE (id bigint) "
                     "LANGUAGE sql AS 'SELECT 1::bigint'")
        conn.execute(sql.SQL("REVOKE ALL ON FUNCTION mrl_search_items(vector, integer) "
                             "FROM PUBLIC; GRANT EXECUTE ON FUNCTION "
                             "mrl_search_items(vector, integer) TO {}").format(
            sql.Identifier(role)))
        config = table_config(conn, "items", prefix_dim=8)
        adopt_table(conn, config)
        signatures = [r[0] for r in conn.execute(
            "SELECT oid::regprocedure::text FROM pg_proc WHERE proname = 'mrl_search_items'")]
        assert signatures == ["mrl_search_items(vector,integer,integer,jsonb,integer)"]
        assert conn.execute("SELECT id FROM mrl_search_items(%s, 1)",
                            (VECTORS[2],)).fetchone() == (2,)
        assert conn.execute(
            "SELECT has_function_privilege(%s, 'mrl_search_items(vector, integer, integer, "
            "jsonb, integer)', 'EXECUTE'), has_function_privilege('public', "
            "'mrl_search_items(vector, integer, integer, jsonb, integer)', 'EXECUTE')",
            (role,)).fetchone() == (True, False)
        from mrl_pg.index.adopt import release_table

        conn.execute("CREATE FUNCTION mrl_search_items(vector) RETURNS int "
                     "LANGUAGE sql AS 'SELECT 1'")
        release_table(conn, config)
        assert conn.execute("SELECT count(*) FROM pg_proc WHERE proname = 'mrl_search_items'"
                            ).fetchone() == (0,)
    finally:
        conn.execute("DROP FUNCTION IF EXISTS mrl_search_items(vector, integer, integer, jsonb, "
                     "integer)")
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_mrl_pgs_own_table_is_refused_by_adopt_and_by_rebuild(conn, schema, schema_dsn):
    from mrl_pg.schema.install import install

    install(conn, TableConfig("owned", full_dim=DIM, prefix_dim=8))
    for extra in ([], ["--rebuild"], ["--prefix-dim", "4", "--rebuild"]):
        _one_line_error(_invoke(schema_dsn, schema, "adopt", "owned", *extra),
                        "is a table mrl_pg created: it has its own prefix index and needs "
                        "no adoption")
    with pytest.raises(InvalidConfigError, match="is a table mrl_pg created"), \
            _alembic(schema_dsn):
        mrl_alembic.adopt_table("owned", prefix_dim=4, rebuild=True)
    assert describe_table(conn, "owned") == TableConfig("owned", full_dim=DIM, prefix_dim=8,
                                                        schema=None)
