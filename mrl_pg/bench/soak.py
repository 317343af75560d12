"""Concurrency soak: writers ingest, update and delete while readers search, then every
committed row is checked.

    python -m mrl_pg.bench.soak [--seconds 60] [--adopted] [--dsn DSN]

Two table layouts, one soak. ``managed`` (default): the table mrl_pg creates, written
through mrl_pg (``ingest_arrays``, ``delete_rows``). ``adopted`` (``--adopted``): the
user's own table ``(id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, author_id int,
title text, embedding vector(N))``, made and bulk-loaded with plain SQL, then adopted with
:func:`mrl_pg.index.adopt.adopt_table`; writers insert, update (embedding and columns) and delete
it with plain SQL as the user's application would, and also upsert rows by key through
``mrl_pg.ingest_records``.

Four writer threads (each on its own keys) write through a ``psycopg_pool.ConnectionPool``;
three reader threads on the same pool and one asyncio task on an ``AsyncConnectionPool``
run adaptive searches with and without a filter (metadata, or a ``where`` on author_id),
exact searches and the table's SQL function with and without its ``filter`` argument.
An unfiltered search must return 10 rows, a filtered one only rows that match. A writer
records an operation in the model only after it committed. At the end: no errors, no
hung thread, every row in the table holds exactly the model's vector, no deleted key is
present, no row the model does not know, and a sample of rows is found by exact search
for its own vector (top 1) and by adaptive search (top 10). Prints operations per second
and read latency under write load. The tests run 10-second versions of both layouts
(tests/test_soak.py).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, ConnectionPool

import mrl_pg
from mrl_pg import TableConfig, delete_rows, ingest_arrays, ingest_records, install
from mrl_pg.db import configure_connection, configure_connection_async
from mrl_pg.index.adopt import adopt_table
from mrl_pg.index.build import build_hnsw_index
from mrl_pg.schema.catalog import table_config

DIM, PREFIX = 64, 16
FILTERED = 1  # filtered searches ask for writer 1's rows (metadata, or author_id)
READS = ("adaptive", "filtered", "exact", "function", "function filtered")


@dataclass
class SoakReport:
    seconds: float
    writes: int
    reads: int
    errors: list[str]
    read_latencies_ms: list[float]
    rows_checked: int
    wrong_rows: int
    deleted_present: int
    missing_rows: int
    unexpected_rows: int
    exact_self_recall: float
    adaptive_self_recall: float
    sample: int
    layout: str = "managed"
    by_kind: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (not self.errors and self.wrong_rows == 0 and self.deleted_present == 0
                and self.missing_rows == 0 and self.unexpected_rows == 0
                and self.exact_self_recall == 1.0 and self.adaptive_self_recall >= 0.99)

    def summary(self) -> str:
        p50, p99 = (np.percentile(self.read_latencies_ms, q) for q in (50, 99))
        return (
            f"{self.layout} table, {self.seconds:.0f} s: "
            f"{self.writes / self.seconds:,.1f} write ops/s "
            f"({', '.join(f'{k} {v}' for k, v in sorted(self.by_kind.items()))}), "
            f"{self.reads / self.seconds:,.1f} searches/s, search p50 {p50:.1f} ms, "
            f"p99 {p99:.1f} ms under write load; {len(self.errors)} errors; "
            f"{self.rows_checked:,} rows checked: {self.wrong_rows} wrong, "
            f"{self.missing_rows} missing, {self.deleted_present} deleted rows present, "
            f"{self.unexpected_rows} unexpected; "
            f"self-recall on {self.sample} rows: exact {self.exact_self_recall:.3f}, "
            f"adaptive {self.adaptive_self_recall:.3f}"
        )


class _Model:
    """What has been committed: key -> vector, and the deleted keys."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: dict[str, npt.NDArray[np.float32]] = {}
        self.deleted: set[str] = set()

    def put(self, keys: list[str], vectors: npt.NDArray[np.float32]) -> None:
        with self.lock:
            for key, vector in zip(keys, vectors, strict=True):
                self.rows[key] = vector
                self.deleted.discard(key)

    def delete(self, keys: list[str]) -> None:
        with self.lock:
            for key in keys:
                self.rows.pop(key, None)
                self.deleted.add(key)


class _Layout(ABC):
    """How the soak makes and writes one table layout, and reads a row's key and filter."""

    name = ""
    key_column = ""
    filter_key = ""  # the name a filter gives: a metadata key, or a column
    writes: tuple[tuple[str, float], ...] = ()  # (operation, probability) once a writer has rows

    @abstractmethod
    def create(self, conn: psycopg.Connection[Any], config: TableConfig,
               names: list[str], vectors: npt.NDArray[np.float32]
               ) -> tuple[TableConfig, list[str]]:
        """Make the table, fill it with rows of writer -1 and index it: the configuration
        searches take, and the rows' keys."""

    @abstractmethod
    def insert(self, conn: psycopg.Connection[Any], config: TableConfig, writer: int,
               names: list[str], vectors: npt.NDArray[np.float32]) -> list[str]:
        """Insert new rows and commit; their keys."""

    @abstractmethod
    def update(self, conn: psycopg.Connection[Any], config: TableConfig, op: str, writer: int,
               keys: list[str], vectors: npt.NDArray[np.float32]) -> None:
        """Give existing rows new vectors (and columns) and commit."""

    @abstractmethod
    def delete(self, conn: psycopg.Connection[Any], config: TableConfig,
               keys: list[str]) -> None:
        """Delete rows and commit."""

    @abstractmethod
    def search_filter(self, value: int) -> dict[str, Any]:
        """Keyword arguments of a search for rows whose filter value is ``value``."""

    @abstractmethod
    def filter_value(self, row: Mapping[str, Any]) -> Any:
        """The filter value of a returned row."""

    def key(self, row: Mapping[str, Any]) -> str:
        return str(row[self.key_column])


class _Managed(_Layout):
    """The table mrl_pg creates: keys are external_ids, the filter is metadata's writer."""

    name, key_column, filter_key = "managed", "external_id", "writer"
    writes = (("insert", 0.5), ("update", 0.3), ("delete", 0.2))

    def create(self, conn: psycopg.Connection[Any], config: TableConfig,
               names: list[str], vectors: npt.NDArray[np.float32]
               ) -> tuple[TableConfig, list[str]]:
        install(conn, config)
        ingest_arrays(conn, config, vectors, external_ids=names,
                      metadatas=[{"writer": -1}] * len(names))
        build_hnsw_index(conn, config)
        return config, names

    def insert(self, conn: psycopg.Connection[Any], config: TableConfig, writer: int,
               names: list[str], vectors: npt.NDArray[np.float32]) -> list[str]:
        self.update(conn, config, "insert", writer, names, vectors)
        return names

    def update(self, conn: psycopg.Connection[Any], config: TableConfig, op: str, writer: int,
               keys: list[str], vectors: npt.NDArray[np.float32]) -> None:
        ingest_arrays(conn, config, vectors, external_ids=keys,
                      metadatas=[{"writer": writer}] * len(keys))

    def delete(self, conn: psycopg.Connection[Any], config: TableConfig,
               keys: list[str]) -> None:
        delete_rows(conn, config, external_ids=keys)

    def search_filter(self, value: int) -> dict[str, Any]:
        return {"filter": {self.filter_key: value}}

    def filter_value(self, row: Mapping[str, Any]) -> Any:
        return (row["metadata"] or {}).get(self.filter_key)


class _Adopted(_Layout):
    """The user's own table, written with plain SQL (and mrl_pg's upsert); keys are ids."""

    name, key_column, filter_key = "adopted", "id", "author_id"
    writes = (("insert", 0.5), ("update", 0.15), ("upsert", 0.15), ("delete", 0.2))

    def create(self, conn: psycopg.Connection[Any], config: TableConfig,
               names: list[str], vectors: npt.NDArray[np.float32]
               ) -> tuple[TableConfig, list[str]]:
        conn.execute(sql.SQL(
            "CREATE TABLE {} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
            "author_id int, title text, embedding vector({}))"
        ).format(config.table, sql.Literal(config.full_dim)))
        with conn.cursor() as cur, cur.copy(sql.SQL(
                "COPY {} (author_id, title, embedding) FROM STDIN (FORMAT BINARY)"
        ).format(config.table)) as copy:
            copy.set_types(["int4", "text", "vector"])
            for name, vector in zip(names, vectors, strict=True):
                copy.write_row([-1, name, vector])
        ids = dict(conn.execute(sql.SQL("SELECT title, id FROM {}").format(config.table))
                   .fetchall())
        adopted = table_config(conn, config.name, schema=config.schema,
                                         embedding="embedding", prefix_dim=config.prefix_dim)
        adopt_table(conn, adopted)
        return adopted, [str(ids[name]) for name in names]

    def insert(self, conn: psycopg.Connection[Any], config: TableConfig, writer: int,
               names: list[str], vectors: npt.NDArray[np.float32]) -> list[str]:
        keys = []
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(sql.SQL(
                "INSERT INTO {} (author_id, title, embedding) VALUES (%s, %s, %s) RETURNING id"
            ).format(config.table), [(writer, name, vector)
                                     for name, vector in zip(names, vectors, strict=True)],
                returning=True)
            while True:
                row = cur.fetchone()
                if row is None:
                    raise RuntimeError("INSERT ... RETURNING returned no row")
                keys.append(str(row[0]))
                if not cur.nextset():
                    break
        return keys

    def update(self, conn: psycopg.Connection[Any], config: TableConfig, op: str, writer: int,
               keys: list[str], vectors: npt.NDArray[np.float32]) -> None:
        # A row moves between the writer's two authors: filters see rows come and go.
        rows = [(int(key), writer + 10 * (i % 2), f"{op} {key}", vector)
                for i, (key, vector) in enumerate(zip(keys, vectors, strict=True))]
        if op == "upsert":
            ingest_records(conn, config, [
                {"id": key, "author_id": author, "title": title, "embedding": vector}
                for key, author, title, vector in rows])
            return
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(sql.SQL(
                "UPDATE {} SET author_id = %s, title = %s, embedding = %s WHERE id = %s"
            ).format(config.table), [(author, title, vector, key)
                                     for key, author, title, vector in rows])

    def delete(self, conn: psycopg.Connection[Any], config: TableConfig,
               keys: list[str]) -> None:
        with conn.transaction():
            conn.execute(sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(config.table),
                         ([int(k) for k in keys],))

    def search_filter(self, value: int) -> dict[str, Any]:
        return {"where": {self.filter_key: value}}

    def filter_value(self, row: Mapping[str, Any]) -> Any:
        return row[self.filter_key]


LAYOUTS: dict[str, _Layout] = {layout.name: layout for layout in (_Managed(), _Adopted())}


def _unit(rng: np.random.Generator, n: int) -> npt.NDArray[np.float32]:
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    unit: npt.NDArray[np.float32] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return unit


def _pick(rng: np.random.Generator, keys: list[str], n: int) -> list[str]:
    return [str(k) for k in rng.choice(keys, size=min(n, len(keys)), replace=False)]


def _writer(w: int, pool: ConnectionPool[Any], layout: _Layout, config: TableConfig,
            model: _Model, stop: threading.Event, out: dict[str, Any]) -> None:
    rng = np.random.default_rng(100 + w)
    ops, weights = zip(*layout.writes, strict=True)
    mine: list[str] = []
    counter = 0
    while not stop.is_set():
        op = str(rng.choice(ops, p=weights)) if mine else "insert"
        try:
            with pool.connection() as conn:
                if op == "insert":
                    names = [f"w{w}-{counter + i}" for i in range(20)]
                    counter += 20
                    vectors = _unit(rng, len(names))
                    keys = layout.insert(conn, config, w, names, vectors)
                    model.put(keys, vectors)
                    mine += keys
                elif op == "delete":
                    keys = _pick(rng, mine, 5)
                    layout.delete(conn, config, keys)
                    model.delete(keys)
                    mine = [k for k in mine if k not in set(keys)]
                else:
                    keys = _pick(rng, mine, 10)
                    vectors = _unit(rng, len(keys))
                    layout.update(conn, config, op, w, keys, vectors)
                    model.put(keys, vectors)
            with out["lock"]:
                out["writes"] += 1
                out["by_kind"][op] = out["by_kind"].get(op, 0) + 1
        except Exception as exc:  # noqa: BLE001 - every failure is a finding of the soak
            with out["lock"]:
                out["errors"].append(f"writer {w} {op}: {type(exc).__name__}: {exc}")


def _function_call(config: TableConfig) -> sql.Composed:
    return sql.SQL("SELECT * FROM {}(query_embedding => %s, match_count => 10, "
                   "filter => %s)").format(config.qualified(config.search_function_name))


def _require(layout: _Layout, kind: str, rows: list[Mapping[str, Any]]) -> None:
    """An unfiltered search returns 10 rows, a filtered one only rows that match."""
    if "filtered" not in kind and len(rows) != 10:
        raise AssertionError(f"{kind} search returned {len(rows)} rows")
    if "filtered" in kind and any(layout.filter_value(r) != FILTERED for r in rows):
        raise AssertionError(f"{kind} search returned a row of another {layout.filter_key}")


def _reader(r: int, pool: ConnectionPool[Any], layout: _Layout, config: TableConfig,
            stop: threading.Event, out: dict[str, Any]) -> None:
    rng = np.random.default_rng(200 + r)
    while not stop.is_set():
        kind = READS[int(rng.integers(len(READS)))]
        query = _unit(rng, 1)[0]
        started = time.perf_counter()
        try:
            rows: list[Mapping[str, Any]]
            with pool.connection() as conn:
                if kind == "exact":
                    rows = [f.row for f in mrl_pg.exact_search(conn, config, query, k=10)]
                elif kind.startswith("function"):
                    wanted = {layout.filter_key: FILTERED} if "filtered" in kind else {}
                    with conn.cursor(row_factory=dict_row) as cur:
                        rows = cur.execute(_function_call(config),
                                           (query, Jsonb(wanted))).fetchall()
                else:
                    rows = [f.row for f in mrl_pg.search(conn, config, query, k=10, **(
                        layout.search_filter(FILTERED) if kind == "filtered" else {}))]
            _require(layout, kind, rows)
            with out["lock"]:
                out["reads"] += 1
                out["latencies"].append((time.perf_counter() - started) * 1000)
        except Exception as exc:  # noqa: BLE001
            with out["lock"]:
                out["errors"].append(f"reader {r} {kind}: {type(exc).__name__}: {exc}")


async def _async_reader(dsn: str, layout: _Layout, config: TableConfig, stop: threading.Event,
                        out: dict[str, Any]) -> None:
    rng = np.random.default_rng(300)
    async with AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False,
                                   configure=configure_connection_async) as pool:
        calls = 0
        while not stop.is_set():
            kind = READS[calls % 2]  # adaptive, filtered
            calls += 1
            query = _unit(rng, 1)[0]
            started = time.perf_counter()
            try:
                async with pool.connection() as conn:
                    found = await mrl_pg.search_async(conn, config, query, k=10, **(
                        layout.search_filter(FILTERED) if kind == "filtered" else {}))
                _require(layout, f"async {kind}", [f.row for f in found])
                with out["lock"]:
                    out["reads"] += 1
                    out["latencies"].append((time.perf_counter() - started) * 1000)
            except Exception as exc:  # noqa: BLE001
                with out["lock"]:
                    out["errors"].append(f"async reader {kind}: {type(exc).__name__}: {exc}")


def _check(conn: psycopg.Connection[Any], layout: _Layout, config: TableConfig, model: _Model,
           sample: int, seed: int) -> dict[str, Any]:
    stored = {str(key): np.asarray(vec.to_numpy(), dtype=np.float32) for key, vec in conn.execute(
        sql.SQL("SELECT {}, {} FROM {}").format(sql.Identifier(layout.key_column),
                                                sql.Identifier(config.embedding_column),
                                                config.table)).fetchall()}
    wrong = sum(1 for k, v in model.rows.items() if k in stored and not np.allclose(
        stored[k], v, atol=1e-6))
    missing = sum(1 for k in model.rows if k not in stored)
    deleted_present = sum(1 for k in model.deleted if k in stored)
    unexpected = sum(1 for k in stored if k not in model.rows and k not in model.deleted)
    rng = random.Random(seed)
    keys = rng.sample(sorted(model.rows), min(sample, len(model.rows)))
    exact_hits = adaptive_hits = 0
    for key in keys:
        vector = model.rows[key]
        exact_hits += layout.key(mrl_pg.exact_search(conn, config, vector, k=1)[0].row) == key
        adaptive_hits += key in {layout.key(r.row) for r in mrl_pg.search(conn, config, vector,
                                                                          k=10)}
    n = max(1, len(keys))
    return {"rows_checked": len(model.rows), "wrong_rows": wrong, "missing_rows": missing,
            "deleted_present": deleted_present, "unexpected_rows": unexpected,
            "exact_self_recall": exact_hits / n, "adaptive_self_recall": adaptive_hits / n,
            "sample": len(keys)}


def run_soak(dsn: str, config: TableConfig, *, seconds: float, preload: int = 20_000,
             writers: int = 4, readers: int = 3, sample: int = 300,
             seed: int = 0, layout: str = "managed") -> SoakReport:
    """Create ``config``'s table (it must not exist), preload it, run the soak, check.

    ``layout`` is ``"managed"`` (the table mrl_pg creates) or ``"adopted"`` (the user's
    own table of that name, adopted with ``config.prefix_dim``; see the module docstring).
    """
    soaked = LAYOUTS[layout]
    model = _Model()
    with psycopg.connect(dsn, autocommit=True) as conn:
        configure_connection(conn)
        vectors = _unit(np.random.default_rng(seed), preload)
        config, keys = soaked.create(conn, config, [f"pre-{i}" for i in range(preload)],
                                     vectors)
        model.put(keys, vectors)
        conn.execute(sql.SQL("ANALYZE {}").format(config.table))
    out: dict[str, Any] = {"lock": threading.Lock(), "writes": 0, "reads": 0, "errors": [],
                           "latencies": [], "by_kind": {}}
    stop = threading.Event()
    with ConnectionPool(dsn, min_size=writers + readers, max_size=writers + readers,
                        configure=configure_connection, open=True) as pool:
        threads = [threading.Thread(target=_writer,
                                    args=(w, pool, soaked, config, model, stop, out))
                   for w in range(writers)]
        threads += [threading.Thread(target=_reader, args=(r, pool, soaked, config, stop, out))
                    for r in range(readers)]
        threads.append(threading.Thread(
            target=lambda: asyncio.run(_async_reader(dsn, soaked, config, stop, out))))
        started = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(seconds)
        stop.set()
        for t in threads:
            t.join(timeout=120)
        elapsed = time.perf_counter() - started
        hung = [t.name for t in threads if t.is_alive()]
    if hung:
        out["errors"].append(f"threads still running after the soak (deadlock?): {hung}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        configure_connection(conn)
        checked = _check(conn, soaked, config, model, sample, seed)
    return SoakReport(seconds=elapsed, writes=out["writes"], reads=out["reads"],
                      errors=out["errors"], read_latencies_ms=out["latencies"],
                      layout=layout, by_kind=out["by_kind"], **checked)


def _drop(dsn: str, config: TableConfig) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(config.table))
        conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}").format(
            config.qualified(config.search_function_name)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--adopted", action="store_true",
                        help="soak a user's own table adopted by mrl_pg (default: the table "
                             "mrl_pg creates)")
    parser.add_argument("--dsn", default=None,
                        help="database (default: MRL_PG_DSN, DATABASE_URL or embedded)")
    args = parser.parse_args()
    from mrl_pg.server import resolve_dsn

    dsn = args.dsn or resolve_dsn(embedded=True)
    layout = "adopted" if args.adopted else "managed"
    config = TableConfig(f"mrl_soak_{layout}" if args.adopted else "mrl_soak",
                         full_dim=DIM, prefix_dim=PREFIX)
    _drop(dsn, config)
    try:
        report = run_soak(dsn, config, seconds=args.seconds, layout=layout)
    finally:
        _drop(dsn, config)
    print(report.summary())
    for error in report.errors[:20]:
        print("error:", error)
    raise SystemExit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
