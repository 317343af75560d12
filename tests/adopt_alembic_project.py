"""A host application's own Alembic project, written to a temporary directory: its
``env.py``, its model of ``articles`` and one revision that adopts the table with
:mod:`mrl_pg.alembic`. Used by ``test_adopt_alembic.py``."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from alembic.config import Config
from pgvector.sqlalchemy import VECTOR
from psycopg import sql
from sqlalchemy import BigInteger, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

DIM = 256
PREFIX = 64
TABLE = "articles"
INDEX = f"{TABLE}_embedding_prefix_hnsw"


class Base(DeclarativeBase):
    pass


class Article(Base):
    """The application's model of its table; it knows nothing of mrl_pg."""

    __tablename__ = TABLE

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    title: Mapped[str | None] = mapped_column(Text)
    author_id: Mapped[int | None] = mapped_column(BigInteger)
    embedding: Mapped[Any] = mapped_column(VECTOR(DIM), nullable=True)


# What the documentation recommends: the application's version table, its metadata,
# mrl_pg's filters, and a transaction per revision (the adoption commits mid-revision).
ENV_PY = '''
import psycopg
from alembic import context
from sqlalchemy import create_engine, pool

from mrl_pg.migrate import include_name, include_object
from tests.adopt_alembic_project import Base

options = dict(target_metadata=Base.metadata, include_name=include_name,
               include_object=include_object, compare_type=True,
               transaction_per_migration=True)

if context.is_offline_mode():
    context.configure(url="postgresql+psycopg://", literal_binds=True,
                      dialect_opts={"paramstyle": "named"}, **options)
    with context.begin_transaction():
        context.run_migrations()
else:
    dsn = context.config.attributes["dsn"]
    engine = create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(dsn),
                           poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()
'''

REVISION = '''
"""adopt articles for adaptive search"""
from mrl_pg import TableConfig
from mrl_pg.alembic import adopt_table, release_table

revision = "b1"
down_revision = None
branch_labels = None
depends_on = None

ARTICLES = {articles}


def upgrade() -> None:
    adopt_table(ARTICLES{adopt_options})


def downgrade() -> None:
    release_table({release})
'''


def revision_by_name() -> str:
    """The revision a user writes online: the table named, its columns read at upgrade."""
    return REVISION.format(articles=repr(TABLE), release="ARTICLES",
                           adopt_options=f', embedding="embedding", prefix_dim={PREFIX}')


def revision_with_config(config: Any) -> str:
    """The revision for offline mode: the full description pasted in as ``repr()``."""
    return REVISION.format(articles=repr(config), release="ARTICLES", adopt_options="")


def make_project(path: Path, dsn: str | None, revision: str) -> Config:
    """The project's ``Config``; offline SQL goes to ``config.output_buffer`` (a StringIO)."""
    (path / "versions").mkdir(parents=True)
    (path / "env.py").write_text(ENV_PY)
    (path / "versions" / "b1_adopt_articles.py").write_text(revision)
    config = Config(output_buffer=io.StringIO())
    config.set_main_option("script_location", str(path))
    if dsn is not None:
        config.attributes["dsn"] = dsn
    return config


def create_articles(conn: psycopg.Connection[Any], embeddings: npt.NDArray[np.float32]) -> None:
    """The application's table as it was before mrl_pg, with ``embeddings`` loaded by COPY."""
    conn.execute(sql.SQL(
        "CREATE TABLE {} (id bigserial PRIMARY KEY, title text, author_id bigint, "
        "embedding vector({}))").format(sql.Identifier(TABLE), sql.Literal(DIM)))
    copy = sql.SQL("COPY {} (title, author_id, embedding) FROM STDIN WITH (FORMAT BINARY)")
    with conn.cursor() as cur, cur.copy(copy.format(sql.Identifier(TABLE))) as load:
        load.set_types(["text", "int8", "vector"])
        for i, vector in enumerate(embeddings):
            load.write_row([f"article {i}", i % 100, vector])
    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(TABLE)))
