"""What an ORM search runs against, and the statements it builds.

A target is an :class:`~mrl_pg.sqlalchemy.MrlMixin` model, or a ``VECTOR(n)``/
``HALFVEC(n)`` column of any mapped class (``Article.embedding``). For a column
the prefix dimension is what the table's adoption recorded on its prefix index
(read from the catalog once per connection), so the candidate ``ORDER BY`` is
exactly the indexed expression: the core's own (:data:`mrl_pg.statement.stages.PREFIX_HNSW`).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, cast

import psycopg
from pgvector.sqlalchemy import HALFVEC, VECTOR
from psycopg import sql
from sqlalchemy import (
    BindParameter,
    Column,
    ColumnElement,
    ColumnExpressionArgument,
    Float,
    Select,
    TextClause,
    and_,
    bindparam,
    func,
    literal_column,
    select,
    text,
    type_coerce,
    union_all,
)
from sqlalchemy import cast as sa_cast
from sqlalchemy.engine import Connection, Result
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import ColumnProperty, QueryableAttribute

from mrl_pg.config import TableConfig
from mrl_pg.errors import InvalidConfigError, InvalidSearchError
from mrl_pg.schema.catalog import describe_table
from mrl_pg.schema.tables import render
from mrl_pg.sqlalchemy._settings import _with_settings
from mrl_pg.statement.prefix import prefix_expression
from mrl_pg.statement.query import (
    ADAPTIVE_SETTING_NAMES,
    EXACT_SETTINGS,
    MAX_MATCH_COUNT,
    POOL_SQL,
    SearchParams,
    adaptive_settings_sql,
    settings_parameters,
    settings_sql,
)
from mrl_pg.statement.round_trip import SettingsStatement
from mrl_pg.statement.stages import PREFIX_HNSW
from mrl_pg.statement.tuning import DEFAULT_TUNING, SearchTuning
from mrl_pg.vectors import as_embedding

Where = Iterable[ColumnExpressionArgument[bool]]

# The query is cast exactly as in mrl_pg.statement.query (``q::vector``); its prefix is
# derived by schema.prefix_expression, the function that derives the stored one.
_QUERY_SQL = "CAST(:mrl_query AS vector)"
# Stands for the query while a psycopg statement is rendered, so that every other
# colon (a quoted column name may hold one) can be escaped for text().
_QUERY_MARK = "\0mrl_query\0"


@dataclass(frozen=True)
class Target:
    """The model searched, the columns a candidate carries, and how distances are written.

    ``config`` is None for a column whose prefix dimension is still to be read
    from the catalog (:func:`with_recorded_prefix`).
    """

    model: type[Any]
    key: tuple[ColumnElement[Any], ...]
    full_dim: int
    config: TableConfig | None
    embedding: Column[Any] | None = None  # None for an MrlMixin model
    index_definition: str | None = None  # the prefix index as read from the catalog

    @property
    def described(self) -> TableConfig:
        if self.config is None:
            raise InvalidConfigError(
                f"{self.model.__name__}.{self.embedding_name}: the prefix dimension is read from "
                "the adopted table through a session; search_select() has none, so pass "
                "prefix_dim= (what the table was adopted with)")
        return self.config

    @property
    def embedding_column(self) -> ColumnElement[Any]:
        """The stored embedding: a row where it is NULL is never a candidate nor a result."""
        if self.embedding is None:
            mixin: Any = self.model
            return cast("ColumnElement[Any]", mixin.embedding)
        return self.embedding

    @property
    def embedding_name(self) -> str:
        return self.embedding.key if self.embedding is not None else "embedding"

    def query(self, vector: Any) -> BindParameter[Any]:
        prefix_dim = self.config.prefix_dim if self.config is not None else None
        checked = as_embedding(vector, self.full_dim, prefix_dim=prefix_dim,
                               what="query embedding")
        return bindparam("mrl_query", checked, type_=VECTOR(self.full_dim), unique=True)

    def distance(self, query: BindParameter[Any]) -> ColumnElement[float]:
        """Full-dimension cosine distance of the stored embedding to the query, which is
        cast to the column's own type (``halfvec(n)`` for a halfvec column)."""
        full = text(_QUERY_SQL).bindparams(query)
        if self.embedding is None:
            mixin: Any = self.model
            return cast("ColumnElement[float]", mixin.embedding.cosine_distance(full))
        return cast("ColumnElement[float]",
                    self.embedding.cosine_distance(sa_cast(full, self.embedding.type)))

    def prefix_order(self, query: BindParameter[Any]) -> ColumnElement[Any]:
        """The candidate ordering: exactly the indexed expression and its operator."""
        config = self.described
        if self.embedding is None:
            mixin: Any = self.model
            expression = prefix_expression(sql.SQL(_QUERY_SQL), config.prefix_dim)
            return cast("ColumnElement[Any]", mixin.embedding_prefix.cosine_distance(
                text(render(expression)).bindparams(query)))
        return type_coerce(_text(PREFIX_HNSW.order_by(config, sql.SQL(_QUERY_MARK)), query),
                           Float)

    def check_froms(self, statement: Select[Any]) -> None:
        # The prefix ordering names the embedding unqualified (exactly as the index
        # holds it), and a second table in the candidate scan would multiply its rows.
        if self.embedding is None:
            return
        froms = statement.get_final_froms()
        if froms != [self.embedding.table]:
            others = ", ".join(str(f) for f in froms if f is not self.embedding.table)
            raise InvalidSearchError(
                f"where= brings another table ({others}) into the search of "
                f"{self.embedding.table.name}: filter on it through a subquery instead, "
                "col.in_(select(Other.id).where(...)) or exists().where(...)")


def _text(statement: sql.Composable, query: BindParameter[Any]) -> TextClause:
    rendered = render(statement).replace(":", "\\:").replace(_QUERY_MARK, _QUERY_SQL)
    return text(rendered).bindparams(query)


def model_target(model: Any, prefix_dim: int | None) -> Target:
    """The target for an MrlMixin model (``model``) or a mapped vector column."""
    if isinstance(model, QueryableAttribute):
        return _column_target(model, prefix_dim)
    config_of = getattr(model, "_mrl_config", None)
    if not isinstance(model, type) or config_of is None or not hasattr(model, "id"):
        raise InvalidConfigError(
            "search needs an MrlMixin model or a mapped vector column such as "
            f"Article.embedding, got {model!r}")
    config: TableConfig = config_of()
    if prefix_dim is not None and prefix_dim != config.prefix_dim:
        raise InvalidConfigError(
            f"{model.__name__} has prefix_dim {config.prefix_dim} (its mrl_config), "
            f"got prefix_dim={prefix_dim!r}")
    mixin: Any = model
    return Target(model=model, key=(mixin.id,), full_dim=config.full_dim, config=config)


def _column_target(attribute: QueryableAttribute[Any], prefix_dim: int | None) -> Target:
    parent = attribute.parent
    name = f"{attribute.class_.__name__}.{attribute.key}"
    if parent.is_aliased_class:
        raise InvalidConfigError(f"{name}: search the mapped class's column, not an alias's")
    prop = attribute.property
    columns = prop.columns if isinstance(prop, ColumnProperty) else []
    column = columns[0] if len(columns) == 1 else None
    if not isinstance(column, Column) or not isinstance(column.type, VECTOR | HALFVEC):
        what = column.type if column is not None else type(prop).__name__
        raise InvalidConfigError(
            f"{name} is {what}, not a pgvector VECTOR(n) or HALFVEC(n) column")
    dim = column.type.dim
    if dim is None:
        raise InvalidConfigError(f"{name} has no dimension: map it as {column.type}(n)")
    table = column.table
    key = tuple(table.primary_key.columns)
    if not key:
        raise InvalidConfigError(
            f"{name}: table {table.name} has no primary key to join the best rows back on")
    target = Target(model=parent.class_, key=key, full_dim=dim, config=None, embedding=column)
    if prefix_dim is None:
        return target
    return replace(target, config=TableConfig(
        name=table.name, schema=table.schema, full_dim=dim, prefix_dim=prefix_dim,
        embedding_column=column.name,
        embedding_type="halfvec" if isinstance(column.type, HALFVEC) else "vector",
        prefix_column=None, key=tuple(c.name for c in key), metadata_column=None, adopted=True))


class _CatalogConnection:
    """What :func:`mrl_pg.schema.catalog.describe_table` uses of a psycopg connection, over a
    SQLAlchemy connection: the same catalog read then serves sync and async sessions
    (``run_sync``), in the session's transaction."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._result: Result[Any] | None = None

    def cursor(self) -> _CatalogConnection:
        return self

    def __enter__(self) -> _CatalogConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self._result = None

    def execute(self, query: str | sql.Composable, params: Any = None,
                **_: Any) -> _CatalogConnection:
        statement = query if isinstance(query, str) else render(query)
        self._result = self._connection.exec_driver_sql(statement, params)
        return self

    def _executed(self) -> Any:
        if self._result is None:
            raise InvalidConfigError("catalog read: fetch before execute")
        return self._result

    def fetchone(self) -> Any:
        return self._executed().fetchone()

    def fetchall(self) -> Any:
        return self._executed().fetchall()


# What each connection read of each adopted table, with its prefix index's definition:
# one catalog read per connection, checked by every search (see prefix_index_guard).
_RECORDED: weakref.WeakKeyDictionary[
    Any, dict[tuple[str | None, str], tuple[TableConfig, str | None]]] = (
    weakref.WeakKeyDictionary())

STALE_MARK = "mrl_pg: the prefix index changed since this connection read it"


def forget_recorded(connection: Connection) -> None:
    """Drop what ``connection`` read of adopted tables (after :data:`STALE_MARK`)."""
    _RECORDED.pop(connection.connection.driver_connection, None)


def prefix_index_guard(target: Target) -> tuple[sql.Composed, dict[str, Any]] | None:
    """A settings value that fails the search (with :data:`STALE_MARK`) when the prefix
    index is no longer the one read from the catalog: released and adopted again with
    another prefix, the search would otherwise sort the whole table by a stale expression.
    The index's name and definition travel as parameters (a name may hold a ``%``)."""
    if target.index_definition is None or target.config is None:
        return None
    index = target.config.qualified(target.config.hnsw_index_name).as_string(None)
    current = sql.SQL("pg_catalog.pg_get_indexdef(to_regclass(%(prefix_index)s))")
    guard = sql.SQL(
        "CASE WHEN {current} IS DISTINCT FROM %(prefix_index_definition)s "
        "THEN ({mark} || coalesce({current}, ''))::integer ELSE 1 END"
    ).format(current=current, mark=sql.Literal(STALE_MARK + ": "))
    return guard, {"prefix_index": index, "prefix_index_definition": target.index_definition}


def with_recorded_prefix(connection: Connection, target: Target) -> Target:
    """``target`` with the prefix its table's adoption recorded (no-op if already known)."""
    if target.config is not None or target.embedding is None:
        return target
    column = target.embedding
    table = column.table
    cache = _RECORDED.setdefault(connection.connection.driver_connection, {})
    cached = cache.get((table.schema, table.name))
    if cached is None:
        catalog = cast("psycopg.Connection[Any]", _CatalogConnection(connection))
        recorded = describe_table(catalog, table.name, schema=table.schema)
        index = recorded.qualified(recorded.hnsw_index_name).as_string(None)
        definition = connection.exec_driver_sql(
            "SELECT pg_catalog.pg_get_indexdef(to_regclass(%(index)s))",
            {"index": index}).scalar_one()
        cached = cache[(table.schema, table.name)] = (recorded, definition)
    recorded, definition = cached
    name = f"{target.model.__name__}.{column.key}"
    kind = "halfvec" if isinstance(column.type, HALFVEC) else "vector"
    if recorded.embedding_column != column.name:
        raise InvalidConfigError(
            f"{name}: table {table.name} was adopted for its column "
            f"{recorded.embedding_column!r}, not {column.name!r}; adopt it for this column")
    if (recorded.full_dim, recorded.embedding_type) != (target.full_dim, kind):
        raise InvalidConfigError(
            f"{name} is mapped as {kind}({target.full_dim}) but the table holds "
            f"{recorded.embedding_type}({recorded.full_dim})")
    return replace(target, index_definition=definition, config=TableConfig(
        name=table.name, schema=recorded.schema or table.schema, full_dim=target.full_dim,
        prefix_dim=recorded.prefix_dim, embedding_column=column.name, embedding_type=kind,
        prefix_column=recorded.prefix_column, key=tuple(c.name for c in target.key),
        metadata_column=None, hnsw_m=recorded.hnsw_m,
        hnsw_ef_construction=recorded.hnsw_ef_construction, adopted=True))


def conditions(where: Where) -> tuple[Any, ...]:
    """``where`` as a tuple of SQL conditions, or an :class:`InvalidSearchError` naming what
    is not one (a string or a dict would otherwise be taken apart into its characters or keys).
    """
    if isinstance(where, (str, bytes, Mapping)) or not isinstance(where, Iterable):
        raise InvalidSearchError(
            "where= takes a list of SQLAlchemy conditions such as [Article.author_id == 5], "
            f"got a {type(where).__name__}")
    where = tuple(where)
    for condition in where:
        try:
            and_(condition)
        except ArgumentError:
            raise InvalidSearchError(
                "where= takes SQLAlchemy conditions such as Article.author_id == 5 "
                f"(text() for raw SQL), got {condition!r}") from None
    return where


def search_params(
    k: int, oversample: int | None, offset: int, max_scan_tuples: int | None,
    ef_search: int | None, tuning: SearchTuning | None = None,
) -> SearchParams:
    tuning = tuning if tuning is not None else DEFAULT_TUNING
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


class SearchSelect(Select[Any]):
    """What :func:`mrl_pg.sqlalchemy.search_select` returns: a ``Select`` that composes
    (joins, more columns, ``where`` on the result), but refuses ``offset``/``limit``,
    ``slice`` and ``fetch``: its rows are already the page asked for (the best ``k`` after
    ``offset`` of a pool sized for them), so a later ``.offset(10)`` would silently
    return nothing. Pass ``k=`` and ``offset=`` to ``search_select`` instead."""

    inherit_cache = True

    def _refuse(self, what: str) -> InvalidSearchError:
        return InvalidSearchError(
            f"{what} on search_select(...) cannot page a search whose pool is already "
            "taken: pass k= and offset= to search_select (offset=10, k=10 is rows 11-20)")

    def offset(self, *args: Any, **kw: Any) -> Any:
        raise self._refuse(".offset()")

    def limit(self, *args: Any, **kw: Any) -> Any:
        raise self._refuse(".limit()")

    def slice(self, *args: Any, **kw: Any) -> Any:
        raise self._refuse(".slice()")

    def fetch(self, *args: Any, **kw: Any) -> Any:
        raise self._refuse(".fetch()")


def adaptive_settings(
    target: Target, params: SearchParams, *, oversample: int | None, ef_search: int | None,
    tuning: SearchTuning | None,
) -> SettingsStatement:
    """The settings statement of an ORM search: the table's tuning read in the database
    unless ``tuning`` is given or ``oversample`` and ``ef_search`` both are."""
    values = settings_parameters(params, oversample=oversample, ef_search=ef_search)
    known = tuning if tuning is not None else DEFAULT_TUNING
    guard = prefix_index_guard(target)
    extra: list[tuple[str, sql.Composable]] = []
    if guard is not None:
        extra.append((GUARD_SETTING, guard[0]))
        values = values | guard[1]
    names = ADAPTIVE_SETTING_NAMES + tuple(name for name, _ in extra)
    untuned = SettingsStatement(
        adaptive_settings_sql(target.described, read_tuning=False, tuning=known, extra=extra),
        values, names)
    if tuning is not None or (oversample is not None and ef_search is not None):
        return untuned
    return SettingsStatement(adaptive_settings_sql(target.described, extra=extra), values,
                             names, without_tuning=untuned)


GUARD_SETTING = "mrl_pg_search.index_checked"


_POOL: ColumnElement[int] = literal_column(render(POOL_SQL))


def adaptive_select(
    target: Target, query_vector: Any, settings: SettingsStatement, *, k: int, offset: int,
    where: Where,
) -> Select[Any]:
    """See :func:`mrl_pg.sqlalchemy.search_select`: the pool is what ``settings`` chose."""
    where = conditions(where)
    query = target.query(query_vector)
    names = [c.name for c in target.key]
    scan = select(*(c.label(n) for c, n in zip(target.key, names, strict=True)),
                  target.distance(query).label("distance")).where(
        target.embedding_column.is_not(None), *where)
    target.check_froms(scan)
    candidates = (
        scan.order_by(target.prefix_order(query))
        .limit(_POOL)
        .cte("candidates")
        .prefix_with("MATERIALIZED")
    )
    best = (
        select(*(candidates.c[n] for n in names), candidates.c.distance)
        .order_by(candidates.c.distance, *(candidates.c[n] for n in names))
        .limit(k + offset)
        .cte("best")
        .prefix_with("MATERIALIZED")
    )
    # A walk that came back short is replaced by the exact answer, in the same
    # statement (see mrl_pg.statement.query.adaptive_search_sql); "+ 0" keeps any index
    # on the full vector out of it.
    short = select(func.count()).select_from(candidates).scalar_subquery() < _POOL
    exact_distance = target.distance(query)
    missed = (
        select(*(c.label(n) for c, n in zip(target.key, names, strict=True)),
               exact_distance.label("distance"))
        .where(target.embedding_column.is_not(None), *where, short)
        .order_by(exact_distance + 0, *target.key)
        .limit(k + offset)
        .cte("missed")
        .prefix_with("MATERIALIZED")
    )
    found = union_all(
        select(*(best.c[n] for n in names), best.c.distance).where(~short),
        select(*(missed.c[n] for n in names), missed.c.distance),
    ).cte("found")
    statement = (
        select(target.model, found.c.distance.label("distance"))
        .join(found, and_(*(c == found.c[n] for c, n in zip(target.key, names, strict=True))))
        .order_by(found.c.distance, *(found.c[n] for n in names))
        .limit(k)
    )
    if offset:
        statement = statement.offset(offset)
    paged = SearchSelect.__new__(SearchSelect)
    paged.__dict__.update(statement.__dict__)
    return _with_settings(paged, settings)


def exact_select(target: Target, query_vector: Any, *, k: int, where: Where,
                 offset: int = 0) -> Select[Any]:
    """See :func:`mrl_pg.sqlalchemy.exact_search_select`."""
    where = conditions(where)
    SearchParams(k=k, oversample=1, offset=offset)
    query = target.query(query_vector)
    distance = target.distance(query).label("distance")
    target.check_froms(select(*target.key).where(*where))
    statement = select(target.model, distance).where(
        target.embedding_column.is_not(None), *where).order_by(distance, *target.key)
    if offset:
        statement = statement.offset(offset)
    return _with_settings(statement.limit(k), _EXACT)


_EXACT = SettingsStatement(settings_sql(EXACT_SETTINGS), None,
                           tuple(name for name, _ in EXACT_SETTINGS))


def checked_target(
    model: Any, query_vector: Any, prefix_dim: int | None, k: int, oversample: int | None,
    where: tuple[Any, ...], offset: int, max_scan_tuples: int | None, ef_search: int | None,
) -> Target:
    """The target, once everything that can be checked before any SQL has been: a column
    whose prefix is still to be read gets its statement checked once that is known."""
    target = model_target(model, prefix_dim)
    params = search_params(k, oversample, offset, max_scan_tuples, ef_search)
    target.query(query_vector)
    if target.config is not None:
        settings = adaptive_settings(target, params, oversample=oversample, ef_search=ef_search,
                                     tuning=None)
        adaptive_select(target, query_vector, settings, k=k, offset=offset, where=where)
    return target


def rows(result: Iterable[Any]) -> list[tuple[Any, float]]:
    return [(row[0], float(row[1])) for row in result]
