"""Adopting an existing table: the prefix expression's HNSW index (built concurrently),
the adoption's record on it, and the table's search function; and their removal."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from mrl_pg.config import TableConfig
from mrl_pg.errors import InvalidConfigError
from mrl_pg.schema.search_function import drop_search_function_ddl, search_function_ddl
from mrl_pg.schema.tables import forget_tuning_ddl, pgvector_check_ddl, tuning_table_ddl
from mrl_pg.statement.prefix import hnsw_index_ddl

__all__ = [
    "AdoptionDDL", "adopt_ddl", "release_ddl", "require_adopted", "adoption_comment",
    "adoption_comment_ddl", "adoption_choices",
]


@dataclass(frozen=True)
class AdoptionDDL:
    """Statements in the order they run: ``before`` and ``after`` in a transaction,
    ``concurrent`` outside one (``CREATE/DROP INDEX CONCURRENTLY``)."""

    before: list[sql.Composed]
    concurrent: list[sql.Composed]
    after: list[sql.Composed]


def require_adopted(config: TableConfig) -> None:
    if not config.adopted or config.prefix_column is not None:
        raise InvalidConfigError(
            f"{config.qualified_name} is not described as an existing table: "
            "use mrl_pg.table_config(conn, ...)")


def adopt_ddl(config: TableConfig) -> AdoptionDDL:
    """What adopting ``config``'s table runs (Alembic's operation emits exactly these)."""
    require_adopted(config)
    return AdoptionDDL(
        before=[pgvector_check_ddl()],
        concurrent=[hnsw_index_ddl(config, concurrently=True, if_not_exists=True)],
        after=[adoption_comment_ddl(config), *tuning_table_ddl(config),
               search_function_ddl(config)],
    )


def release_ddl(config: TableConfig) -> AdoptionDDL:
    """What :func:`release_table` runs: the function and tuning row go, then the index."""
    require_adopted(config)
    return AdoptionDDL(
        before=[drop_search_function_ddl(config), forget_tuning_ddl(config)],
        concurrent=[sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(
            config.qualified(config.hnsw_index_name))],
        after=[],
    )


_COMMENT_PREFIX = "mrl_pg adopted: "


def adoption_comment(config: TableConfig) -> str:
    """The comment adopting puts on the prefix index: the description's own choices as JSON."""
    return _COMMENT_PREFIX + json.dumps({
        "key": list(config.key), "columns": list(config.returned_columns),
        "metadata": config.metadata_column, "tenant": config.tenant_column})


def adoption_comment_ddl(config: TableConfig) -> sql.Composed:
    """``COMMENT ON INDEX`` recording :func:`adoption_comment` on the prefix index."""
    return sql.SQL("COMMENT ON INDEX {} IS {}").format(
        config.qualified(config.hnsw_index_name), sql.Literal(adoption_comment(config)))


def adoption_choices(comment: str | None) -> dict[str, Any]:
    if not comment or not comment.startswith(_COMMENT_PREFIX):
        return {}
    try:
        choices = json.loads(comment[len(_COMMENT_PREFIX):])
    except ValueError:
        return {}
    if not isinstance(choices, dict):
        return {}
    for name in ("key", "columns"):
        if isinstance(choices.get(name), list):
            choices[name] = tuple(choices[name])
    return choices
