"""Adopting an existing table: the prefix expression's HNSW index (built concurrently),
the adoption's record on it, and the table's search function; and their removal."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from mrl_pg.config import TableConfig, column_name
from mrl_pg.errors import InvalidConfigError
from mrl_pg.schema.replace_function import (
    drop_every_search_function_ddl,
    replace_search_function_ddl,
)
from mrl_pg.schema.tables import forget_tuning_ddl, pgvector_check_ddl, render, tuning_table_ddl
from mrl_pg.statement.prefix import hnsw_index_ddl

__all__ = [
    "AdoptionDDL", "adopt_ddl", "release_ddl", "require_adopted", "adoption_comment",
    "adoption_comment_ddl", "adoption_choices", "ADOPTION_REFUSED", "same_index_ddl",
    "indexed_expression", "rebuild_ddl", "side_index_name",
]


@dataclass(frozen=True)
class AdoptionDDL:
    """Statements in the order they run: ``before`` and ``after`` in a transaction,
    ``concurrent`` outside one (``CREATE/DROP INDEX CONCURRENTLY``)."""

    before: list[sql.Composed]
    concurrent: list[sql.Composed]
    after: list[sql.Composed]
    cleanup: list[sql.Composed] = field(default_factory=list)
    """Outside a transaction again, last (``DROP INDEX CONCURRENTLY`` of a replaced index)."""


def require_adopted(config: TableConfig) -> None:
    if not config.adopted or config.prefix_column is not None:
        raise InvalidConfigError(
            f"{config.qualified_name} is not described as an existing table: "
            "use mrl_pg.table_config(conn, ...)")


def adopt_ddl(config: TableConfig) -> AdoptionDDL:
    """What adopting ``config``'s table runs (Alembic's operation emits exactly these)."""
    require_adopted(config)
    return AdoptionDDL(
        before=[pgvector_check_ddl(), same_index_ddl(config)],
        concurrent=[hnsw_index_ddl(config, concurrently=True, if_not_exists=True)],
        after=[adoption_comment_ddl(config), *tuning_table_ddl(config),
               replace_search_function_ddl(config)],
    )


def side_index_name(config: TableConfig, role: str) -> str:
    """``<index>_new`` (a rebuild's index until the swap) or ``<index>_old`` (the index it
    replaced, until dropped): at most 63 bytes, as PostgreSQL would cut it."""
    suffix = f"_{role}"
    base = config.hnsw_index_name.encode()[: 63 - len(suffix)].decode(errors="ignore")
    return base + suffix


def rebuild_ddl(config: TableConfig) -> AdoptionDDL:
    """Adopting again with another prefix, without a moment when the search function has
    no index to walk: the new prefix index is built beside the old one (``CONCURRENTLY``,
    as ``_new``); then one short transaction renames the old index away (``_old``), gives
    the new one the index's name and its record, and replaces the search function, so
    every call before it walks the old index and every call after it the new one; last
    the old index is dropped ``CONCURRENTLY``. Leftovers of a crashed rebuild are dropped
    first. Renaming an index takes only a ``SHARE UPDATE EXCLUSIVE`` lock: readers and
    writers carry on throughout."""
    require_adopted(config)
    new, old = side_index_name(config, "new"), side_index_name(config, "old")
    create = hnsw_index_ddl(config, concurrently=True)
    configured = sql.Identifier(config.hnsw_index_name)
    parts = list(create)
    if parts.count(configured) != 1:
        raise InvalidConfigError(
            f"cannot rebuild {config.hnsw_index_name}: its DDL does not name it exactly once")
    create = sql.Composed([sql.Identifier(new) if p == configured else p for p in parts])

    def drop(name: str) -> sql.Composed:
        return sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(config.qualified(name))

    return AdoptionDDL(
        before=[pgvector_check_ddl(), same_index_ddl(config, rebuild=True)],
        concurrent=[drop(new), drop(old), create],
        after=[sql.SQL("ALTER INDEX IF EXISTS {} RENAME TO {}").format(
                   config.qualified(config.hnsw_index_name), sql.Identifier(old)),
               sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                   config.qualified(new), configured),
               adoption_comment_ddl(config), *tuning_table_ddl(config),
               replace_search_function_ddl(config)],
        cleanup=[drop(old)],
    )


# SQLSTATE of the refusal below (a class 55 "object not in prerequisite state" code of
# mrl_pg's own): adopt_table turns it into an InvalidConfigError with the same message.
ADOPTION_REFUSED = "55MR1"


def indexed_expression(config: TableConfig) -> str:
    """The prefix index's expression as ``pg_get_expr`` prints it (tests hold the two equal)."""
    column, p = render(column_name(config.embedding_column)), config.prefix_dim
    return f"(l2_normalize(subvector({column}, 1, {p})))::halfvec({p})"


def same_index_ddl(config: TableConfig, *, rebuild: bool = False) -> sql.Composed:
    """A ``DO`` block that stops an adoption whose prefix index is already there but holds
    another prefix (another size, or of another column), or that is mrl_pg's own table.

    ``CREATE INDEX ... IF NOT EXISTS`` would keep such an index, and the new search
    function, ordering by an expression no index holds, would sort the whole table on
    every call. The message names the prefix there, the one asked for and the ways out.
    ``rebuild`` (:func:`rebuild_ddl`) lets another prefix through, not mrl_pg's own table.
    """
    name = config.name
    shown = config.qualified_name
    return sql.SQL(
        """DO $mrl_pg_same_index$
DECLARE
    expr text;
    found boolean;
    parts text[];
BEGIN
    SELECT true, pg_get_expr(i.indexprs, i.indrelid) INTO found, expr
    FROM pg_index AS i
    WHERE i.indexrelid = to_regclass({index}) AND i.indrelid = to_regclass({table})
      AND i.indisvalid;
    IF found AND expr IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = {code}, MESSAGE = {shown}
            || ' is a table mrl_pg created: it has its own prefix index and needs no adoption';
    END IF;
    IF found AND NOT {rebuild} AND expr IS DISTINCT FROM {expected} THEN
        parts := regexp_match(expr, {pattern});
        RAISE EXCEPTION USING ERRCODE = {code}, MESSAGE = {shown}
            || ' is already adopted with a ' || coalesce(parts[2], '?')
            || '-dimension prefix of ' || quote_literal(coalesce(parts[1], expr))
            || '; release it first (mrl-pg adopt --release ' || {name}
            || ', or release_table in Python or Alembic) to adopt it with a ' || {p}
            || '-dimension prefix of ' || {column} || ', or rebuild it in place without '
            || 'a moment unindexed (mrl-pg adopt ' || {name} || ' --rebuild, or '
            || 'rebuild=True): keeping that index would leave a search function no index '
            || 'serves (every call would sort the whole table)';
    END IF;
END
$mrl_pg_same_index$""").format(
        index=sql.Literal(render(config.qualified(config.hnsw_index_name))),
        table=sql.Literal(render(config.table)),
        code=sql.Literal(ADOPTION_REFUSED),
        rebuild=sql.Literal(rebuild),
        pattern=sql.Literal(
            r"^\(l2_normalize\(subvector\((.+), 1, (\d+)\)\)\)::halfvec\(\d+\)$"),
        shown=sql.Literal(shown),
        expected=sql.Literal(indexed_expression(config)),
        p=sql.Literal(str(config.prefix_dim)),
        column=sql.Literal(repr(config.embedding_column)),
        name=sql.Literal(name),
    )


def release_ddl(config: TableConfig) -> AdoptionDDL:
    """What :func:`release_table` runs: the function and tuning row go, then the index."""
    require_adopted(config)
    return AdoptionDDL(
        before=[drop_every_search_function_ddl(config), forget_tuning_ddl(config)],
        concurrent=[sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(
            config.qualified(config.hnsw_index_name))],
        after=[],
    )


_COMMENT_PREFIX = "mrl_pg adopted: "


def adoption_comment(config: TableConfig) -> str:
    """The comment adopting puts on the prefix index: the description's own choices as JSON.

    ``columns`` is null when the search returns every column but the vectors (the
    default): adopting again after ``ALTER TABLE ... ADD COLUMN`` then returns the new
    column too, while columns named on purpose stay as named."""
    every = tuple(c[0] for c in config.column_types or ())
    columns = None if config.returned_columns == every else list(config.returned_columns)
    return _COMMENT_PREFIX + json.dumps({
        "key": list(config.key), "columns": columns,
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
