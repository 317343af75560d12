"""The ORM front end's search and model helpers (public names: :mod:`mrl_pg.sqlalchemy`)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

import psycopg
from pgvector.sqlalchemy import HALFVEC, VECTOR
from psycopg import sql
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Computed,
    DateTime,
    Identity,
    Index,
    PrimaryKeyConstraint,
    Select,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Mapped, QueryableAttribute, Session, declared_attr, mapped_column
from sqlalchemy.schema import SchemaItem

from mrl_pg.config import TableConfig
from mrl_pg.errors import DatabaseError, InvalidConfigError, one_line
from mrl_pg.schema.tables import TOAST_TUPLE_TARGET, check_constraints, render
from mrl_pg.sqlalchemy._target import (
    STALE_MARK,
    Where,
    adaptive_select,
    adaptive_settings,
    checked_target,
    conditions,
    exact_select,
    forget_recorded,
    model_target,
    rows,
    search_params,
    with_recorded_prefix,
)
from mrl_pg.sqlalchemy._target import search_params as _search_params  # noqa: F401 (tests use it)
from mrl_pg.statement.prefix import prefix_expression
from mrl_pg.statement.tuning import SearchTuning

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
    "VectorColumn",
]

_M = TypeVar("_M", bound="MrlMixin")
VectorColumn = QueryableAttribute[Any]
"""A mapped ``VECTOR(n)``/``HALFVEC(n)`` column of your own model, such as ``Article.embedding``."""


def _failed(exc: DBAPIError) -> DatabaseError:
    """The driver's error on one line (its message and detail), as a :class:`DatabaseError`."""
    orig = exc.orig
    reason = one_line(orig) if isinstance(orig, psycopg.Error) else " ".join(str(orig).split())
    return DatabaseError(f"search failed: {reason}")


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
        UniqueConstraint(*config.upsert_key, name=config.external_id_key_name),
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
    ``sort_order`` keeps these columns first, in :func:`mrl_pg.schema.tables.table_ddl`'s
    order, whatever columns the model adds. A config with a ``tenant_column``
    adds that ``text NOT NULL`` column under its own name (declare
    ``tenant: Mapped[str]`` yourself for a type checker to see it); list the
    mixin before the declarative base.
    """

    mrl_config: ClassVar[TableConfig]

    def __init_subclass__(cls, **kw: Any) -> None:
        # The tenant column's attribute is named after the column, so it cannot be a
        # declared_attr: it is added here, before the declarative base maps the class.
        config = getattr(cls, "mrl_config", None)
        tenant = config.tenant_column if isinstance(config, TableConfig) else None
        if tenant is not None and not any(tenant in vars(c) for c in cls.__mro__):
            setattr(cls, tenant, mapped_column(tenant, Text, nullable=False, sort_order=-65))
        super().__init_subclass__(**kw)

    @declared_attr.directive
    @classmethod
    def __tablename__(cls) -> str:
        return cls._mrl_config().name

    @declared_attr.directive
    @classmethod
    def __table_args__(cls) -> tuple[Any, ...]:
        config = cls._mrl_config()
        tenant = config.tenant_column
        if tenant is not None and not any(tenant in vars(c) for c in cls.__mro__):
            raise InvalidConfigError(
                f"{cls.__name__}: list MrlMixin before the declarative base "
                f"(class {cls.__name__}(MrlMixin, Base)), so it can add the tenant column")
        return table_args(config)

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


@overload
def search_select(
    model: type[_M], query_vector: Any, *, k: int = ..., oversample: int | None = ...,
    where: Where = ..., offset: int = ..., max_scan_tuples: int | None = ...,
    ef_search: int | None = ..., tuning: SearchTuning | None = ..., prefix_dim: int | None = ...,
) -> Select[_M, float]: ...
@overload
def search_select(
    model: VectorColumn, query_vector: Any, *, k: int = ..., oversample: int | None = ...,
    where: Where = ..., offset: int = ..., max_scan_tuples: int | None = ...,
    ef_search: int | None = ..., tuning: SearchTuning | None = ..., prefix_dim: int | None = ...,
) -> Select[Any, float]: ...
def search_select(
    model: type[_M] | VectorColumn,
    query_vector: Any,
    *,
    k: int = 10,
    oversample: int | None = None,
    where: Where = (),
    offset: int = 0,
    max_scan_tuples: int | None = None,
    ef_search: int | None = None,
    tuning: SearchTuning | None = None,
    prefix_dim: int | None = None,
) -> Select[Any, float]:
    """The adaptive search as a composable ``SELECT (model, distance)``, settings included.

    ``model`` is an :class:`MrlMixin` model, or a vector column of your own
    model (``Article.embedding``) whose table was adopted
    (:func:`mrl_pg.index.adopt.adopt_table`); for a column pass ``prefix_dim`` (the
    one it was adopted with), which :func:`search` reads from the catalog instead.
    ``oversample`` and ``ef_search`` left unset come from what ``mrl-pg tune``
    stored for the table, read in the database as the statement runs (in the
    same round trip), or from ``tuning`` when one is given.

    Same plan as :func:`mrl_pg.statement.query.adaptive_search_sql`: a MATERIALIZED CTE
    takes ``(offset + k) * oversample`` rows matching ``where`` in order of
    prefix distance (the HNSW index) with their full cosine distance, the best
    ``offset + k`` of them are joined back to the table on its primary key.
    The model's columns are ``stmt.selected_columns``, so joins compose::

        stmt = search_select(Document, q, k=10)
        stmt = stmt.join(Note, Note.document_id == stmt.selected_columns.id)

    Executing it applies its HNSW settings for that statement only (see the
    module docstring), so ``session.execute(stmt)`` always gets its full pool.
    Page with ``offset=`` and ``k=``: the statement refuses a later ``.offset()``,
    ``.limit()``, ``.slice()`` or ``.fetch()`` (its pool is sized for the page asked
    for). A row whose embedding is NULL is never a result.
    """
    params = search_params(k, oversample, offset, max_scan_tuples, ef_search, tuning)
    target = model_target(model, prefix_dim)
    settings = adaptive_settings(target, params, oversample=oversample, ef_search=ef_search,
                                 tuning=tuning)
    return adaptive_select(target, query_vector, settings, k=k, offset=offset, where=where)


@overload
def exact_search_select(
    model: type[_M], query_vector: Any, *, k: int = ..., where: Where = ..., offset: int = ...,
) -> Select[_M, float]: ...
@overload
def exact_search_select(
    model: VectorColumn, query_vector: Any, *, k: int = ..., where: Where = ..., offset: int = ...,
) -> Select[Any, float]: ...
def exact_search_select(
    model: type[_M] | VectorColumn, query_vector: Any, *, k: int = 10, where: Where = (),
    offset: int = 0,
) -> Select[Any, float]:
    """Full-dimension cosine over every row matching ``where``: ground truth, small tables.

    ``model`` as for :func:`search_select`; a column needs no adoption here.
    Carries settings that turn index scans off for this statement, so no index
    scan replaces the full comparison.
    """
    return exact_select(model_target(model, None), query_vector, k=k, where=where,
                        offset=offset)


@overload
def search(
    session: Session, model: type[_M], query_vector: Any, *, k: int = ...,
    oversample: int | None = ..., where: Where = ..., offset: int = ...,
    max_scan_tuples: int | None = ..., ef_search: int | None = ..., prefix_dim: int | None = ...,
) -> list[tuple[_M, float]]: ...
@overload
def search(
    session: Session, model: VectorColumn, query_vector: Any, *, k: int = ...,
    oversample: int | None = ..., where: Where = ..., offset: int = ...,
    max_scan_tuples: int | None = ..., ef_search: int | None = ..., prefix_dim: int | None = ...,
) -> list[tuple[Any, float]]: ...
def search(
    session: Session,
    model: type[_M] | VectorColumn,
    query_vector: Any,
    *,
    k: int = 10,
    oversample: int | None = None,
    where: Where = (),
    offset: int = 0,
    max_scan_tuples: int | None = None,
    ef_search: int | None = None,
    prefix_dim: int | None = None,
) -> list[tuple[Any, float]]:
    """Adaptive search: ``(model instance, cosine distance)`` pairs, nearest first.

    ``model`` is an :class:`MrlMixin` model or a vector column of your own
    model whose table was adopted; ``prefix_dim`` left out is what the adoption
    recorded (read once per connection). Runs :func:`search_select` in the
    session's transaction; its settings end with the statement. ``oversample``
    and ``ef_search`` default to what ``mrl-pg tune`` stored for the table, read
    in the database in the same round trip. ``where`` takes any SQLAlchemy condition on
    the table; filter on other tables through a subquery (``IN``, ``EXISTS``).

    >>> search(session, Document, q, where=[Document.meta["lang"].astext == "en"])  # doctest: +SKIP
    >>> search(session, Article.embedding, q, where=[Article.author_id == 5])  # doctest: +SKIP
    """
    where = conditions(where)
    checked = checked_target(model, query_vector, prefix_dim, k, oversample, where, offset,
                             max_scan_tuples, ef_search)
    for attempt in (1, 2):
        try:
            target = checked
            if target.config is None:
                target = with_recorded_prefix(session.connection(), target)
            params = search_params(k, oversample, offset, max_scan_tuples, ef_search)
            settings = adaptive_settings(target, params, oversample=oversample,
                                         ef_search=ef_search, tuning=None)
            statement = adaptive_select(target, query_vector, settings, k=k, offset=offset,
                                        where=where)
            return rows(session.execute(statement))
        except DBAPIError as exc:
            if attempt == 1 and STALE_MARK in str(exc.orig):
                forget_recorded(session.connection())  # adopted again since: read it anew
                continue
            raise _failed(exc) from exc
    raise AssertionError("unreachable")


@overload
def exact_search(
    session: Session, model: type[_M], query_vector: Any, *, k: int = ..., where: Where = ...,
    offset: int = ...,
) -> list[tuple[_M, float]]: ...
@overload
def exact_search(
    session: Session, model: VectorColumn, query_vector: Any, *, k: int = ...,
    where: Where = ..., offset: int = ...,
) -> list[tuple[Any, float]]: ...
def exact_search(
    session: Session, model: type[_M] | VectorColumn, query_vector: Any, *, k: int = 10,
    where: Where = (), offset: int = 0,
) -> list[tuple[Any, float]]:
    """Exact search on the full vectors (index scans off for this statement only)."""
    statement = exact_search_select(model, query_vector, k=k, where=where, offset=offset)
    try:
        return rows(session.execute(statement))
    except DBAPIError as exc:
        raise _failed(exc) from exc


@overload
async def search_async(
    session: AsyncSession, model: type[_M], query_vector: Any, *, k: int = ...,
    oversample: int | None = ..., where: Where = ..., offset: int = ...,
    max_scan_tuples: int | None = ..., ef_search: int | None = ..., prefix_dim: int | None = ...,
) -> list[tuple[_M, float]]: ...
@overload
async def search_async(
    session: AsyncSession, model: VectorColumn, query_vector: Any, *, k: int = ...,
    oversample: int | None = ..., where: Where = ..., offset: int = ...,
    max_scan_tuples: int | None = ..., ef_search: int | None = ..., prefix_dim: int | None = ...,
) -> list[tuple[Any, float]]: ...
async def search_async(
    session: AsyncSession,
    model: type[_M] | VectorColumn,
    query_vector: Any,
    *,
    k: int = 10,
    oversample: int | None = None,
    where: Where = (),
    offset: int = 0,
    max_scan_tuples: int | None = None,
    ef_search: int | None = None,
    prefix_dim: int | None = None,
) -> list[tuple[Any, float]]:
    """Async twin of :func:`search`, for :func:`mrl_pg.db.create_async_engine`."""
    where = conditions(where)
    checked = checked_target(model, query_vector, prefix_dim, k, oversample, where, offset,
                             max_scan_tuples, ef_search)
    for attempt in (1, 2):
        try:
            target = checked
            connection = await session.connection()
            if target.config is None:
                target = await connection.run_sync(with_recorded_prefix, target)
            params = search_params(k, oversample, offset, max_scan_tuples, ef_search)
            settings = adaptive_settings(target, params, oversample=oversample,
                                         ef_search=ef_search, tuning=None)
            statement = adaptive_select(target, query_vector, settings, k=k, offset=offset,
                                        where=where)
            return rows(await session.execute(statement))
        except DBAPIError as exc:
            if attempt == 1 and STALE_MARK in str(exc.orig):
                await connection.run_sync(forget_recorded)  # adopted again since
                continue
            raise _failed(exc) from exc
    raise AssertionError("unreachable")


@overload
async def exact_search_async(
    session: AsyncSession, model: type[_M], query_vector: Any, *, k: int = ...,
    where: Where = ..., offset: int = ...,
) -> list[tuple[_M, float]]: ...
@overload
async def exact_search_async(
    session: AsyncSession, model: VectorColumn, query_vector: Any, *, k: int = ...,
    where: Where = ..., offset: int = ...,
) -> list[tuple[Any, float]]: ...
async def exact_search_async(
    session: AsyncSession, model: type[_M] | VectorColumn, query_vector: Any, *, k: int = 10,
    where: Where = (), offset: int = 0,
) -> list[tuple[Any, float]]:
    """Async twin of :func:`exact_search`."""
    statement = exact_search_select(model, query_vector, k=k, where=where, offset=offset)
    try:
        return rows(await session.execute(statement))
    except DBAPIError as exc:
        raise _failed(exc) from exc
