"""Row-level security on a tenant column that keeps the search's plans.

A policy ``USING (tenant = <expression>)`` is planned like a ``WHERE`` clause.
The planner estimates ``tenant = current_setting(...)`` (or a constant) with
the tenant's real share of the table, because it evaluates STABLE
expressions while estimating: a large tenant's search walks the HNSW index,
a small tenant's reads its rows through the btree on the tenant column and
sorts them exactly. A sub-SELECT (``tenant = (SELECT current_setting(...))``,
or a lookup in a table) becomes an InitPlan whose value the planner cannot
see: every tenant is then estimated as an average one, and a large tenant's
search scans all its rows. See ``docs/row-level-security.md``.

Two forms, both generated here with the tenant column's own type:

- :func:`tenant_policy_ddl`: the tenant comes from a transaction-local
  setting (``app.tenant_id``) that the application (or PostgREST, from a
  signed JWT) sets per request, with :func:`set_tenant`;
- :func:`role_policy_ddl`: a database role per tenant, the tenant a constant
  in that role's policy; a role cannot choose another tenant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from mrl_pg.config import TableConfig
from mrl_pg.errors import InvalidConfigError, InvalidIdentifierError

__all__ = [
    "DEFAULT_TENANT_SETTING",
    "tenant_setting_expression",
    "tenant_policy_ddl",
    "role_policy_ddl",
    "tenant_index_ddl",
    "set_tenant",
]

DEFAULT_TENANT_SETTING = "app.tenant_id"


def _name(name: str, what: str) -> str:
    if not isinstance(name, str) or not name or "\0" in name:
        raise InvalidIdentifierError(f"invalid {what} {name!r}: a non-empty name without NUL")
    if len(name.encode()) > 63:
        raise InvalidIdentifierError(
            f"invalid {what} {name!r}: longer than 63 bytes; pass a shorter name")
    return name


def _setting(setting: str) -> str:
    # A custom setting needs a dotted name; current_setting() would refuse others at runtime.
    if not isinstance(setting, str) or "." not in setting.strip(".") or "\0" in setting:
        raise InvalidConfigError(
            f"invalid tenant setting {setting!r}: use a dotted name such as 'app.tenant_id'")
    return setting


def _tenant(config: TableConfig) -> tuple[sql.Identifier, sql.Identifier]:
    """The tenant column and its type, or an error naming the table."""
    column = config.tenant_column
    if column is None:
        raise InvalidConfigError(
            f"table {config.qualified_name} has no tenant column: describe it with "
            "mrl_pg.table_config(conn, ..., tenant='tenant_id')")
    _, type_schema, type_name, _ = config.filterable_columns.get(
        column, (column, "pg_catalog", "text", "_text"))
    return sql.Identifier(column), sql.Identifier(type_schema, type_name)


def tenant_setting_expression(
    config: TableConfig, *, setting: str = DEFAULT_TENANT_SETTING
) -> sql.Composed:
    """``CAST(nullif(current_setting('app.tenant_id', true), '') AS <tenant type>)``.

    NULL, so no row, while the setting is unset or empty. No sub-SELECT: the
    planner evaluates it while estimating, and sees which tenant it plans for.
    """
    _, type_sql = _tenant(config)
    return sql.SQL("CAST(nullif(current_setting({}, true), '') AS {})").format(
        sql.Literal(_setting(setting)), type_sql)


def _policy(
    config: TableConfig, name: str, roles: Sequence[str], value: sql.Composable
) -> list[sql.Composed]:
    column, _ = _tenant(config)
    if isinstance(roles, str):
        raise InvalidConfigError(f"roles must be a sequence of role names, got {roles!r}")
    to = sql.SQL(", ").join(sql.Identifier(_name(r, "role name")) for r in roles) \
        if roles else sql.SQL("PUBLIC")
    condition = sql.SQL("{} = {}").format(column, value)
    policy = sql.Identifier(_name(name, "policy name"))
    return [
        sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(config.table),
        sql.SQL("DROP POLICY IF EXISTS {} ON {}").format(policy, config.table),
        sql.SQL(
            "CREATE POLICY {} ON {} AS PERMISSIVE FOR ALL TO {} USING ({}) WITH CHECK ({})"
        ).format(policy, config.table, to, condition, condition),
    ]


def tenant_policy_ddl(
    config: TableConfig,
    *,
    roles: Sequence[str] = (),
    setting: str = DEFAULT_TENANT_SETTING,
    name: str | None = None,
) -> list[sql.Composed]:
    """Enable row-level security and (re)create one policy: ``roles`` (default ``PUBLIC``)
    see and write only rows whose tenant column equals the setting ``setting``.

    Run the statements in one transaction, with :func:`tenant_index_ddl`. The
    table's owner and roles with ``BYPASSRLS`` are not restricted: search as
    another role.

    >>> cfg = TableConfig("items", full_dim=768, prefix_dim=256, tenant_column="tenant_id")
    >>> print(tenant_policy_ddl(cfg, roles=["app"])[-1].as_string(None))  # doctest: +ELLIPSIS
    CREATE POLICY "items_tenant_isolation" ON "items" AS PERMISSIVE FOR ALL TO "app" USING (...
    """
    value = tenant_setting_expression(config, setting=setting)
    return _policy(config, name or f"{config.name}_tenant_isolation", roles, value)


def role_policy_ddl(
    config: TableConfig, role: str, tenant: Any, *, name: str | None = None
) -> list[sql.Composed]:
    """Enable row-level security and (re)create the policy of one tenant's role: ``role``
    sees and writes only rows whose tenant column is ``tenant`` (a constant in the policy).

    The role's identity is the tenant: no setting to forget or to change. Each
    role gets its own policy (``<table>_<role>`` unless ``name`` is given).
    """
    if tenant is None:
        raise InvalidConfigError("tenant must not be None: a policy on NULL matches no row")
    _, type_sql = _tenant(config)
    value = sql.SQL("CAST({} AS {})").format(sql.Literal(tenant), type_sql)
    return _policy(config, name or f"{config.name}_{_name(role, 'role name')}", [role], value)


def tenant_index_ddl(
    config: TableConfig, *, concurrently: bool = False, name: str | None = None
) -> sql.Composed:
    """``CREATE INDEX IF NOT EXISTS <table>_<tenant>_idx ON <table> (<tenant>)``.

    The btree a small tenant's search reads its rows through; without it that
    search is a sequential scan of the whole table. ``concurrently`` builds it
    without blocking writers (outside a transaction).
    """
    column, _ = _tenant(config)
    index = _name(name or f"{config.name}_{config.tenant_column}_idx", "index name")
    return sql.SQL("CREATE INDEX {}IF NOT EXISTS {} ON {} ({})").format(
        sql.SQL("CONCURRENTLY " if concurrently else ""), sql.Identifier(index),
        config.table, column)


def set_tenant(
    conn: psycopg.Connection[Any], tenant: Any, *, setting: str = DEFAULT_TENANT_SETTING
) -> None:
    """Set the tenant for the rest of the current transaction (``set_config(..., true)``).

    Transaction-local, so a pooled connection never carries one request's
    tenant into the next; call it inside ``with conn.transaction():``, before
    the searches of that transaction.

    >>> with conn.transaction():  # doctest: +SKIP
    ...     set_tenant(conn, 42)
    ...     rows = search(conn, items, embedding)
    """
    if tenant is None:
        raise InvalidConfigError("tenant must not be None")
    if conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE:
        raise InvalidConfigError(
            "set_tenant outside a transaction would end with its own statement: "
            "call it inside `with conn.transaction():`")
    conn.execute(sql.SQL("SELECT set_config({}, {}, true)").format(
        sql.Literal(_setting(setting)), sql.Placeholder()), (str(tenant),))
