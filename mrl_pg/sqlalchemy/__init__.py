"""SQLAlchemy 2.0 ORM support: a declarative mixin with the MRL table, and adaptive search.

A model gets exactly the table :mod:`mrl_pg.schema.tables` creates (columns, generated
prefix, named constraints, HNSW and GIN indexes)::

    from mrl_pg import TableConfig
    from mrl_pg.sqlalchemy import MrlMixin, search

    class Base(DeclarativeBase):
        pass

    class Document(MrlMixin, Base):
        mrl_config = TableConfig("docs", full_dim=3072, prefix_dim=256)
        title: Mapped[str | None]          # your own columns come after ours

    for doc, distance in search(session, Document, query_embedding, k=10,
                                where=[Document.meta.contains({"lang": "en"})]):
        ...

``class Document(mrl_mixin(config), Base)`` does the same at runtime, but a type
checker cannot follow a base class returned by a function. The ``metadata``
column is mapped as ``Document.meta`` since declarative classes reserve
``metadata``.

A table you already have needs no mixin: adopt it once
(:func:`mrl_pg.index.adopt.adopt_table`), then search your own model through its
``VECTOR(n)`` or ``HALFVEC(n)`` column. The prefix dimension is what the
adoption recorded, so the candidates are ordered by exactly the indexed
expression; ``where`` conditions on other tables go in a subquery::

    french = select(Author.id).where(Author.country == "fr")
    for article, distance in search(session, Article.embedding, query_embedding, k=10,
                                    where=[Article.author_id.in_(french)]):
        ...

Alembic: a table made by ``mrl-pg migrate`` or :func:`mrl_pg.schema.install.install`
compares equal to the model under ``alembic check``. If your ``env.py`` runs
autogenerate against a database that also holds mrl_pg's own tables (its
migration history, ``mrl_pg_tuning``), leave them out, or Alembic proposes to
drop them::

    from mrl_pg.migrate import include_name

    context.configure(..., include_name=include_name)

Search settings (``hnsw.ef_search`` and friends) travel with the statement:
:func:`search_select` and :func:`exact_search_select` carry them as an
execution option, and whenever such a statement is executed (``Session``,
``Connection``, sync or async) mrl_pg reads the current values, applies the
search's values for the transaction, runs the statement and, once the rows are
on the client, puts the old values back. In autocommit mode it wraps the
statement in a transaction of its own instead. So the settings never outlive
the statement, and a composed ``search_select`` always gets its full pool.
Wrapping the statement in another (``select(...).select_from(stmt.subquery())``)
drops the option; compose with ``.where``/``.join``/``.add_columns`` on the
statement itself instead.

psycopg prepares any statement a connection runs five times, and a prepared
statement may switch to a cached generic plan that cannot see the pool size or
the query. The settings include ``plan_cache_mode = force_custom_plan`` so every
search is planned for its own values, prepared or not.
"""

from mrl_pg.sqlalchemy._search import *  # noqa: F403
from mrl_pg.sqlalchemy._search import __all__ as __all__
