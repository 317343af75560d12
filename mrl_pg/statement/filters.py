"""Filters on a table's own columns, applied inside the candidate scan.

A filter is a mapping from column name to a condition::

    {"author_id": 5}                       # equality
    {"status": ["draft", "live"]}          # IN
    {"deleted_at": None}                   # IS NULL
    {"published": {"gte": "2024-01-01", "lt": "2025-01-01"}}
    {"score": {"ne": 0}, "editor_id": {"is_null": False}}

Operators: ``eq``, ``ne``, ``lt``, ``lte``, ``gt``, ``gte``, ``in``, ``not_in``,
``is_null``. Columns are checked against the table's description (names go
through ``sql.Identifier``); values are always parameters, cast to the
column's own type, so a text value compares with a uuid or a timestamp column.
Conditions are AND-ed. Because they sit in the candidate scan's ``WHERE``,
pgvector's iterative index scan keeps walking until the pool is full of
matching rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from mrl_pg.config import TableConfig
from mrl_pg.errors import InvalidSearchError

__all__ = ["ColumnFilter", "compile_where", "where_sql", "OPERATORS"]

_COMPARISONS = {"eq": "=", "ne": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
_SETS = {"in": "= ANY", "not_in": "<> ALL"}
_NULL_CHECKS = {"is_null": "IS NULL", "is_not_null": "IS NOT NULL"}
OPERATORS = (*_COMPARISONS, *_SETS, "is_null")

Shape = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ColumnFilter:
    """A validated filter: ``shape`` (column, operator) pairs fix the SQL text, ``values``
    are bound as parameters ``w0``, ``w1``, ..."""

    shape: Shape = ()
    values: tuple[Any, ...] = ()

    @property
    def params(self) -> dict[str, Any]:
        return {f"w{i}": value for i, ((_, op), value) in enumerate(zip(
            self.shape, self.values, strict=True)) if op not in _NULL_CHECKS}

    def __bool__(self) -> bool:
        return bool(self.shape)

    def merge(self, other: ColumnFilter) -> ColumnFilter:
        """Both filters' conditions (AND)."""
        return ColumnFilter(self.shape + other.shape, self.values + other.values)


def _scalar(column: str, op: str, value: Any) -> Any:
    if value is None:
        raise InvalidSearchError(
            f"where: {column!r} {op} None: use {{{column!r}: None}} or is_null for NULL checks")
    if isinstance(value, (Mapping, list, tuple, set, bytes)):
        raise InvalidSearchError(
            f"where: {column!r} {op} takes one value, got {type(value).__name__}")
    if isinstance(value, float) and value != value:
        raise InvalidSearchError(f"where: {column!r} {op} NaN matches nothing")
    return value


def _list(column: str, op: str, value: Any) -> list[Any]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise InvalidSearchError(
            f"where: {column!r} {op} takes a list of values, got {type(value).__name__}")
    if not value:
        raise InvalidSearchError(f"where: {column!r} {op} an empty list")
    return [_scalar(column, op, v) for v in value]


def compile_where(
    config: TableConfig, where: Mapping[str, Any] | None, *, tenant: Any = None
) -> ColumnFilter:
    """Validate ``where`` (and a ``tenant`` value) against ``config``'s columns."""
    if where is None:
        where = {}
    if not isinstance(where, Mapping):
        raise InvalidSearchError(
            f"where must be a mapping of column to condition, got {type(where).__name__}")
    columns = config.filterable_columns
    shape: list[tuple[str, str]] = []
    values: list[Any] = []
    if tenant is not None:
        if config.tenant_column is None:
            raise InvalidSearchError(
                f"tenant given, but table {config.qualified_name} has no tenant column")
        shape.append((config.tenant_column, "eq"))
        values.append(_scalar(config.tenant_column, "tenant", tenant))
    for column, condition in where.items():
        if column not in columns:
            known = ", ".join(columns) or "none"
            raise InvalidSearchError(
                f"where: table {config.qualified_name} has no filterable column {column!r} "
                f"(filterable: {known})")
        if condition is None:
            shape.append((column, "is_null"))
            values.append(None)
            continue
        if not isinstance(condition, Mapping):
            if isinstance(condition, (list, tuple)):
                condition = {"in": condition}
            else:
                condition = {"eq": condition}
        if not condition:
            raise InvalidSearchError(f"where: {column!r} has an empty condition")
        for op, value in condition.items():
            if op not in OPERATORS:
                raise InvalidSearchError(
                    f"where: unknown operator {op!r} for {column!r}; use one of "
                    f"{', '.join(OPERATORS)}")
            if op == "is_null":
                if not isinstance(value, bool):
                    raise InvalidSearchError(
                        f"where: {column!r} is_null takes true or false, got {value!r}")
                op, value = ("is_null" if value else "is_not_null"), None
            elif op in _SETS:
                if not columns[column][3]:  # an array column: no type for a list of arrays
                    raise InvalidSearchError(
                        f"where: {column!r} is an array column: {op} takes a list of single "
                        f"values; compare the whole array instead, e.g. "
                        f"{{{column!r}: {{'eq': '{{a,b}}'}}}}")
                value = _list(column, op, value)
            else:
                value = _scalar(column, op, value)
            shape.append((column, op))
            values.append(value)
    return ColumnFilter(tuple(shape), tuple(values))


def where_sql(config: TableConfig, shape: Shape) -> sql.Composed | None:
    """The AND of ``shape``'s conditions, with placeholders ``w<position>`` (None if empty)."""
    if not shape:
        return None
    columns = config.filterable_columns
    parts: list[sql.Composable] = []
    for i, (column, op) in enumerate(shape):
        name, type_schema, type_name, array_type = columns[column]
        ident, value = sql.Identifier(name), sql.Placeholder(f"w{i}")
        if op in _NULL_CHECKS:
            parts.append(sql.SQL("{} {}").format(ident, sql.SQL(_NULL_CHECKS[op])))
        elif op in _SETS:
            parts.append(sql.SQL("{} {}(CAST({} AS {}))").format(
                ident, sql.SQL(_SETS[op]), value, sql.Identifier(type_schema, array_type)))
        else:
            parts.append(sql.SQL("{} {} CAST({} AS {})").format(
                ident, sql.SQL(_COMPARISONS[op]), value, sql.Identifier(type_schema, type_name)))
    return sql.SQL(" AND ").join(parts)
