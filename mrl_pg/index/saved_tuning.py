"""Saving and clearing a table's tuned search settings (``mrl-pg tune``'s row in
``mrl_pg_tuning``); reading them is :func:`mrl_pg.statement.tuning.load_tuning`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from mrl_pg.config import TableConfig
from mrl_pg.errors import DatabaseError
from mrl_pg.schema.tables import tuning_table_ddl
from mrl_pg.statement.tuning import SearchTuning, tuning_exists_sql, tuning_table

__all__ = ["TuningRecord", "save_tuning", "clear_tuning"]


@dataclass(frozen=True)
class TuningRecord:
    """What ``mrl-pg tune`` stores beside the settings: how they were measured."""

    tuning: SearchTuning
    target_recall: float | None = None
    measured_recall: float | None = None
    measured_qps: float | None = None
    queries: int | None = None
    table_rows: int | None = None


def save_tuning(conn: psycopg.Connection[Any], config: TableConfig, record: TuningRecord) -> None:
    """Store (or replace) the table's tuned settings; every front end uses them from now on."""
    t = record.tuning
    upsert = sql.SQL(
        """INSERT INTO {table} AS t (table_name, k, oversample, ef_search, target_recall,
    measured_recall, measured_qps, queries, table_rows, tuned_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now())
ON CONFLICT (table_name) DO UPDATE SET k = excluded.k, oversample = excluded.oversample,
    ef_search = excluded.ef_search, target_recall = excluded.target_recall,
    measured_recall = excluded.measured_recall, measured_qps = excluded.measured_qps,
    queries = excluded.queries, table_rows = excluded.table_rows, tuned_at = now()"""
    ).format(table=tuning_table(config))
    try:
        with conn.transaction():
            if conn.execute(tuning_exists_sql(config)).fetchone() != (True,):
                for statement in tuning_table_ddl(config):
                    conn.execute(statement)
            conn.execute(upsert, (config.name, t.k, t.oversample, t.ef_search,
                                  record.target_recall, record.measured_recall,
                                  record.measured_qps, record.queries, record.table_rows))
    except psycopg.Error as exc:
        raise DatabaseError(f"could not save the search settings of {config.qualified_name}: "
                            f"{exc}") from exc


def clear_tuning(conn: psycopg.Connection[Any], config: TableConfig) -> bool:
    """Forget the table's tuned settings (back to :data:`DEFAULT_TUNING`); True if it had some."""
    try:
        with conn.transaction():
            if conn.execute(tuning_exists_sql(config)).fetchone() != (True,):
                return False
            cur = conn.execute(
                sql.SQL("DELETE FROM {} WHERE table_name = %s").format(tuning_table(config)),
                (config.name,),
            )
    except psycopg.Error as exc:
        raise DatabaseError(f"could not clear the search settings of {config.qualified_name}: "
                            f"{exc}") from exc
    return cur.rowcount > 0
