"""The filter language: conditions on a table's own columns, applied inside the candidate scan.

A filter is a mapping from column name to a condition (``docs/filters.md``)::

    {"author_id": 5}                       # equality
    {"status": ["draft", "live"]}          # IN
    {"deleted_at": None}                   # IS NULL
    {"published": {"gte": "2024-01-01", "lt": "2025-01-01"}}
    {"score": {"ne": 0}, "editor_id": {"is_null": False}}
    {"tags": {"contains": ["red"]}, "attrs": {"contains": {"lang": "en"}}}

Operators: ``eq``, ``ne``, ``lt``, ``lte``, ``gt``, ``gte``, ``in``, ``not_in``,
``is_null``, and ``contains`` for jsonb and array columns. Columns are checked
against the table's description (names go through ``sql.Identifier``); values
are always parameters, cast to the column's own type, so a text value compares
with a uuid or a timestamp column. A number with a fraction compared with an
integer column is compared as ``numeric`` (``score >= 2.5`` keeps 3 and 4,
``score = 1.5`` keeps nothing), never rounded to the column's type.
Conditions are AND-ed. Because they sit in the candidate scan's ``WHERE``,
pgvector's iterative index scan keeps walking until the pool is full of
matching rows.

The same grammar reaches the adopted table's SQL function as JSON:
:func:`json_filter_sql` renders, for every column and operator, the condition
:func:`condition_sql` writes for the Python front ends, with the value read
from the JSON object instead of a parameter. One renderer, two value sources.
"""

from __future__ import annotations

import decimal
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from mrl_pg.config import ColumnType, TableConfig
from mrl_pg.errors import InvalidSearchError

__all__ = [
    "ColumnFilter", "compile_where", "where_sql", "OPERATORS", "operators_for",
    "condition_sql", "json_filter_sql", "VALUE_KINDS",
]

_COMPARISONS = {"eq": "=", "ne": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
_SETS = {"in": "= ANY", "not_in": "<> ALL"}
_NULL_CHECKS = {"is_null": "IS NULL", "is_not_null": "IS NOT NULL"}
OPERATORS = (*_COMPARISONS, *_SETS, "is_null", "contains")

VALUE_KINDS = {**{op: "scalar" for op in _COMPARISONS}, **{op: "list" for op in _SETS},
               "is_null": "boolean", "contains": "contained"}
"""What each operator takes: one value, a non-empty list, true/false, or what a column holds."""

_INTEGERS = ("int2", "int4", "int8")
NUMERIC = "numeric"  # a shape entry's kind: compare as numeric (a fraction on an integer column)

# (column, operator, kind): the kind is "" or NUMERIC.
Shape = tuple[tuple[str, str, str], ...]


def _is_array(ctype: ColumnType) -> bool:
    return ctype[2].startswith("_")


def _is_jsonb(ctype: ColumnType) -> bool:
    return ctype[1:3] == ("pg_catalog", "jsonb")


def _is_integer(ctype: ColumnType) -> bool:
    return ctype[1] == "pg_catalog" and ctype[2] in _INTEGERS


def operators_for(ctype: ColumnType) -> tuple[str, ...]:
    """The operators a column of this type takes: ``contains`` only on jsonb and arrays,
    ``in``/``not_in`` not on arrays (compare the whole array with ``eq``)."""
    ops = [*_COMPARISONS]
    if not _is_array(ctype):
        ops += [*_SETS]
    ops.append("is_null")
    if _is_array(ctype) or _is_jsonb(ctype):
        ops.append("contains")
    return tuple(ops)


@dataclass(frozen=True)
class ColumnFilter:
    """A validated filter: ``shape`` (column, operator, kind) entries fix the SQL text,
    ``values`` are bound as parameters ``w0``, ``w1``, ..."""

    shape: Shape = ()
    values: tuple[Any, ...] = ()

    @property
    def params(self) -> dict[str, Any]:
        return {f"w{i}": value for i, ((_, op, _), value) in enumerate(zip(
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
    values = [_scalar(column, op, v) for v in value]
    numbers = {type(v) for v in values if isinstance(v, (int, float, decimal.Decimal))
               and not isinstance(v, bool)}
    if len(numbers) > 1:  # one array parameter holds one type: [1.5, 3] as numeric
        values = [decimal.Decimal(str(v)) if type(v) in numbers else v for v in values]
    return values


def _fraction(value: Any) -> bool:
    """A number with a fractional part (what an integer column must compare as numeric)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return not value.is_integer()
    if isinstance(value, decimal.Decimal):
        return value.is_finite() and value != value.to_integral_value()
    return False


def _contained(column: str, ctype: ColumnType, value: Any) -> Any:
    if _is_jsonb(ctype):
        try:
            return json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidSearchError(
                f"where: {column!r} contains takes a JSON value: {exc}") from None
    return _list(column, "contains", value)


def _condition(column: str, ctype: ColumnType, op: str, value: Any) -> tuple[str, str, Any]:
    """One (operator, kind, bound value) of ``column``, or an error naming what is wrong."""
    if op not in OPERATORS:
        hint = (f" (containment on a jsonb column: {{{column!r}: {{'contains': {{...}}}}}})"
                if _is_jsonb(ctype) else "")
        raise InvalidSearchError(
            f"where: unknown operator {op!r} for {column!r}; use one of "
            f"{', '.join(OPERATORS)}{hint}")
    if op not in operators_for(ctype):
        if op in _SETS:
            raise InvalidSearchError(
                f"where: {column!r} is an array column: {op} takes a list of single "
                f"values; compare the whole array instead, e.g. "
                f"{{{column!r}: {{'eq': '{{a,b}}'}}}}, or use contains")
        raise InvalidSearchError(
            f"where: {column!r} is {ctype[2]}: {op} applies to jsonb and array columns only")
    if op == "is_null":
        if not isinstance(value, bool):
            raise InvalidSearchError(
                f"where: {column!r} is_null takes true or false, got {value!r}")
        return ("is_null" if value else "is_not_null"), "", None
    if op == "contains":
        return op, "", _contained(column, ctype, value)
    if op in _SETS:
        values = _list(column, op, value)
        numeric = _is_integer(ctype) and any(_fraction(v) for v in values)
        return op, NUMERIC if numeric else "", values
    value = _scalar(column, op, value)
    return op, NUMERIC if _is_integer(ctype) and _fraction(value) else "", value


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
    shape: list[tuple[str, str, str]] = []
    values: list[Any] = []
    if tenant is not None:
        if config.tenant_column is None:
            raise InvalidSearchError(
                f"tenant given, but table {config.qualified_name} has no tenant column")
        shape.append((config.tenant_column, "eq", ""))
        values.append(_scalar(config.tenant_column, "tenant", tenant))
    for column, condition in where.items():
        if column not in columns:
            known = ", ".join(columns) or "none"
            raise InvalidSearchError(
                f"where: table {config.qualified_name} has no filterable column {column!r} "
                f"(filterable: {known})")
        if condition is None:
            condition = {"is_null": True}
        elif not isinstance(condition, Mapping):
            condition = {"in" if isinstance(condition, (list, tuple)) else "eq": condition}
        if not condition:
            raise InvalidSearchError(f"where: {column!r} has an empty condition")
        for op, value in condition.items():
            op, kind, bound = _condition(column, columns[column], op, value)
            shape.append((column, op, kind))
            values.append(bound)
    return ColumnFilter(tuple(shape), tuple(values))


@dataclass(frozen=True)
class _Value:
    """How a condition's value is written: ``scalar`` casts to a type, ``array`` to an array
    type, ``json`` is jsonb."""

    scalar: sql.Composable
    array: sql.Composable
    json: sql.Composable


def _cast(value: sql.Composable, type_schema: str, type_name: str) -> sql.Composed:
    return sql.SQL("CAST({} AS {})").format(value, sql.Identifier(type_schema, type_name))


def condition_sql(ctype: ColumnType, op: str, kind: str, value: _Value) -> sql.Composed:
    """One condition of the grammar on one column: the only place its SQL is written."""
    name, type_schema, type_name, array_type = ctype
    column: sql.Composable = sql.Identifier(name)
    if op in _NULL_CHECKS:
        return sql.SQL("{} {}").format(column, sql.SQL(_NULL_CHECKS[op]))
    if op == "contains":
        if _is_jsonb(ctype):
            return sql.SQL("{} @> {}").format(column, value.json)
        return sql.SQL("{} @> {}").format(column, _cast(value.array, type_schema, type_name))
    if kind == NUMERIC:
        column = sql.SQL("CAST({} AS numeric)").format(column)
        type_name, array_type = "numeric", "_numeric"
    if op in _SETS:
        return sql.SQL("{} {}({})").format(
            column, sql.SQL(_SETS[op]), _cast(value.array, type_schema, array_type))
    return sql.SQL("{} {} {}").format(
        column, sql.SQL(_COMPARISONS[op]), _cast(value.scalar, type_schema, type_name))


def where_sql(config: TableConfig, shape: Shape) -> sql.Composed | None:
    """The AND of ``shape``'s conditions, with placeholders ``w<position>`` (None if empty)."""
    if not shape:
        return None
    columns = config.filterable_columns
    parts: list[sql.Composable] = []
    for i, (column, op, kind) in enumerate(shape):
        placeholder = sql.Placeholder(f"w{i}")
        json_value = sql.SQL("CAST({} AS jsonb)").format(placeholder)
        parts.append(condition_sql(columns[column], op, kind,
                                   _Value(placeholder, placeholder, json_value)))
    return sql.SQL(" AND ").join(parts)


# --- the same grammar, read from a JSON object inside SQL (the SQL function) ---------------

def _json_value(filter: sql.Composable, column: str, op: str) -> _Value:
    node = sql.SQL("({} -> {} -> {})").format(filter, sql.Literal(column), sql.Literal(op))
    return _Value(
        scalar=sql.SQL("({} -> {} ->> {})").format(filter, sql.Literal(column), sql.Literal(op)),
        array=sql.SQL("ARRAY(SELECT jsonb_array_elements_text({}))").format(node),
        json=node,
    )


def _json_condition(ctype: ColumnType, op: str, filter: sql.Composable) -> sql.Composed:
    value = _json_value(filter, ctype[0], op)
    node = value.json
    if op == "is_null":
        return sql.SQL("CASE WHEN CAST({} AS boolean) THEN {} ELSE {} END").format(
            node, condition_sql(ctype, "is_null", "", value),
            condition_sql(ctype, "is_not_null", "", value))
    plain = condition_sql(ctype, op, "", value)
    if not _is_integer(ctype) or op == "contains":
        return plain
    # A JSON number with a fraction compares as numeric, as _fraction decides in Python.
    if op in _SETS:
        fraction = sql.SQL(
            "EXISTS (SELECT FROM jsonb_array_elements({}) AS e(x) WHERE jsonb_typeof(e.x) = "
            "'number' AND CAST(e.x AS numeric) <> trunc(CAST(e.x AS numeric)))").format(node)
    else:
        fraction = sql.SQL(
            "jsonb_typeof({0}) = 'number' AND CAST({0} AS numeric) <> trunc(CAST({0} AS "
            "numeric))").format(node)
    return sql.SQL("CASE WHEN {} THEN {} ELSE {} END").format(
        fraction, condition_sql(ctype, op, NUMERIC, value), plain)


def json_filter_sql(config: TableConfig, filter: sql.Composable) -> sql.Composed:
    """The grammar over a normalized JSON filter (``{"column": {"op": value}}``): for every
    column and operator a condition that drops out when the object does not name it.

    Planned with the object as a constant (``EXECUTE ... USING``), every unnamed part
    folds away, so a named one reaches the planner as ``author_id = 5``."""
    parts: list[sql.Composable] = []
    for ctype in config.filterable_columns.values():
        for op in operators_for(ctype):
            node = _json_value(filter, ctype[0], op).json
            parts.append(sql.SQL("({} IS NULL OR {})").format(
                node, _json_condition(ctype, op, filter)))
    return sql.SQL(" AND ").join(parts or [sql.SQL("true")])
