"""SQLAlchemy 2.0 ORM support: a declarative mixin with the MRL table, and adaptive search.

A model gets exactly the table :mod:`mrl_pg.schema` creates (columns, generated
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

Alembic: a table made by ``mrl-pg migrate`` or :func:`mrl_pg.install.install`
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

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import psycopg
from pgvector.sqlalchemy import HALFVEC, VECTOR
from psycopg import sql
from sqlalchemy import (
    BigInteger,
    BindParameter,
    CheckConstraint,
    ColumnExpressionArgument,
    Computed,
    DateTime,
    Identity,
    Index,
    PrimaryKeyConstraint,
    Select,
    Text,
    TextClause,
    UniqueConstraint,
    bindparam,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Mapped, Session, declared_attr, mapped_column
from sqlalchemy.schema import SchemaItem

from ._sqlalchemy_settings import _with_settings
from .config import TableConfig
from .errors import DatabaseError, InvalidConfigError, InvalidSearchError
from .query import (
    EXACT_SETTINGS,
    MAX_MATCH_COUNT,
    SearchParams,
    scan_settings,
)
from .schema import TOAST_TUPLE_TARGET, check_constraints, prefix_expression, render
from .tuning import DEFAULT_TUNING, SearchTuning, load_tuning, load_tuning_async
from .vectors import as_embedding

if TYPE_CHECKING:  # sqlalchemy.ext.asyncio needs greenlet; sync users need not install it
    from sqlalchemy.ext.asyncio import AsyncSession

__all__ = [
    "MrlMixin",
    "mrl_mixin",
    "table_args",
    "search_select",
    "exact_search_select",
    "search",
    "exact_search",
    "search_async",
    "exact_search_async",
]

_M = TypeVar("_M", bound="MrlMixin")
Where = Iterable[ColumnExpressionArgument[bool]]

# The query is cast exactly as in mrl_pg.query (``q::vector``); its prefix is
# derived by schema.prefix_expression, the function that derives the stored one.
_QUERY_SQL = "CAST(:mrl_query AS vector)"


def _check_constraints(config: TableConfig) -> list[CheckConstraint]:
    return [
        CheckConstraint(render(condition), name=name)
        for name, condition in check_constraints(config)
    ]


def table_args(config: TableConfig, *extra: SchemaItem) -> tuple[Any, ...]:
    """``__table_args__`` of an MRL table: named constraints, both indexes, the schema.

    A model that needs its own table arguments passes them as ``extra`` rather
    than replacing the mixin's::

        __table_args__ = table_args(CONFIG, Index("docs_title", "title"))
    """
    prefix = config.stored_prefix_column
    items: list[Any] = [
        PrimaryKeyConstraint("id", name=config.pkey_name),
        UniqueConstraint("external_id", name=config.external_id_key_name),
        *_check_constraints(config),
        Index(
            config.hnsw_index_name,
            prefix,
            postgresql_using="hnsw",
            postgresql_with={"m": config.hnsw_m, "ef_construction": config.hnsw_ef_construction},
            postgresql_ops={prefix: "halfvec_cosine_ops"},
        ),
        Index(
            config.metadata_index_name,
            "metadata",
            postgresql_using="gin",
            postgresql_ops={"metadata": "jsonb_path_ops"},
        ),
        *extra,
    ]
    options: dict[str, Any] = {"postgresql_with": {"toast_tuple_target": TOAST_TUPLE_TARGET}}
    if config.schema is not None:
        options["schema"] = config.schema
    items.append(options)
    return tuple(items)


class MrlMixin:
    """Columns, constraints and indexes of an MRL table for a declarative model.

    Set ``mrl_config`` on the model; the table name and schema come from it.
    ``sort_order`` keeps these columns first, in :func:`mrl_pg.schema.table_ddl`'s
    order, whatever columns the model adds.
    """

    mrl_config: ClassVar[TableConfig]

    @declared_attr.directive
    @classmethod
    def __tablename__(cls) -> str:
        return cls._mrl_config().name

    @declared_attr.directive
    @classmethod
    def __table_args__(cls) -> tuple[Any, ...]:
        return table_args(cls._mrl_config())

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), sort_order=-70)
    external_id: Mapped[str | None] = mapped_column(Text, sort_order=-60)
    content: Mapped[str | None] = mapped_column(Text, sort_order=-50)
    meta: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb"), sort_order=-40
    )

    @declared_attr
    @classmethod
    def embedding(cls) -> Mapped[list[float]]:
        config = cls._mrl_config()
        return mapped_column(
            config.embedding_column, VECTOR(config.full_dim), nullable=False, sort_order=-30
        )

    @declared_attr
    @classmethod
    def embedding_prefix(cls) -> Mapped[list[float] | None]:
        config = cls._mrl_config()
        expression = prefix_expression(sql.Identifier(config.embedding_column), config.prefix_dim)
        return mapped_column(
            config.prefix_column,
            HALFVEC(config.prefix_dim),
            Computed(render(expression), persisted=True),
            nullable=True,
            sort_order=-20,
        )

    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), sort_order=-10
    )

    @classmethod
    def _mrl_config(cls) -> TableConfig:
        config = getattr(cls, "mrl_config", None)
        if not isinstance(config, TableConfig):
            raise InvalidConfigError(
                f"{cls.__name__} needs a TableConfig as mrl_config, got {config!r}"
            )
        return config


def mrl_mixin(config: TableConfig) -> type[MrlMixin]:
    """A mixin class for ``config``: ``class Document(mrl_mixin(config), Base): pass``."""
    if not isinstance(config, TableConfig):
        raise InvalidConfigError(f"expected a TableConfig, got {config!r}")
    return type(f"MrlMixin_{config.name}", (MrlMixin,), {"mrl_config": config})


def _search_params(
    k: int, oversample: int | None, offset: int, max_scan_tuples: int | None,
    ef_search: int | None, tuning: SearchTuning = DEFAULT_TUNING,
) -> SearchParams:
    if oversample is None:
        oversample = tuning.oversample
    SearchParams(k=k, oversample=oversample, max_scan_tuples=max_scan_tuples, ef_search=ef_search,
                 tuning=tuning)
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidSearchError(f"offset must be a non-negative integer, got {offset!r}")
    if k + offset > MAX_MATCH_COUNT:
        raise InvalidSearchError(
            f"offset + k must be at most {MAX_MATCH_COUNT}, got {offset} + {k}"
        )
    # The pool has to hold every row up to the end of the page.
    return SearchParams(k=k + offset, oversample=oversample, max_scan_tuples=max_scan_tuples,
                        ef_search=ef_search, tuning=tuning)


def _query(model: type[MrlMixin], query_vector: Any) -> tuple[TableConfig, BindParameter[Any]]:
    config = model._mrl_config()
    vector = as_embedding(
        query_vector, config.full_dim, prefix_dim=config.prefix_dim, what="query embedding"
    )
    return config, bindparam("mrl_query", vector, type_=VECTOR(config.full_dim), unique=True)


def _query_full(query: BindParameter[Any]) -> TextClause:
    return text(_QUERY_SQL).bindparams(query)


def _query_prefix(config: TableConfig, query: BindParameter[Any]) -> TextClause:
    expression = prefix_expression(sql.SQL(_QUERY_SQL), config.prefix_dim)
    return text(render(expression)).bindparams(query)


def search_select(
    model: type[_M],
    query_vector: Any,
    *,
    k: int = 10,
    oversample: int | None = None,
    where: Where = (),
    offset: int = 0,
    max_scan_tuples: int | None = None,
    ef_search: int | None = None,
    tuning: SearchTuning = DEFAULT_TUNING,
) -> Select[_M, float]:
    """The adaptive search as a composable ``SELECT (model, distance)``, settings included.

    ``oversample`` and ``ef_search`` left unset come from ``tuning``: pass
    :func:`mrl_pg.tuning.load_tuning`'s result to use what ``mrl-pg tune``
    stored (:func:`search` does).

    Same plan as :func:`mrl_pg.query.adaptive_search_sql`: a MATERIALIZED CTE
    takes ``(offset + k) * oversample`` rows matching ``where`` in order of
    prefix distance (the HNSW index) with their full cosine distance, the best
    ``offset + k`` of them are joined back to the table. The model's columns
    are ``stmt.selected_columns``, so joins compose::

        stmt = search_select(Document, q, k=10)
        stmt = stmt.join(Note, Note.document_id == stmt.selected_columns.id)

    Executing it applies its HNSW settings for that statement only (see the
    module docstring), so ``session.execute(stmt)`` always gets its full pool.
    """
    params = _search_params(k, oversample, offset, max_scan_tuples, ef_search, tuning)
    config, query = _query(model, query_vector)
    candidates = (
        select(model.id.label("id"),
               model.embedding.cosine_distance(_query_full(query)).label("distance"))
        .where(*where)
        .order_by(model.embedding_prefix.cosine_distance(_query_prefix(config, query)))
        .limit(params.pool)
        .cte("candidates")
        .prefix_with("MATERIALIZED")
    )
    best = (
        select(candidates.c.id, candidates.c.distance)
        .order_by(candidates.c.distance, candidates.c.id)
        .limit(params.k)
        .cte("best")
        .prefix_with("MATERIALIZED")
    )
    distance = best.c.distance.label("distance")
    statement = (
        select(model, distance)
        .join(best, model.id == best.c.id)
        .order_by(best.c.distance, best.c.id)
        .limit(k)
    )
    if offset:
        statement = statement.offset(offset)
    return _with_settings(statement, scan_settings(params))


def exact_search_select(
    model: type[_M], query_vector: Any, *, k: int = 10, where: Where = ()
) -> Select[_M, float]:
    """Full-dimension cosine over every row matching ``where``: ground truth, small tables.

    Carries settings that turn index scans off for this statement, so no index
    scan replaces the full comparison.
    """
    SearchParams(k=k, oversample=1)
    _, query = _query(model, query_vector)
    distance = model.embedding.cosine_distance(_query_full(query)).label("distance")
    statement = select(model, distance).where(*where).order_by(distance, model.id).limit(k)
    return _with_settings(statement, EXACT_SETTINGS)


def _rows(result: Iterable[Any]) -> list[tuple[Any, float]]:
    return [(row[0], float(row[1])) for row in result]


_D = TypeVar("_D")


def _psycopg(driver: Any, kind: type[_D]) -> _D:
    if not isinstance(driver, kind):
        raise InvalidConfigError(
            "mrl_pg's ORM search needs the psycopg driver (a postgresql+psycopg:// URL, "
            f"or mrl_pg.db.create_engine), got {type(driver).__name__}"
        )
    return driver


def _needs_tuning(oversample: int | None, ef_search: int | None) -> bool:
    return oversample is None or ef_search is None


def search(
    session: Session,
    model: type[_M],
    query_vector: Any,
    *,
    k: int = 10,
    oversample: int | None = None,
    where: Where = (),
    offset: int = 0,
    max_scan_tuples: int | None = None,
    ef_search: int | None = None,
) -> list[tuple[_M, float]]:
    """Adaptive search: ``(model instance, cosine distance)`` pairs, nearest first.

    Runs :func:`search_select` in the session's transaction; its settings end
    with the statement. ``oversample`` and ``ef_search`` default to what
    ``mrl-pg tune`` stored for the table (one extra round trip to read them).

    >>> search(session, Document, q, where=[Document.meta["lang"].astext == "en"])  # doctest: +SKIP
    """
    # Arguments are checked before the session touches the database.
    search_select(model, query_vector, k=k, oversample=oversample, where=where, offset=offset,
                  max_scan_tuples=max_scan_tuples, ef_search=ef_search)
    try:
        tuning = DEFAULT_TUNING
        if _needs_tuning(oversample, ef_search):
            driver = session.connection().connection.driver_connection
            tuning = load_tuning(_psycopg(driver, psycopg.Connection), model._mrl_config())
        statement = search_select(model, query_vector, k=k, oversample=oversample, where=where,
                                  offset=offset, max_scan_tuples=max_scan_tuples,
                                  ef_search=ef_search, tuning=tuning)
        return _rows(session.execute(statement))
    except DBAPIError as exc:
        raise DatabaseError(f"search failed: {exc.orig}") from exc


def exact_search(
    session: Session, model: type[_M], query_vector: Any, *, k: int = 10, where: Where = ()
) -> list[tuple[_M, float]]:
    """Exact search on the full vectors (index scans off for this statement only)."""
    statement = exact_search_select(model, query_vector, k=k, where=where)
    try:
        return _rows(session.execute(statement))
    except DBAPIError as exc:
        raise DatabaseError(f"search failed: {exc.orig}") from exc


async def search_async(
    session: AsyncSession,
    model: type[_M],
    query_vector: Any,
    *,
    k: int = 10,
    oversample: int | None = None,
    where: Where = (),
    offset: int = 0,
    max_scan_tuples: int | None = None,
    ef_search: int | None = None,
) -> list[tuple[_M, float]]:
    """Async twin of :func:`search`, for :func:`mrl_pg.db.create_async_engine`."""
    search_select(model, query_vector, k=k, oversample=oversample, where=where, offset=offset,
                  max_scan_tuples=max_scan_tuples, ef_search=ef_search)
    try:
        tuning = DEFAULT_TUNING
        if _needs_tuning(oversample, ef_search):
            raw = await (await session.connection()).get_raw_connection()
            tuning = await load_tuning_async(
                _psycopg(raw.driver_connection, psycopg.AsyncConnection), model._mrl_config())
        statement = search_select(model, query_vector, k=k, oversample=oversample, where=where,
                                  offset=offset, max_scan_tuples=max_scan_tuples,
                                  ef_search=ef_search, tuning=tuning)
        return _rows(await session.execute(statement))
    except DBAPIError as exc:
        raise DatabaseError(f"search failed: {exc.orig}") from exc


async def exact_search_async(
    session: AsyncSession, model: type[_M], query_vector: Any, *, k: int = 10, where: Where = ()
) -> list[tuple[_M, float]]:
    """Async twin of :func:`exact_search`."""
    statement = exact_search_select(model, query_vector, k=k, where=where)
    try:
        return _rows(await session.execute(statement))
    except DBAPIError as exc:
        raise DatabaseError(f"search failed: {exc.orig}") from exc
