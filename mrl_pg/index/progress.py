"""Progress of a running ``CREATE INDEX``, read from a second connection."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

__all__ = ["IndexProgress", "ProgressPoller"]


@dataclass(frozen=True)
class IndexProgress:
    """One look at a running ``CREATE INDEX``: its phase and how far it is.

    ``phase`` is PostgreSQL's (``"building index: loading tuples"`` while
    pgvector builds the graph) or :data:`PHASE_DONE` at the end; ``done`` and
    ``total`` count ``unit`` ("tuples" or "blocks"); ``total`` is None when
    the server does not know it.
    """

    phase: str
    done: int
    total: int | None
    unit: str = "tuples"



class ProgressPoller:
    """Polls ``pg_stat_progress_create_index`` for one backend from a thread of its own."""

    _QUERY = (
        "SELECT phase, blocks_done, blocks_total, tuples_done, tuples_total"
        " FROM pg_stat_progress_create_index WHERE pid = %s"
    )

    def __init__(
        self,
        dsn: str,
        pid: int,
        on_progress: Callable[[IndexProgress], None] | None,
        interval: float,
    ) -> None:
        self._dsn = dsn
        self._pid = pid
        self.rows = 0
        self._on_progress = on_progress
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self.warnings: list[str] = []
        self.error: BaseException | None = None

    def __enter__(self) -> ProgressPoller:
        if self._on_progress is None:
            return self
        try:
            # Connected before the build starts, so the first poll is not late.
            self._conn = psycopg.connect(self._dsn, autocommit=True)
        except psycopg.Error as exc:
            self.warnings.append(f"no progress reports: could not open a second connection: {exc}")
            return self
        self._thread = threading.Thread(target=self._run, args=(self._conn, self._on_progress),
                                        name="mrl-pg-index-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._conn is not None:
            self._conn.close()

    def _run(
        self, conn: psycopg.Connection[Any], on_progress: Callable[[IndexProgress], None]
    ) -> None:
        last: IndexProgress | None = None
        while True:
            try:
                row = conn.execute(self._QUERY, (self._pid,)).fetchone()
            except psycopg.Error as exc:
                self.warnings.append(f"progress reports stopped: {exc}")
                return
            if row is not None:
                progress = self._progress(*row)
                if progress != last:
                    last = progress
                    try:
                        on_progress(progress)
                    except BaseException as exc:  # re-raised by build_hnsw_index
                        self.error = exc
                        return
            if self._stop.wait(self._interval):
                return

    def _progress(
        self, phase: str, blocks_done: int, blocks_total: int, tuples_done: int, tuples_total: int
    ) -> IndexProgress:
        if tuples_total:
            return IndexProgress(phase, tuples_done, tuples_total, "tuples")
        # pgvector counts tuples inserted into the graph but not their total.
        if phase.endswith("loading tuples"):
            return IndexProgress(phase, tuples_done, max(self.rows, tuples_done), "tuples")
        if blocks_total:
            return IndexProgress(phase, blocks_done, blocks_total, "blocks")
        return IndexProgress(phase, tuples_done, None, "tuples")
