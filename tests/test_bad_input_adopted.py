"""Bad input on every way into an adopted table: one clear line naming the problem, and the
table (and its adoption) unchanged.

The companion of ``test_bad_input_matrix.py`` for a user's own table adopted with
``mrl-pg adopt``: one parametrized test per entry point (psycopg search, ORM search, the
table's SQL function, CLI adopt, CLI ingest --table, CLI search --table, CLI tune/delete/index
on the adopted table). Each case checks the message, that it is one line with no traceback
(and, for the CLI, a non-zero exit and no uncaught exception), and that the table's row count,
its content checksum and the schema's indexes and functions are what they were.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from click.testing import CliRunner, Result
from pgvector.sqlalchemy import VECTOR
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus
from sqlalchemy import BigInteger, Date, Integer, Text, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import mrl_pg
import mrl_pg.sqlalchemy
from mrl_pg import TableConfig
from mrl_pg.cli._app import cli
from mrl_pg.db import configure_connection, create_engine
from mrl_pg.errors import MrlPgError
from mrl_pg.index.adopt import adopt_table
from mrl_pg.schema.catalog import table_config

DIM, PREFIX, ROWS = 16, 4, 40
GOOD = [0.25] * DIM


@dataclass(frozen=True)
class Adopted:
    """A test's connection to the schema holding the adopted ``articles``."""

    conn: psycopg.Connection[Any]
    schema: str
    dsn: str
    config: TableConfig


@pytest.fixture(scope="module")
def adopted_schema(database_dsn: str) -> Iterator[tuple[str, str]]:
    """A schema with the user's ``articles`` (made without mrl_pg, then adopted with a
    4-dimension prefix) and tables that cannot be adopted or were not: ``notes``, ``loose``,
    ``keyless``, ``textual`` and ``fresh``.

    Made once for the module: every case compares the whole schema before and after, so a
    case that changed anything fails itself.
    """
    schema = f"test_{uuid.uuid4().hex[:12]}"
    options = conninfo_to_dict(database_dsn).get("options") or ""
    dsn = make_conninfo(database_dsn, options=f"{options} -c search_path={schema},public".strip())
    with psycopg.connect(database_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    with psycopg.connect(dsn, autocommit=True) as conn:
        configure_connection(conn)
        conn.execute(f"CREATE TABLE articles (id bigint PRIMARY KEY, title text, author_id int, "
                     f"published date, tags text[], extra jsonb, embedding vector({DIM}))")
        rng = np.random.default_rng(7)
        with conn.cursor() as cur, cur.copy(
            "COPY articles (id, title, author_id, published, tags, extra, embedding) "
            "FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int8", "text", "int4", "date", "text[]", "jsonb", "vector"])
            for i in range(1, ROWS + 1):
                copy.write_row([i, f"title {i}", i % 5, date(2024, 1, 1 + i % 28),
                                ["a", f"t{i}"], json.dumps({"n": i}),
                                rng.normal(size=DIM).astype(np.float32)])
        conn.execute(f"CREATE TABLE notes (id bigint PRIMARY KEY, embedding vector({DIM}))")
        conn.execute("CREATE TABLE loose (id int PRIMARY KEY, embedding vector)")
        conn.execute(f"CREATE TABLE keyless (title text, embedding vector({DIM}))")
        conn.execute("CREATE TABLE textual (id int PRIMARY KEY, embedding text)")
        conn.execute(f"CREATE TABLE fresh (id int PRIMARY KEY, title text, extra jsonb, "
                     f"embedding vector({DIM}))")
        conn.execute("ANALYZE articles")
        adopt_table(conn, table_config(conn, "articles", embedding="embedding",
                                                 prefix_dim=PREFIX))
    yield schema, dsn
    with psycopg.connect(database_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def db(adopted_schema: tuple[str, str]) -> Iterator[Adopted]:
    schema, dsn = adopted_schema
    with psycopg.connect(dsn, autocommit=True) as conn:
        configure_connection(conn)
        yield Adopted(conn, schema, dsn, table_config(conn, "articles"))


def _checksum(conn, schema: str) -> tuple[Any, ...]:
    """Rows and content of ``articles``, and every index (with its comment, where an adoption
    records its choices) and function definition in the schema: a refused adoption that left
    an index or a function behind, or rewrote one, shows too."""
    rows = conn.execute(sql.SQL(
        "SELECT count(*), md5(string_agg(t::text, ',' ORDER BY t.id)) FROM {} AS t"
    ).format(sql.Identifier(schema, "articles"))).fetchone()
    indexes = conn.execute(
        "SELECT string_agg(concat_ws('|', indexdef, obj_description(to_regclass(format("
        "'%%I.%%I', schemaname, indexname)), 'pg_class')), ';' ORDER BY indexname) "
        "FROM pg_indexes WHERE schemaname = %s", (schema,)).fetchone()
    functions = conn.execute(
        "SELECT string_agg(md5(pg_get_functiondef(p.oid)), ';' ORDER BY p.oid::regprocedure::text)"
        " FROM pg_proc AS p WHERE p.pronamespace = %s::regnamespace", (schema,)).fetchone()
    return (*rows, *indexes, *functions)


def _one_line(message: str) -> None:
    assert message.strip() and "\n" not in message.strip(), message
    assert "Traceback" not in message


def _cli_refused(result: Result, message: str) -> None:
    """Non-zero exit, no uncaught exception, no traceback; mrl_pg's own refusals (exit 1) are
    exactly one line, click's usage errors (exit 2) end with one; the last line names it."""
    assert result.exit_code in (1, 2), (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        repr(result.exception), result.output)
    assert "Traceback" not in result.output, result.output
    lines = result.output.strip().splitlines()
    if result.exit_code == 1:
        assert len(lines) == 1, result.output
    assert lines[-1].startswith("Error: "), result.output
    assert message in lines[-1], result.output


# --- psycopg search --------------------------------------------------------------------------

UNKNOWN = "has no filterable column"

API_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("wrong dimension", {"query": [0.1] * (DIM + 1)}, "has 17 dimensions, expected 16"),
    ("NaN", {"query": [float("nan")] + GOOD[1:]}, "contains NaN at index 0"),
    ("infinity", {"query": GOOD[:-1] + [float("inf")]}, "contains infinity at index 15"),
    ("zero vector", {"query": [0.0] * DIM}, "is the zero vector"),
    ("zero prefix", {"query": [0.0] * PREFIX + GOOD[PREFIX:]}, "first 4 dimensions are all zero"),
    ("a string as the query", {"query": "0.25, 0.25"}, "not a list of numbers"),
    ("k = 0", {"k": 0}, "k must be between 1 and 1000, got 0"),
    ("k = -1", {"k": -1}, "k must be between 1 and 1000, got -1"),
    ("k = 10,001", {"k": 10_001}, "k must be between 1 and 1000, got 10001"),
    ("k a float", {"k": 1.5}, "k must be an integer, got 1.5"),
    ("oversample 0", {"oversample": 0}, "oversample must be at least 1, got 0"),
    ("where a string", {"where": "author_id = 1"}, "where must be a mapping"),
    ("where a list", {"where": ["author_id", 1]}, "where must be a mapping"),
    ("unknown column", {"where": {"ghost": 1}}, f"{UNKNOWN} 'ghost'"),
    ("unknown operator", {"where": {"author_id": {"like": 1}}}, "unknown operator 'like'"),
    ("'abc' for an int column", {"where": {"author_id": "abc"}},
     'invalid input syntax for type integer: "abc"'),
    ("'abc' in a range on an int column", {"where": {"author_id": {"gte": "abc"}}},
     'invalid input syntax for type integer: "abc"'),
    ("'not-a-date' for a date column", {"where": {"published": "not-a-date"}},
     'invalid input syntax for type date: "not-a-date"'),
    ("a number past the column's type", {"where": {"author_id": 2**40}},
     "integer out of range"),
    ("a list of arrays for an array column", {"where": {"tags": ["a"]}},
     "'tags' is an array column"),
    ("a malformed array literal", {"where": {"tags": "a"}}, 'malformed array literal: "a"'),
    ("in with a non-list", {"where": {"author_id": {"in": 5}}}, "in takes a list of values"),
    ("in with an empty list", {"where": {"author_id": []}}, "an empty list"),
    ("is_null with a string", {"where": {"published": {"is_null": "yes"}}},
     "is_null takes true or false"),
    ("eq None", {"where": {"author_id": {"eq": None}}}, "use {'author_id': None}"),
    ("an object for a scalar", {"where": {"author_id": {"eq": {"a": 1}}}}, "takes one value"),
    ("NaN as a value", {"where": {"author_id": float("nan")}}, "NaN matches nothing"),
    ("a quote in a column name", {"where": {"author_id'": 1}}, f'{UNKNOWN} "author_id\'"'),
    ("a semicolon in a column name", {"where": {"author_id; DROP TABLE articles": 1}},
     f"{UNKNOWN} 'author_id; DROP TABLE articles'"),
    ("a comment in a column name", {"where": {"author_id --": 1}}, f"{UNKNOWN} 'author_id --'"),
    ("a NUL byte in a column name", {"where": {"author\x00id": 1}},
     f"{UNKNOWN} 'author\\x00id'"),
    ("a Cyrillic look-alike column name", {"where": {"\u0430uthor_id": 1}},
     f"{UNKNOWN} '\u0430uthor_id'"),
    ("another case of a column name", {"where": {"Author_id": 1}}, f"{UNKNOWN} 'Author_id'"),
    ("filter on the embedding", {"where": {"embedding": GOOD}}, f"{UNKNOWN} 'embedding'"),
    ("filter on distance", {"where": {"distance": {"lt": 0.5}}}, f"{UNKNOWN} 'distance'"),
    ("a NUL byte in a text value", {"where": {"title": "a\x00b"}}, "cannot contain NUL"),
    ("tenant without a tenant column", {"tenant": "acme"}, "has no tenant column"),
    ("metadata filter without a metadata column", {"filter": {"lang": "en"}},
     "has no metadata column to filter on"),
]


@pytest.mark.parametrize(("case", "kwargs", "message"), API_CASES, ids=[c[0] for c in API_CASES])
def test_psycopg_search_names_the_problem(db, case, kwargs, message):
    before = _checksum(db.conn, db.schema)
    args = {"query": GOOD} | kwargs
    with pytest.raises(MrlPgError) as caught:
        mrl_pg.search(db.conn, db.config, args.pop("query"), **args)
    assert message in str(caught.value), str(caught.value)
    _one_line(str(caught.value))
    assert db.conn.info.transaction_status == TransactionStatus.IDLE
    assert _checksum(db.conn, db.schema) == before
    assert len(mrl_pg.search(db.conn, db.config, GOOD, k=3)) == 3  # the connection still works


# --- ORM search on the user's own model ------------------------------------------------------

class Base(DeclarativeBase):
    pass


class Article(Base):
    """The user's model of ``articles``: no mrl_pg mixin."""

    __tablename__ = "articles"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    title: Mapped[str | None] = mapped_column(Text)
    author_id: Mapped[int | None] = mapped_column(Integer)
    published: Mapped[date | None] = mapped_column(Date)
    tags: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    embedding: Mapped[Any] = mapped_column(VECTOR(DIM))


class Note(Base):
    """Another table with a vector column, never adopted."""

    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    embedding: Mapped[Any] = mapped_column(VECTOR(DIM))


class OtherBase(DeclarativeBase):
    pass


class WideArticle(OtherBase):
    """``articles`` mapped with the wrong dimension."""

    __tablename__ = "articles"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    embedding: Mapped[Any] = mapped_column(VECTOR(2 * DIM))


class LooseArticle(OtherBase):
    """``fresh`` mapped with a vector column of no dimension."""

    __tablename__ = "fresh"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    embedding: Mapped[Any] = mapped_column(VECTOR())


ORM_CASES: list[tuple[str, Callable[[], Any], dict[str, Any], str]] = [
    ("wrong dimension", lambda: Article.embedding, {"query": [0.1] * 3},
     "has 3 dimensions, expected 16"),
    ("NaN", lambda: Article.embedding, {"query": [float("nan")] + GOOD[1:]}, "contains NaN"),
    ("zero prefix", lambda: Article.embedding, {"query": [0.0] * PREFIX + GOOD[PREFIX:]},
     "first 4 dimensions are all zero"),
    ("k = 0", lambda: Article.embedding, {"k": 0}, "k must be between 1 and 1000, got 0"),
    ("k = 10,001", lambda: Article.embedding, {"k": 10_001}, "k must be between 1 and 1000"),
    ("k a float", lambda: Article.embedding, {"k": 2.5}, "k must be an integer, got 2.5"),
    ("oversample 0", lambda: Article.embedding, {"oversample": 0},
     "oversample must be at least 1"),
    ("negative offset", lambda: Article.embedding, {"offset": -1},
     "offset must be a non-negative integer"),
    ("where a SQL string in a list", lambda: Article.embedding, {"where": ["author_id = 1"]},
     "where= takes SQLAlchemy conditions"),
    ("where a bare string", lambda: Article.embedding, {"where": "author_id = 1"},
     "where= takes a list of SQLAlchemy conditions"),
    ("where a dict", lambda: Article.embedding, {"where": {"author_id": 1}},
     "where= takes a list of SQLAlchemy conditions"),
    ("where a number", lambda: Article.embedding, {"where": [1]},
     "where= takes SQLAlchemy conditions"),
    ("where on another table", lambda: Article.embedding, {"where": [Note.id == 1]},
     "brings another table (notes)"),
    ("where a value the column cannot hold", lambda: Article.embedding,
     {"where": [text("author_id = 'abc'")]}, 'invalid input syntax for type integer: "abc"'),
    ("another model's vector column", lambda: Note.embedding, {}, "adopt it first"),
    ("a text column as the embedding", lambda: Article.title, {},
     "Article.title is TEXT, not a pgvector VECTOR(n) or HALFVEC(n) column"),
    ("an int column as the embedding", lambda: Article.author_id, {},
     "Article.author_id is INTEGER, not a pgvector"),
    ("the model class itself", lambda: Article, {}, "a mapped vector column such as"),
    ("a string naming the column", lambda: "Article.embedding", {},
     "a mapped vector column such as"),
    ("the model mapped with another dimension", lambda: WideArticle.embedding,
     {"query": [0.25] * (2 * DIM)}, "is mapped as vector(32) but the table holds vector(16)"),
    ("a vector column without a dimension", lambda: LooseArticle.embedding, {},
     "has no dimension"),
    ("prefix_dim the full dimension", lambda: Article.embedding, {"prefix_dim": DIM},
     "prefix_dim 16 must be smaller than full_dim 16"),
]


@pytest.mark.parametrize(("case", "model", "kwargs", "message"), ORM_CASES,
                         ids=[c[0] for c in ORM_CASES])
def test_orm_search_names_the_problem(db, case, model, kwargs, message):
    before = _checksum(db.conn, db.schema)
    engine = create_engine(db.dsn)
    args = {"query": GOOD} | kwargs
    try:
        with Session(engine) as session:
            with pytest.raises(MrlPgError) as caught:
                mrl_pg.sqlalchemy.search(session, model(), args.pop("query"), **args)
            session.rollback()
            assert len(mrl_pg.sqlalchemy.search(session, Article.embedding, GOOD, k=3)) == 3
    finally:
        engine.dispose()
    assert message in str(caught.value), str(caught.value)
    _one_line(str(caught.value))
    assert _checksum(db.conn, db.schema) == before


# --- the table's SQL function ----------------------------------------------------------------

def _filter(value: Any) -> str:
    return json.dumps(value)


NOT_FILTERABLE = "filter names a column the table cannot filter on"

# (case, arguments after the function's name, parameters, message, SQLSTATE)
FUNCTION_CASES: list[tuple[str, str, list[Any], str, str]] = [
    ("filter an array", "%s::vector, 10, 8, '[1]'", [str(GOOD)],
     "filter must be a JSON object, got a JSON array", "22023"),
    ("filter a string", "%s::vector, 10, 8, '\"author_id\"'", [str(GOOD)],
     "filter must be a JSON object, got a JSON string", "22023"),
    ("filter JSON null", "query_embedding => %s::vector, filter => 'null'::jsonb", [str(GOOD)],
     "filter must be a JSON object, got a JSON null", "22023"),
    ("unknown key", "%s::vector, 10, 8, %s::jsonb", [str(GOOD), _filter({"ghost": 1})],
     f"{NOT_FILTERABLE}: ghost", "42703"),
    ("unknown key beside a known one", "%s::vector, 10, 8, %s::jsonb",
     [str(GOOD), _filter({"author_id": 1, "ghost": 1})], f"{NOT_FILTERABLE}: ghost", "42703"),
    ("hostile key: quote and DROP", "%s::vector, 10, 8, %s::jsonb",
     [str(GOOD), _filter({"author_id'; DROP TABLE articles; --": 1})],
     f"{NOT_FILTERABLE}: \"author_id'; DROP TABLE articles; --\"", "42703"),
    ("hostile key: Cyrillic look-alike", "%s::vector, 10, 8, %s::jsonb",
     [str(GOOD), _filter({"\u0430uthor_id": 1})],
     f'{NOT_FILTERABLE}: "\u0430uthor_id"', "42703"),
    ("filter on the embedding", "%s::vector, 10, 8, %s::jsonb",
     [str(GOOD), _filter({"embedding": GOOD})], f"{NOT_FILTERABLE}: embedding", "42703"),
    ("filter on distance", "%s::vector, 10, 8, %s::jsonb",
     [str(GOOD), _filter({"distance": 0})], f"{NOT_FILTERABLE}: distance", "42703"),
    ("'abc' for an int column", "%s::vector, 10, 8, %s::jsonb",
     [str(GOOD), _filter({"author_id": "abc"})],
     'invalid input syntax for type integer: "abc"', "22P02"),
    ("a list for a bound", "%s::vector, 10, 8, %s::jsonb",
     [str(GOOD), _filter({"author_id": {"gt": [1]}})],
     "filter: 'author_id' gt takes one value, got a JSON array", "22023"),
    ("an unknown operator", "%s::vector, 10, 8, %s::jsonb",
     [str(GOOD), _filter({"author_id": {"like": 1}})],
     "filter: unknown operator 'like' for 'author_id'", "22023"),
    ("'not-a-date' for a date column", "%s::vector, 10, 8, %s::jsonb",
     [str(GOOD), _filter({"published": "not-a-date"})],
     'invalid input syntax for type date: "not-a-date"', "22007"),
    ("NULL query embedding", "NULL::vector, 10", [],
     "query_embedding must not be NULL", "22004"),
    ("wrong dimension", "%s::vector, 10", [str([0.1] * 3)],
     "query_embedding has 3 dimensions, expected 16", "22000"),
    ("zero prefix", "%s::vector, 10", [str([0.0] * PREFIX + GOOD[PREFIX:])],
     "has a zero prefix (first 4 dimensions)", "22000"),
    ("match_count 0", "%s::vector, 0", [str(GOOD)],
     "match_count must be between 1 and 1000, got 0", "22023"),
    ("match_count 1001", "%s::vector, 1001", [str(GOOD)],
     "match_count must be between 1 and 1000, got 1001", "22023"),
    ("match_count NULL", "%s::vector, NULL", [str(GOOD)],
     "match_count must be between 1 and 1000, got NULL", "22023"),
    ("oversample 0", "query_embedding => %s::vector, match_count => 5, oversample => 0",
     [str(GOOD)], "oversample must be at least 1, got 0", "22023"),
    ("a pool past the maximum", "%s::vector, 1000, 1000", [str(GOOD)],
     "(match_offset + match_count) * oversample must be at most 100000", "22023"),
]


@pytest.mark.parametrize(("case", "call", "params", "message", "sqlstate"), FUNCTION_CASES,
                         ids=[c[0] for c in FUNCTION_CASES])
def test_the_sql_function_names_the_argument(db, case, call, params, message, sqlstate):
    conn = db.conn
    before = _checksum(conn, db.schema)
    statement = f"SELECT * FROM mrl_search_articles({call})"  # noqa: S608 - fixed cases
    # On its own (autocommit) ...
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(statement, params)
    assert caught.value.sqlstate == sqlstate, (caught.value.sqlstate, str(caught.value))
    primary = caught.value.diag.message_primary or ""
    assert message in primary, primary
    _one_line(primary)
    assert conn.info.transaction_status == TransactionStatus.IDLE
    # ... and inside the caller's transaction: the savepoint rolls back, the transaction goes on.
    with conn.transaction():
        with pytest.raises(psycopg.Error), conn.transaction():
            conn.execute(statement, params)
        found = conn.execute("SELECT id FROM mrl_search_articles(%s::vector, 3)",
                             [str(GOOD)]).fetchall()
        assert len(found) == 3
    assert conn.info.transaction_status == TransactionStatus.IDLE
    assert _checksum(conn, db.schema) == before


# --- CLI adopt -------------------------------------------------------------------------------

ADOPT_CASES: list[tuple[str, list[str], str]] = [
    ("a table that does not exist", ["adopt", "nowhere", "--prefix-dim", "4"],
     "table nowhere does not exist"),
    ("an embedding column that is missing", ["adopt", "fresh", "--embedding", "ghost",
                                             "--prefix-dim", "4"],
     "table fresh has no embedding column 'ghost'"),
    ("an embedding column of text", ["adopt", "textual", "--prefix-dim", "4"],
     "embedding column 'embedding' of textual is text, expected vector(N) or halfvec(N)"),
    ("a text column as the embedding", ["adopt", "fresh", "--embedding", "title",
                                        "--prefix-dim", "4"],
     "embedding column 'title' of fresh is text"),
    ("a vector without a dimension", ["adopt", "loose", "--prefix-dim", "4"],
     "embedding column 'embedding' of loose is declared vector without a dimension"),
    ("a table without a primary key", ["adopt", "keyless", "--prefix-dim", "4"],
     "table keyless has no primary key"),
    ("--key naming a non-unique column", ["adopt", "fresh", "--key", "title",
                                          "--prefix-dim", "4"],
     "key (title) of fresh is not a primary key or unique constraint"),
    ("--key naming a missing column", ["adopt", "fresh", "--key", "ghost", "--prefix-dim", "4"],
     "table fresh has no key column 'ghost'"),
    ("--key with an empty name", ["adopt", "fresh", "--key", "id,,title", "--prefix-dim", "4"],
     "expected comma-separated column names"),
    ("--prefix-dim the full dimension", ["adopt", "fresh", "--prefix-dim", "16"],
     "prefix_dim 16 must be smaller than full_dim 16"),
    ("--prefix-dim past the full dimension", ["adopt", "fresh", "--prefix-dim", "64"],
     "prefix_dim 64 must be smaller than full_dim 16"),
    ("--prefix-dim 0", ["adopt", "fresh", "--prefix-dim", "0"],
     "prefix_dim 0 is out of range"),
    ("--prefix-dim negative", ["adopt", "fresh", "--prefix-dim", "-4"],
     "prefix_dim -4 is out of range"),
    ("--prefix-dim not a number", ["adopt", "fresh", "--prefix-dim", "four"],
     "'four' is not a valid integer"),
    ("--metadata naming a text column", ["adopt", "fresh", "--metadata", "title",
                                         "--prefix-dim", "4"],
     "metadata column 'title' of fresh is text, expected jsonb"),
    ("--tenant-column naming a missing column", ["adopt", "fresh", "--tenant-column", "org",
                                                 "--prefix-dim", "4"],
     "table fresh has no tenant column 'org'"),
    ("--tenant-column naming the vector", ["adopt", "fresh", "--tenant-column", "embedding",
                                           "--prefix-dim", "4"],
     "tenant column 'embedding' of fresh is a vector"),
    ("--columns naming a missing column", ["adopt", "fresh", "--columns", "id,ghost",
                                           "--prefix-dim", "4"],
     "table fresh has no returned column 'ghost'"),
    ("--m out of range", ["adopt", "fresh", "--prefix-dim", "4", "--m", "1"],
     "hnsw_m 1 is out of range"),
    ("--maintenance-work-mem not a size", ["adopt", "fresh", "--prefix-dim", "4",
                                           "--maintenance-work-mem", "lots"],
     "invalid maintenance_work_mem 'lots'"),
    ("a hostile table name: DROP", ["adopt", "x; DROP TABLE articles; --", "--prefix-dim", "4"],
     "invalid table name 'x; DROP TABLE articles; --'"),
    ("a hostile table name: NUL byte", ["adopt", "arti\x00cles", "--prefix-dim", "4"],
     "invalid table name 'arti\\x00cles'"),
    ("a hostile table name: double quote", ["adopt", 'articles"', "--prefix-dim", "4"],
     "invalid table name 'articles\"'"),
    ("a hostile table name: single quote", ["adopt", "articles'", "--prefix-dim", "4"],
     "invalid table name \"articles'\""),
    ("a hostile table name: Cyrillic look-alike", ["adopt", "\u0430rticles", "--prefix-dim",
                                                   "4"], "invalid table name"),
    ("a hostile schema name", ["adopt", "articles", "--schema", "public; DROP TABLE articles"],
     "invalid schema name 'public; DROP TABLE articles'"),
    ("a hostile embedding column name", ["adopt", "fresh", "--embedding",
                                         'embedding"; DROP TABLE articles; --',
                                         "--prefix-dim", "4"],
     "table fresh has no embedding column 'embedding\"; DROP TABLE articles; --'"),
    ("adopting again with another --prefix-dim", ["adopt", "articles", "--prefix-dim", "8"],
     "already adopted with a 4-dimension prefix of 'embedding'; release it first"),
    ("adopting again with another embedding column", ["adopt", "articles", "--embedding",
                                                      "title", "--prefix-dim", "4"],
     "embedding column 'title' of articles is text"),
    ("releasing a table that does not exist", ["adopt", "--release", "nowhere"],
     "table nowhere does not exist"),
]


@pytest.mark.parametrize(("case", "args", "message"), ADOPT_CASES,
                         ids=[c[0] for c in ADOPT_CASES])
def test_cli_adopt_names_the_problem_and_adopts_nothing(db, case, args, message):
    before = _checksum(db.conn, db.schema)
    result = CliRunner().invoke(cli, [*args, "--dsn", db.dsn])
    _cli_refused(result, message)
    assert _checksum(db.conn, db.schema) == before


# --- CLI ingest --table ----------------------------------------------------------------------

def _record(key: Any, **extra: Any) -> str:
    return json.dumps({"id": key, "title": "new", "embedding": GOOD} | extra)


def _csv_vector() -> str:
    return '"' + json.dumps(GOOD).replace('"', '""') + '"'


# (case, file name, content (None: no file, b"DIR": a directory), extra arguments, message)
INGEST_CASES: list[tuple[str, str, bytes | None, list[str], str]] = [
    ("a line that is not JSON", "bad.jsonl", (_record(101) + "\n{not json\n").encode(), [],
     "bad.jsonl:2: invalid JSON"),
    ("a truncated last line", "cut.jsonl", (_record(101) + "\n" + _record(102)[:30]).encode(),
     [], "cut.jsonl:2: invalid JSON"),
    ("a line that is an array", "array.jsonl", b"[1, 2]\n", [],
     "array.jsonl:1: expected a JSON object, got an array"),
    ("an unknown column", "unknown.jsonl", (_record(101, ghost=1) + "\n").encode(), [],
     "unknown.jsonl:1: unknown column 'ghost'"),
    ("the embedding's prefix column of mrl_pg's layout", "prefix.jsonl",
     (_record(101, embedding_prefix=GOOD[:PREFIX]) + "\n").encode(), [],
     "unknown column 'embedding_prefix'"),
    ("a missing key column", "nokey.jsonl",
     (json.dumps({"title": "no key", "embedding": GOOD}) + "\n").encode(), [],
     'null value in column "id"'),
    ("a null key", "nullkey.jsonl", (_record(None) + "\n").encode(), [],
     'null value in column "id"'),
    ("a key that is not a number", "strkey.jsonl", (_record("abc") + "\n").encode(), [],
     'strkey.jsonl:1: id: invalid input syntax for type bigint: "abc"'),
    ("'abc' for an int column", "int.jsonl", (_record(101, author_id="abc") + "\n").encode(),
     [], 'int.jsonl:1: author_id: invalid input syntax for type integer: "abc"'),
    ("a number past the column's type", "big.jsonl",
     (_record(101, author_id=2**40) + "\n").encode(), [],
     "big.jsonl:1: author_id: value \"1099511627776\" is out of range for type integer"),
    ("'not-a-date' for a date column", "date.jsonl",
     (_record(101, published="not-a-date") + "\n").encode(), [],
     'date.jsonl:1: published: invalid input syntax for type date: "not-a-date"'),
    ("a string for an array column", "tags.jsonl", (_record(101, tags="a") + "\n").encode(), [],
     'tags.jsonl:1: tags: malformed array literal: "a"'),
    ("an object for an int column", "object.jsonl",
     (_record(101, author_id={"n": 1}) + "\n").encode(), [],
     "object.jsonl:1: author_id is a int4 column, got an object"),
    ("a NUL character in a text column", "nul.jsonl",
     (_record(101, title="a\u0000b") + "\n").encode(), [],
     "nul.jsonl:1: title contains a NUL character"),
    ("a wrong embedding dimension", "dim.jsonl",
     (_record(101, embedding=[0.1] * 3) + "\n").encode(), [],
     "dim.jsonl:1: embedding has 3 dimensions, expected 16"),
    ("a NaN in an embedding", "nan.jsonl",
     b'{"id": 101, "embedding": [NaN' + b", 0.1" * (DIM - 1) + b"]}\n", [],
     "nan.jsonl:1: embedding contains NaN at index 0"),
    ("a zero embedding", "zero.jsonl", (_record(101, embedding=[0.0] * DIM) + "\n").encode(),
     [], "zero.jsonl:1: embedding is the zero vector"),
    ("an embedding with a zero prefix", "zprefix.jsonl",
     (_record(101, embedding=[0.0] * PREFIX + GOOD[PREFIX:]) + "\n").encode(), [],
     "zprefix.jsonl:1: embedding: the first 4 dimensions are all zero"),
    ("duplicate keys in one batch", "dup.jsonl",
     (_record(101) + "\n" + _record(101, title="again") + "\n").encode(), [],
     "dup.jsonl:2: duplicate key (id)=(101), also on line 1"),
    ("no embedding and no text column", "bare.jsonl",
     (json.dumps({"id": 101, "title": "words"}) + "\n").encode(), [],
     "bare.jsonl:1: no embedding embedding, and no text column named"),
    ("no embedding and no embedding server", "text.jsonl",
     (json.dumps({"id": 101, "title": "words"}) + "\n").encode(), ["--text-column", "title"],
     "no API key for the embedding server"),
    ("--text-column naming a missing column", "ok.jsonl", (_record(101) + "\n").encode(),
     ["--text-column", "body"], "text column 'body'"),
    ("--text-column naming an int column", "ok.jsonl", (_record(101) + "\n").encode(),
     ["--text-column", "author_id"], "text column 'author_id'"),
    ("--tenant on a table without a tenant column", "ok.jsonl", (_record(101) + "\n").encode(),
     ["--tenant", "acme"], "has no tenant column"),
    ("--defer-index on an adopted table", "ok.jsonl", (_record(101) + "\n").encode(),
     ["--defer-index"], "--defer-index would drop the index"),
    ("--dim that disagrees with the table", "ok.jsonl", (_record(101) + "\n").encode(),
     ["--dim", "32"], "but --dim 32 was given"),
    ("a CSV with a missing column", "missing.csv", b"id,title,embedding\n101,new\n", [],
     "missing.csv:2: 2 fields, but the header on line 1 has 3"),
    ("a CSV with an extra column", "extra.csv",
     f"id,title,embedding\n101,new,{_csv_vector()},surplus\n".encode(), [],
     "extra.csv:2: 4 fields, but the header on line 1 has 3"),
    ("a CSV header with an unknown column", "header.csv",
     f"id,ghost,embedding\n101,x,{_csv_vector()}\n".encode(), [],
     "header.csv:1: the header: unknown column 'ghost'"),
    ("a CSV header naming a column twice", "twice.csv",
     f"id,title,title,embedding\n101,a,b,{_csv_vector()}\n".encode(), [],
     "twice.csv:1: the header: column 'title' appears twice"),
    ("an empty file", "empty.jsonl", b"", [], "empty.jsonl is empty"),
    ("a file that does not exist", "absent.jsonl", None, [], "absent.jsonl' does not exist"),
    ("a directory", "folder.jsonl", b"DIR", [], "folder.jsonl' is a directory"),
    ("invalid UTF-8", "latin.jsonl", (_record(101) + "\n").encode() + b'{"id": 102, "title": '
     b'"\xe9"}\n', [], "latin.jsonl:2: not valid UTF-8"),
    ("an unknown extension", "rows.txt", (_record(101) + "\n").encode(), [],
     "cannot tell the format from the extension '.txt'"),
]


@pytest.mark.parametrize(("case", "name", "content", "extra", "message"), INGEST_CASES,
                         ids=[c[0] for c in INGEST_CASES])
def test_cli_ingest_into_the_adopted_table_names_the_problem_and_writes_nothing(
    db, tmp_path, monkeypatch, case, name, content, extra, message
):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    before = _checksum(db.conn, db.schema)
    path: Path = tmp_path / name
    if content == b"DIR":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    result = CliRunner().invoke(cli, ["ingest", str(path), "--table", "articles", *extra,
                                      "--dsn", db.dsn])
    _cli_refused(result, message)
    assert _checksum(db.conn, db.schema) == before


# --- CLI search --table ----------------------------------------------------------------------

def _search_cases() -> list[tuple[str, list[str], str]]:
    # "Q" stands for a good query file, "Q3" for one of the wrong width, "QNAN" for a NaN.
    return [
        ("--where not JSON", ["--where", "{author_id"], "--where is not valid JSON"),
        ("--where an array", ["--where", "[1]"], "--where must be a JSON object"),
        ("--where a string", ["--where", '"author_id"'], "--where must be a JSON object"),
        ("--where unknown column", ["--where", '{"ghost": 1}'], f"{UNKNOWN} 'ghost'"),
        ("--where a hostile column name", ["--where", '{"author_id; DROP TABLE articles": 1}'],
         f"{UNKNOWN} 'author_id; DROP TABLE articles'"),
        ("--where a Cyrillic look-alike", ["--where", '{"\\u0430uthor_id": 1}'],
         f"{UNKNOWN} '\u0430uthor_id'"),
        ("--where on the embedding", ["--where", '{"embedding": 1}'], f"{UNKNOWN} 'embedding'"),
        ("--where unknown operator", ["--where", '{"author_id": {"like": "1%"}}'],
         "unknown operator 'like'"),
        ("--where 'abc' for an int column", ["--where", '{"author_id": "abc"}'],
         'invalid input syntax for type integer: "abc"'),
        ("--where 'not-a-date' for a date column", ["--where", '{"published": "not-a-date"}'],
         'invalid input syntax for type date: "not-a-date"'),
        ("--where in with a non-list", ["--where", '{"author_id": {"in": 3}}'],
         "in takes a list of values"),
        ("--where a list for an array column", ["--where", '{"tags": ["a"]}'],
         "'tags' is an array column"),
        ("--tenant without a tenant column", ["--tenant", "acme"], "has no tenant column"),
        ("--filter without a metadata column", ["--filter", '{"lang": "en"}'],
         "has no metadata column to filter on"),
        ("-k 0", ["-k", "0"], "k must be between 1 and 1000, got 0"),
        ("-k 10,001", ["-k", "10001"], "k must be between 1 and 1000, got 10001"),
        ("--oversample 0", ["--oversample", "0"], "oversample must be at least 1"),
        ("a query of the wrong width", ["--vector", "Q3"], "has 3 dimensions, expected 16"),
        ("a query with a NaN", ["--vector", "QNAN"], "contains NaN at index 0"),
        ("--prefix-dim that disagrees", ["--prefix-dim", "8"], "but --prefix-dim 8 was given"),
        ("--table not adopted", ["--table", "notes"], "adopt it first"),
        ("--table that does not exist", ["--table", "nowhere"], "table nowhere does not exist"),
        ("--table a hostile name", ["--table", "articles; DROP TABLE articles"],
         "invalid table name"),
    ]


@pytest.mark.parametrize(("case", "args", "message"), _search_cases(),
                         ids=[c[0] for c in _search_cases()])
def test_cli_search_on_the_adopted_table_names_the_problem(db, tmp_path, case, args, message):
    before = _checksum(db.conn, db.schema)
    files = {"Q": GOOD, "Q3": [0.1] * 3, "QNAN": [float("nan")] + GOOD[1:]}
    for token, vector in files.items():
        np.save(tmp_path / f"{token}.npy", np.asarray(vector, dtype=np.float32))
    args = [str(tmp_path / f"{a}.npy") if a in files else a for a in args]
    vector = [] if "--vector" in args else ["--vector", str(tmp_path / "Q.npy")]
    table = [] if "--table" in args else ["--table", "articles"]
    result = CliRunner().invoke(cli, ["search", *vector, *table, *args, "--json",
                                      "--dsn", db.dsn])
    _cli_refused(result, message)
    assert _checksum(db.conn, db.schema) == before


# --- CLI tune, delete, index on the adopted table --------------------------------------------

MAINTENANCE_CASES: list[tuple[str, list[str], str]] = [
    ("tune: --where not JSON", ["tune", "--table", "articles", "--where", "{ghost"],
     "--where is not valid JSON"),
    ("tune: --where an array", ["tune", "--table", "articles", "--where", "[1]"],
     "--where must be a JSON object"),
    ("tune: --where unknown column", ["tune", "--table", "articles", "--where", '{"ghost": 1}'],
     f"{UNKNOWN} 'ghost'"),
    ("tune: --where on distance", ["tune", "--table", "articles", "--where",
                                   '{"distance": {"lt": 1}}'], f"{UNKNOWN} 'distance'"),
    ("tune: --where unknown operator", ["tune", "--table", "articles", "--where",
                                        '{"author_id": {"between": [1, 2]}}'],
     "unknown operator 'between'"),
    ("tune: --where 'abc' for an int column", ["tune", "--table", "articles", "--where",
                                               '{"author_id": "abc"}'],
     'invalid input syntax for type integer: "abc"'),
    ("tune: --filter without a metadata column", ["tune", "--table", "articles", "--filter",
                                                  '{"lang": "en"}'],
     "has no metadata column to filter on"),
    ("tune: --target-recall 1.5", ["tune", "--table", "articles", "--target-recall", "1.5"],
     "target recall"),
    ("tune: --oversample 0", ["tune", "--table", "articles", "--oversample", "0"],
     "positive integers"),
    ("tune: --table not adopted", ["tune", "--table", "notes"], "adopt it first"),
    ("tune: --table that does not exist", ["tune", "--table", "nowhere"],
     "table nowhere does not exist"),
    ("delete: by --id on an adopted table", ["delete", "--table", "articles", "--id", "1"],
     "is an adopted table: mrl-pg delete works on tables mrl_pg created"),
    ("delete: by --filter on an adopted table", ["delete", "--table", "articles", "--filter",
                                                 '{"n": 1}'], "delete its rows with SQL"),
    ("delete: a dry run on an adopted table", ["delete", "--table", "articles", "--id", "1",
                                               "--dry-run"], "delete its rows with SQL"),
    ("delete: --table that does not exist", ["delete", "--table", "nowhere", "--id", "1"],
     "table nowhere does not exist"),
    ("index drop on an adopted table", ["index", "drop", "--table", "articles"],
     "mrl-pg adopt --release articles"),
    ("index build: --m out of range", ["index", "build", "--table", "articles", "--m", "1"],
     "hnsw_m 1 is out of range"),
    ("index build: --prefix-dim that disagrees", ["index", "build", "--table", "articles",
                                                  "--prefix-dim", "8"],
     "but --prefix-dim 8 was given"),
    ("index build: --table not adopted", ["index", "build", "--table", "notes"],
     "adopt it first"),
    ("index status: --table not adopted", ["index", "status", "--table", "notes"],
     "adopt it first"),
]


@pytest.mark.parametrize(("case", "args", "message"), MAINTENANCE_CASES,
                         ids=[c[0] for c in MAINTENANCE_CASES])
def test_cli_tune_delete_and_index_on_the_adopted_table_name_the_problem(
    db, case, args, message
):
    before = _checksum(db.conn, db.schema)
    saved = db.conn.execute("SELECT count(*) FROM mrl_pg_tuning").fetchone()
    tune = ["--queries", "5", "--rounds", "1"] if args[0] == "tune" else []
    result = CliRunner().invoke(cli, [*args, *tune, "--dsn", db.dsn])
    _cli_refused(result, message)
    assert _checksum(db.conn, db.schema) == before
    assert db.conn.execute("SELECT count(*) FROM mrl_pg_tuning").fetchone() == saved  # none saved


def test_the_adopted_matrix_has_at_least_forty_cases():
    counts = {"psycopg": len(API_CASES), "orm": len(ORM_CASES), "sql": len(FUNCTION_CASES),
              "adopt": len(ADOPT_CASES), "ingest": len(INGEST_CASES),
              "search": len(_search_cases()), "tune/delete/index": len(MAINTENANCE_CASES)}
    assert sum(counts.values()) >= 40, counts
    assert min(counts.values()) >= 5, counts
