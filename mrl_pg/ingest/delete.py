"""Deleting rows by key or by metadata filter, with a dry run that only counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from mrl_pg.config import TableConfig
from mrl_pg.errors import DatabaseError, InvalidSearchError
from mrl_pg.statement.query import filter_to_json

__all__ = ["DeleteReport", "delete_rows"]


@dataclass(frozen=True)
class DeleteReport:
    """How many rows matched, and how many were deleted (0 on a dry run)."""

    matched: int
    deleted: int
    dry_run: bool


def _keys(external_ids: Sequence[str]) -> list[str]:
    if isinstance(external_ids, str | bytes):
        raise InvalidSearchError("external_ids must be a list of keys, not one string")
    keys = list(external_ids)
    for key in keys:
        if not isinstance(key, str) or not key:
            raise InvalidSearchError(f"every key must be a non-empty string, got {key!r}")
        if "\x00" in key:
            raise InvalidSearchError(f"key {key!r} contains a NUL character")
    return keys


def _filter_json(filter: Mapping[str, Any]) -> str:
    if isinstance(filter, Mapping) and not filter:
        raise InvalidSearchError(
            "an empty filter matches every row; refusing to delete them all")
    return filter_to_json(filter)


def delete_rows(
    conn: psycopg.Connection[Any],
    config: TableConfig,
    *,
    external_ids: Sequence[str] | None = None,
    filter: Mapping[str, Any] | None = None,
    tenant: str | None = None,
    dry_run: bool = False,
) -> DeleteReport:
    """Delete the rows with these keys and/or whose metadata contains ``filter``.

    Both given: rows matching both. On a table with a tenant column ``tenant``
    is required, and only that tenant's rows can go (a key is unique per tenant
    only). One transaction: every matching row goes, or none.
    ``dry_run`` counts the matching rows and deletes nothing.

    >>> delete_rows(conn, config, filter={"source": "old-crawl"}, dry_run=True)  # doctest: +SKIP
    DeleteReport(matched=1200, deleted=0, dry_run=True)
    """
    if external_ids is None and filter is None:
        raise InvalidSearchError("name the rows to delete: external_ids, a filter, or both")
    conditions: list[sql.Composable] = []
    params: list[Any] = []
    if config.tenant_column is not None:
        if not isinstance(tenant, str) or not tenant:
            raise InvalidSearchError(
                f"{config.qualified_name} has a tenant column ({config.tenant_column}): "
                "name the tenant whose rows to delete")
        conditions.append(sql.SQL("{} = %s").format(sql.Identifier(config.tenant_column)))
        params.append(tenant)
    elif tenant is not None:
        raise InvalidSearchError(
            f"tenant given, but table {config.qualified_name} has no tenant column")
    if external_ids is not None:
        conditions.append(sql.SQL("external_id = ANY(%s::text[])"))
        params.append(_keys(external_ids))
    if filter is not None:
        conditions.append(sql.SQL("metadata @> %s::jsonb"))
        params.append(_filter_json(filter))
    where = sql.SQL(" AND ").join(conditions)
    count = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(config.table, where)
    delete = sql.SQL("DELETE FROM {} WHERE {}").format(config.table, where)
    try:
        with conn.transaction():
            if dry_run:
                row = conn.execute(count, params).fetchone()
                return DeleteReport(matched=int(row[0]) if row else 0, deleted=0, dry_run=True)
            deleted = conn.execute(delete, params).rowcount
    except psycopg.Error as exc:
        raise DatabaseError(f"delete failed on {config.qualified_name}: {exc}") from exc
    return DeleteReport(matched=deleted, deleted=deleted, dry_run=False)
