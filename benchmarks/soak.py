"""Concurrency soak: writers ingest, update and delete while readers search, then every
committed row is checked.

    python -m benchmarks.soak [--seconds 60] [--dsn DSN]

Four writer threads (each on its own keys) insert batches, re-embed existing rows and
delete rows through a ``psycopg_pool.ConnectionPool``; three reader threads on the same
pool and one asyncio task on an ``AsyncConnectionPool`` run adaptive, filtered and exact
searches. A writer records an operation in the model only after it committed. At the end:
no errors, every row in the table holds exactly the model's vector, no deleted key is
present, and a sample of rows is found by exact search for its own vector (top 1) and by
adaptive search (top 10). Prints operations per second and read latency under write load.
The tests run a 10-second version (tests/test_soak.py).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, ConnectionPool

import mrl_pg
from mrl_pg import TableConfig, delete_rows, ingest_arrays, install
from mrl_pg.db import configure_connection, configure_connection_async
from mrl_pg.index import build_hnsw_index

DIM, PREFIX = 64, 16


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
    exact_self_recall: float
    adaptive_self_recall: float
    sample: int
    by_kind: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (not self.errors and self.wrong_rows == 0 and self.deleted_present == 0
                and self.missing_rows == 0 and self.exact_self_recall == 1.0
                and self.adaptive_self_recall >= 0.99)

    def summary(self) -> str:
        p50, p99 = (np.percentile(self.read_latencies_ms, q) for q in (50, 99))
        return (
            f"{self.seconds:.0f} s: {self.writes / self.seconds:,.1f} write ops/s "
            f"({', '.join(f'{k} {v}' for k, v in sorted(self.by_kind.items()))}), "
            f"{self.reads / self.seconds:,.1f} searches/s, search p50 {p50:.1f} ms, "
            f"p99 {p99:.1f} ms under write load; {len(self.errors)} errors; "
            f"{self.rows_checked:,} rows checked: {self.wrong_rows} wrong, "
            f"{self.missing_rows} missing, {self.deleted_present} deleted rows present; "
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


def _unit(rng: np.random.Generator, n: int) -> npt.NDArray[np.float32]:
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _pick(rng: np.random.Generator, keys: list[str], n: int) -> list[str]:
    return [str(k) for k in rng.choice(keys, size=min(n, len(keys)), replace=False)]


def _writer(w: int, pool: ConnectionPool[Any], config: TableConfig, model: _Model,
            stop: threading.Event, out: dict[str, Any]) -> None:
    rng = np.random.default_rng(100 + w)
    mine: list[str] = []
    counter = 0
    while not stop.is_set():
        op = rng.choice(["insert", "update", "delete"], p=[0.5, 0.3, 0.2]) if mine else "insert"
        try:
            with pool.connection() as conn:
                if op == "insert":
                    keys = [f"w{w}-{counter + i}" for i in range(20)]
                    counter += 20
                    vectors = _unit(rng, len(keys))
                    ingest_arrays(conn, config, vectors, external_ids=keys,
                                  metadatas=[{"writer": w}] * len(keys))
                    model.put(keys, vectors)
                    mine += keys
                elif op == "update":
                    keys = _pick(rng, mine, 10)
                    vectors = _unit(rng, len(keys))
                    ingest_arrays(conn, config, vectors, external_ids=keys,
                                  metadatas=[{"writer": w}] * len(keys))
                    model.put(keys, vectors)
                else:
                    keys = _pick(rng, mine, 5)
                    delete_rows(conn, config, external_ids=keys)
                    model.delete(keys)
                    mine = [k for k in mine if k not in set(keys)]
            with out["lock"]:
                out["writes"] += 1
                out["by_kind"][op] = out["by_kind"].get(op, 0) + 1
        except Exception as exc:  # noqa: BLE001 - every failure is a finding of the soak
            with out["lock"]:
                out["errors"].append(f"writer {w} {op}: {type(exc).__name__}: {exc}")


def _reader(r: int, pool: ConnectionPool[Any], config: TableConfig, stop: threading.Event,
            out: dict[str, Any]) -> None:
    rng = np.random.default_rng(200 + r)
    kinds = ["adaptive", "filtered", "exact"]
    while not stop.is_set():
        kind = kinds[int(rng.integers(3))]
        query = _unit(rng, 1)[0]
        started = time.perf_counter()
        try:
            with pool.connection() as conn:
                if kind == "exact":
                    found = mrl_pg.exact_search(conn, config, query, k=10)
                else:
                    found = mrl_pg.search(conn, config, query, k=10,
                                          filter={"writer": 1} if kind == "filtered" else None)
            if kind != "filtered" and len(found) != 10:
                raise AssertionError(f"{kind} search returned {len(found)} rows")
            with out["lock"]:
                out["reads"] += 1
                out["latencies"].append((time.perf_counter() - started) * 1000)
        except Exception as exc:  # noqa: BLE001
            with out["lock"]:
                out["errors"].append(f"reader {r} {kind}: {type(exc).__name__}: {exc}")


async def _async_reader(dsn: str, config: TableConfig, stop: threading.Event,
                        out: dict[str, Any]) -> None:
    rng = np.random.default_rng(300)
    async with AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False,
                                   configure=configure_connection_async) as pool:
        while not stop.is_set():
            query = _unit(rng, 1)[0]
            started = time.perf_counter()
            try:
                async with pool.connection() as conn:
                    found = await mrl_pg.search_async(conn, config, query, k=10)
                if len(found) != 10:
                    raise AssertionError(f"async search returned {len(found)} rows")
                with out["lock"]:
                    out["reads"] += 1
                    out["latencies"].append((time.perf_counter() - started) * 1000)
            except Exception as exc:  # noqa: BLE001
                with out["lock"]:
                    out["errors"].append(f"async reader: {type(exc).__name__}: {exc}")


def _check(conn: psycopg.Connection[Any], config: TableConfig, model: _Model,
           sample: int, seed: int) -> dict[str, Any]:
    stored = {key: np.asarray(vec.to_numpy(), dtype=np.float32) for key, vec in conn.execute(
        sql.SQL("SELECT external_id, embedding FROM {}").format(config.table)).fetchall()}
    wrong = sum(1 for k, v in model.rows.items() if k in stored and not np.allclose(
        stored[k], v, atol=1e-6))
    missing = sum(1 for k in model.rows if k not in stored)
    deleted_present = sum(1 for k in model.deleted if k in stored)
    rng = random.Random(seed)
    keys = rng.sample(sorted(model.rows), min(sample, len(model.rows)))
    exact_hits = adaptive_hits = 0
    for key in keys:
        vector = model.rows[key]
        exact_hits += mrl_pg.exact_search(conn, config, vector, k=1)[0].external_id == key
        adaptive_hits += key in {r.external_id for r in mrl_pg.search(conn, config, vector,
                                                                       k=10)}
    n = max(1, len(keys))
    return {"rows_checked": len(model.rows), "wrong_rows": wrong, "missing_rows": missing,
            "deleted_present": deleted_present, "exact_self_recall": exact_hits / n,
            "adaptive_self_recall": adaptive_hits / n, "sample": len(keys)}


def run_soak(dsn: str, config: TableConfig, *, seconds: float, preload: int = 20_000,
             writers: int = 4, readers: int = 3, sample: int = 300,
             seed: int = 0) -> SoakReport:
    """Create ``config``'s table (it must not exist), preload it, run the soak, check."""
    model = _Model()
    with psycopg.connect(dsn, autocommit=True) as conn:
        configure_connection(conn)
        install(conn, config)
        vectors = _unit(np.random.default_rng(seed), preload)
        keys = [f"pre-{i}" for i in range(preload)]
        ingest_arrays(conn, config, vectors, external_ids=keys,
                      metadatas=[{"writer": -1}] * preload)
        model.put(keys, vectors)
        build_hnsw_index(conn, config)
        conn.execute(sql.SQL("ANALYZE {}").format(config.table))
    out: dict[str, Any] = {"lock": threading.Lock(), "writes": 0, "reads": 0, "errors": [],
                           "latencies": [], "by_kind": {}}
    stop = threading.Event()
    with ConnectionPool(dsn, min_size=writers + readers, max_size=writers + readers,
                        configure=configure_connection, open=True) as pool:
        threads = [threading.Thread(target=_writer, args=(w, pool, config, model, stop, out))
                   for w in range(writers)]
        threads += [threading.Thread(target=_reader, args=(r, pool, config, stop, out))
                    for r in range(readers)]
        threads.append(threading.Thread(
            target=lambda: asyncio.run(_async_reader(dsn, config, stop, out))))
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
        checked = _check(conn, config, model, sample, seed)
    return SoakReport(seconds=elapsed, writes=out["writes"], reads=out["reads"],
                      errors=out["errors"], read_latencies_ms=out["latencies"],
                      by_kind=out["by_kind"], **checked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--dsn", default=None,
                        help="database (default: MRL_PG_DSN, DATABASE_URL or embedded)")
    args = parser.parse_args()
    from mrl_pg.server import resolve_dsn

    dsn = args.dsn or resolve_dsn(embedded=True)
    config = TableConfig("mrl_soak", full_dim=DIM, prefix_dim=PREFIX)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(config.table))
    try:
        report = run_soak(dsn, config, seconds=args.seconds)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(config.table))
    print(report.summary())
    for error in report.errors[:20]:
        print("error:", error)
    raise SystemExit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
