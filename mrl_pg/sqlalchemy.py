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
autogenerate against a database that also holds mrl_pg's own migration history,
leave its version table out, or Alembic proposes to drop it::

    from mrl_pg.migrate import VERSION_TABLE

    def include_name(name, type_, parent_names):
        return not (type_ == "table" and name == VERSION_TABLE)

    context.configure(..., include_name=include_name)

Search settings (``hnsw.ef_search`` and friends) are set with
``set_config(..., true)``: they last until the session's transaction ends, so
later statements in the same transaction see them too, and they never leak to
other users of a pooled connection. A search therefore needs a transaction and
refuses a connection in autocommit mode, where the settings would vanish before
the query runs.

Statements are not prepared by SQLAlchemy, but psycopg prepares any statement a
connection runs five times; a prepared statement may then switch to a cached
generic plan, which cannot see the pool size or the query. The settings include
``plan_cache_mode = force_custom_plan`` so every search is planned for its own
values, prepared or not.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

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
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Mapped, Session, aliased, declared_attr, mapped_column
from sqlalchemy.schema import SchemaItem

from .config import TableConfig
from .errors import DatabaseError, InvalidConfigError, InvalidSearchError
from .query import EXACT_SETTINGS, MAX_MATCH_COUNT, SearchParams, scan_settings
from .schema import TOAST_TUPLE_TARGET, check_constraints, prefix_expression, render
from .vectors import as_embedding

if TYPE_CHECKING:  # sqlalchemy.ext.asyncio needs greenlet; sync users need not install it
    from sqlalchemy.ext.asyncio import AsyncSession

__all__ = [
    "MrlMixin",
    "mrl_mixin",
    "table_args",
    "search_select",
    "exact_search_select",
    "search_settings",
    "exact_search_settings",
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
    prefix = config.prefix_column
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
    k: int, oversample: int, offset: int, max_scan_tuples: int | None
) -> SearchParams:
    SearchParams(k=k, oversample=oversample, max_scan_tuples=max_scan_tuples)
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidSearchError(f"offset must be a non-negative integer, got {offset!r}")
    if k + offset > MAX_MATCH_COUNT:
        raise InvalidSearchError(
            f"offset + k must be at most {MAX_MATCH_COUNT}, got {offset} + {k}"
        )
    # The pool has to hold every row up to the end of the page.
    return SearchParams(k=k + offset, oversample=oversample, max_scan_tuples=max_scan_tuples)


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
    oversample: int = 8,
    where: Where = (),
    offset: int = 0,
) -> Select[_M, float]:
    """The adaptive search as a composable ``SELECT (model, distance)``.

    Same plan as :func:`mrl_pg.query.adaptive_search_sql`: a MATERIALIZED CTE
    takes ``(offset + k) * oversample`` rows matching ``where`` in order of
    prefix distance (the HNSW index), the outer query re-ranks them by full
    cosine distance. Candidate columns are ``stmt.selected_columns``, so joins
    compose::

        stmt = search_select(Document, q, k=10)
        stmt = stmt.join(Note, Note.document_id == stmt.selected_columns.id)

    Run it after :func:`search_settings` in the same transaction.
    """
    params = _search_params(k, oversample, offset, None)
    config, query = _query(model, query_vector)
    candidates = (
        select(model)
        .where(*where)
        .order_by(model.embedding_prefix.cosine_distance(_query_prefix(config, query)))
        .limit(params.pool)
        .cte("candidates")
        .prefix_with("MATERIALIZED")
    )
    row = aliased(model, candidates)
    distance = row.embedding.cosine_distance(_query_full(query)).label("distance")
    statement = select(row, distance).order_by(distance, row.id).limit(k)
    return statement.offset(offset) if offset else statement


def exact_search_select(
    model: type[_M], query_vector: Any, *, k: int = 10, where: Where = ()
) -> Select[_M, float]:
    """Full-dimension cosine over every row matching ``where``: ground truth, small tables.

    Run it after :func:`exact_search_settings` so no index scan replaces the full sort.
    """
    SearchParams(k=k, oversample=1)
    _, query = _query(model, query_vector)
    distance = model.embedding.cosine_distance(_query_full(query)).label("distance")
    return select(model, distance).where(*where).order_by(distance, model.id).limit(k)


def _set_config(settings: list[tuple[str, str]]) -> Select[Any]:
    return select(*(func.set_config(name, value, True) for name, value in settings))


def search_settings(
    *, k: int = 10, oversample: int = 8, offset: int = 0, max_scan_tuples: int | None = None
) -> Select[Any]:
    """Transaction-local settings for an adaptive search, as one ``SELECT set_config(...)``.

    The same settings as the psycopg front end (:func:`mrl_pg.query.scan_settings`):
    ``hnsw.ef_search`` raised to the pool (at most 1000), relaxed-order iterative
    scans so a filter still fills the pool, ``hnsw.max_scan_tuples``, custom plans only.
    """
    return _set_config(scan_settings(_search_params(k, oversample, offset, max_scan_tuples)))


def exact_search_settings() -> Select[Any]:
    """Transaction-local settings for an exact search: no index scans, custom plans only."""
    return _set_config(EXACT_SETTINGS)


def _adaptive(
    model: type[_M],
    query_vector: Any,
    k: int,
    oversample: int,
    where: Where,
    offset: int,
    max_scan_tuples: int | None,
) -> tuple[Select[Any], Select[_M, float]]:
    statement = search_select(
        model, query_vector, k=k, oversample=oversample, where=where, offset=offset
    )
    settings = search_settings(
        k=k, oversample=oversample, offset=offset, max_scan_tuples=max_scan_tuples
    )
    return settings, statement


def _require_transaction(connection: Connection | None) -> None:
    driver = connection.connection.driver_connection if connection is not None else None
    if getattr(driver, "autocommit", False):
        raise InvalidSearchError(
            "search needs a transaction: the connection is in autocommit mode, so the "
            "transaction-local HNSW settings would be gone before the query runs"
        )


def _rows(result: Iterable[Any]) -> list[tuple[Any, float]]:
    return [(row[0], float(row[1])) for row in result]


def search(
    session: Session,
    model: type[_M],
    query_vector: Any,
    *,
    k: int = 10,
    oversample: int = 8,
    where: Where = (),
    offset: int = 0,
    max_scan_tuples: int | None = None,
) -> list[tuple[_M, float]]:
    """Adaptive search: ``(model instance, cosine distance)`` pairs, nearest first.

    Two statements in the session's transaction: the settings, then
    :func:`search_select`. The settings stay until the transaction ends.

    >>> search(session, Document, q, where=[Document.meta["lang"].astext == "en"])  # doctest: +SKIP
    """
    settings, statement = _adaptive(
        model, query_vector, k, oversample, where, offset, max_scan_tuples
    )
    return _run(session, settings, statement)


def exact_search(
    session: Session, model: type[_M], query_vector: Any, *, k: int = 10, where: Where = ()
) -> list[tuple[_M, float]]:
    """Exact search on the full vectors with index scans off for the rest of the transaction."""
    statement = exact_search_select(model, query_vector, k=k, where=where)
    return _run(session, exact_search_settings(), statement)


def _run(session: Session, settings: Select[Any], statement: Select[_M, float]) -> list[Any]:
    try:
        _require_transaction(session.connection())
        session.execute(settings)
        return _rows(session.execute(statement))
    except DBAPIError as exc:
        raise DatabaseError(f"search failed: {exc.orig}") from exc


async def search_async(
    session: AsyncSession,
    model: type[_M],
    query_vector: Any,
    *,
    k: int = 10,
    oversample: int = 8,
    where: Where = (),
    offset: int = 0,
    max_scan_tuples: int | None = None,
) -> list[tuple[_M, float]]:
    """Async twin of :func:`search`, for ``create_async_engine("postgresql+psycopg://...")``."""
    settings, statement = _adaptive(
        model, query_vector, k, oversample, where, offset, max_scan_tuples
    )
    return await _run_async(session, settings, statement)


async def exact_search_async(
    session: AsyncSession, model: type[_M], query_vector: Any, *, k: int = 10, where: Where = ()
) -> list[tuple[_M, float]]:
    """Async twin of :func:`exact_search`."""
    statement = exact_search_select(model, query_vector, k=k, where=where)
    return await _run_async(session, exact_search_settings(), statement)


async def _run_async(
    session: AsyncSession, settings: Select[Any], statement: Select[_M, float]
) -> list[Any]:
    try:
        connection = await session.connection()
        _require_transaction(connection.sync_connection)
        await session.execute(settings)
        return _rows(await session.execute(statement))
    except DBAPIError as exc:
        raise DatabaseError(f"search failed: {exc.orig}") from exc
