"""A table's search settings: the rule every front end applies, and the row ``mrl-pg tune`` keeps.

A :class:`SearchTuning` says "for ``k`` results take ``k * oversample``
candidates and walk the HNSW graph with ``ef_search``". A search with another
``k`` keeps the same proportion of ``ef_search`` to pool, within pgvector's
40..1000. The product's default is ``SearchTuning(oversample=8, ef_search=160,
k=10)``: twice the pool. ``mrl-pg tune`` measures a table and stores a row in
``mrl_pg_tuning`` (in the table's schema); the psycopg front end, the ORM and
the SQL function all read it, in the database, when the caller leaves ``oversample``
or ``ef_search`` unset.

The rule is written once, here: :meth:`SearchTuning.ef_search_for` evaluates
it in Python and :func:`ef_search_sql` renders the same arithmetic for the SQL
function, with integers only, so both always agree.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from mrl_pg.config import TableConfig
from mrl_pg.errors import DatabaseError, InvalidSearchError

__all__ = [
    "SearchTuning",
    "DEFAULT_TUNING",
    "TUNING_TABLE",
    "EF_SEARCH_FLOOR",
    "MAX_EF_SEARCH",
    "MAX_MATCH_COUNT",
    "MAX_POOL",
    "ef_search_sql",
    "tuning_table",
    "tuning_lookup_sql",
    "integer_argument",
    "tuning_exists_sql",
    "load_tuning",
]

MAX_MATCH_COUNT = 1000
MAX_EF_SEARCH = 1000  # pgvector's ceiling for hnsw.ef_search
EF_SEARCH_FLOOR = 40  # pgvector's default; below it recall falls faster than time does
MAX_POOL = 100_000
TUNING_TABLE = "mrl_pg_tuning"


def integer_argument(name: str, value: Any) -> int:
    """``value`` as an int, or an :class:`InvalidSearchError` naming ``name``."""
    # numpy integers are fine; bools and floats (even 10.0) are not.
    if isinstance(value, bool):
        raise InvalidSearchError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise InvalidSearchError(f"{name} must be an integer, got {value!r}") from None


@dataclass(frozen=True)
class SearchTuning:
    """Oversample and ef_search measured (or chosen) for ``k`` results.

    >>> SearchTuning().ef_search_for(80), SearchTuning().ef_search_for(10)
    (160, 40)
    >>> SearchTuning(oversample=12, ef_search=200, k=10).ef_search_for(50 * 12)
    1000
    """

    oversample: int = 8
    ef_search: int = 160
    k: int = 10

    def __post_init__(self) -> None:
        for name in ("oversample", "ef_search", "k"):
            object.__setattr__(self, name, integer_argument(name, getattr(self, name)))
        if not 1 <= self.k <= MAX_MATCH_COUNT:
            raise InvalidSearchError(f"k must be between 1 and {MAX_MATCH_COUNT}, got {self.k}")
        if self.oversample < 1:
            raise InvalidSearchError(f"oversample must be at least 1, got {self.oversample}")
        if not 1 <= self.ef_search <= MAX_EF_SEARCH:
            raise InvalidSearchError(
                f"ef_search must be between 1 and {MAX_EF_SEARCH}, got {self.ef_search}"
            )
        if self.pool > MAX_POOL:
            raise InvalidSearchError(f"k * oversample = {self.pool} is more than {MAX_POOL}")

    @property
    def pool(self) -> int:
        return self.k * self.oversample

    def ef_search_for(self, pool: int) -> int:
        """``hnsw.ef_search`` for a pool: this tuning's ef_search per pool row, rounded up,
        at least ``min(40, ef_search)`` and at most 1000."""
        scaled = (self.ef_search * pool + self.pool - 1) // self.pool
        return min(MAX_EF_SEARCH, max(min(EF_SEARCH_FLOOR, self.ef_search), scaled))


DEFAULT_TUNING = SearchTuning()
"""What a table gets before ``mrl-pg tune``: 8x oversample, ef_search twice the pool.

(``mrl-pg demo`` recall@10: 0.978 with ef_search equal to the pool, 0.993-0.997 with twice.)
"""


def ef_search_sql(
    pool: sql.Composable, *, oversample: sql.Composable, ef_search: sql.Composable,
    k: sql.Composable,
) -> sql.Composed:
    """:meth:`SearchTuning.ef_search_for` as a SQL expression (bigint arithmetic, no overflow)."""
    return sql.SQL(
        "least({max}, greatest(least({floor}, {ef}), "
        "(({ef})::bigint * ({pool}) + ({k})::bigint * ({oversample}) - 1) "
        "/ (({k})::bigint * ({oversample}))))"
    ).format(max=sql.Literal(MAX_EF_SEARCH), floor=sql.Literal(EF_SEARCH_FLOOR), ef=ef_search,
             pool=pool, k=k, oversample=oversample)


def tuning_table(config: TableConfig) -> sql.Identifier:
    """``mrl_pg_tuning`` in the table's schema (or wherever ``search_path`` finds it)."""
    return config.qualified(TUNING_TABLE)


def tuning_lookup_sql(config: TableConfig) -> sql.Composed:
    """``SELECT oversample, ef_search, k`` of the table's tuned row (no row: not tuned)."""
    return sql.SQL(
        "SELECT oversample, ef_search, k FROM {tuning} WHERE table_name = {name}"
    ).format(tuning=tuning_table(config), name=sql.Literal(config.name))


def tuning_exists_sql(config: TableConfig) -> sql.Composed:
    return sql.SQL("SELECT to_regclass({}) IS NOT NULL").format(
        sql.Literal(tuning_table(config).as_string(None))
    )


def _from_row(row: tuple[Any, ...] | None) -> SearchTuning:
    if row is None:
        return DEFAULT_TUNING
    oversample, ef_search, k = row
    return SearchTuning(oversample=oversample, ef_search=ef_search, k=k)


def load_tuning(conn: psycopg.Connection[Any], config: TableConfig) -> SearchTuning:
    """The table's tuned settings, or :data:`DEFAULT_TUNING` when it has none.

    For ``mrl-pg tune`` and the CLI; a search reads the row in its own settings
    statement instead (:func:`mrl_pg.statement.query.adaptive_settings_sql`). Runs in
    the caller's transaction, if any (a transaction the caller opens stays theirs to
    end). Nothing is cached: a table made before ``mrl_pg_tuning`` existed, or a
    database migrated down since, simply gets the defaults.
    """
    try:
        row = conn.execute(tuning_exists_sql(config), prepare=False).fetchone()
        if not (row and row[0]):
            return DEFAULT_TUNING
        return _from_row(conn.execute(tuning_lookup_sql(config), prepare=False).fetchone())
    except psycopg.Error as exc:
        raise DatabaseError(f"could not read the search settings of {config.qualified_name}: "
                            f"{exc}") from exc
