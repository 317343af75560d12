"""What ``mrl-pg bench`` measured: report dataclasses, their JSON and their markdown tables."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from mrl_pg.bench.methods import ADAPTIVE, SINGLE_PASS

__all__ = [
    "DataInfo",
    "Environment",
    "IndexInfo",
    "MethodResult",
    "SearchBenchReport",
    "SweepPoint",
    "RowsSweepReport",
    "EqualRecall",
    "equal_recall",
    "to_json",
    "search_markdown",
    "sweep_markdown",
]


@dataclass(frozen=True)
class DataInfo:
    """The vectors searched: ``source`` is "synthetic" or the .npy file they came from."""

    source: str
    rows: int
    full_dim: int
    prefix_dim: int
    queries: int
    k: int
    seed: int
    queries_source: str


@dataclass(frozen=True)
class Environment:
    """Where the figures come from: the command, the machine and the server."""

    command: str | None
    started_at: str
    cpu_count: int
    usable_cpus: int
    ram_bytes: int
    platform: str
    python: str
    postgresql: str
    pgvector: str
    server_settings: dict[str, str]
    load_average_start: list[float]
    """The machine's 1, 5 and 15 minute load averages as the run began: other work skews QPS."""
    load_average_end: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class IndexInfo:
    """One HNSW index the methods read: its size on disk and how it was built."""

    name: str
    role: str
    """``prefix`` (mrl_pg's) or ``full`` (single-pass, on the whole embedding)."""
    definition: str
    bytes: int
    build_seconds: float
    maintenance_work_mem: int
    parallel_workers: int


@dataclass(frozen=True)
class MethodResult:
    """One method's figures. ``qps`` is the median over rounds per client count, the
    per-round values in ``qps_rounds``; latencies are of the 1-client passes, every
    round pooled; ``buffers_*`` are means per query over a sample (EXPLAIN ANALYZE)."""

    name: str
    family: str
    settings: dict[str, int | None]
    product_default: bool
    index: str | None
    index_role: str | None
    index_bytes: int
    index_build_seconds: float
    plan_nodes: list[str]
    recall: float
    qps: dict[int, float]
    qps_rounds: dict[int, list[float]]
    p50_ms: float
    p99_ms: float
    mean_ms: float
    buffers_hit: float
    buffers_read: float
    buffers_per_query: float
    index_rows: float
    """Rows the method's HNSW scan returned per query (its real candidate pool)."""
    buffer_sample: int
    tuned: bool = False
    """Run as a user runs it after ``mrl-pg tune`` (no oversample or ef_search passed)."""


@dataclass(frozen=True)
class TuneSummary:
    """What ``mrl-pg tune`` chose on the benchmark table, before the timed rounds.

    It takes its queries from the table's rows, not the held-out queries.
    """

    target_recall: float
    queries: int
    recommended: dict[str, int] | None
    recall_on_rows: float | None
    seconds: float


@dataclass(frozen=True)
class SearchBenchReport:
    """Every method side by side, on the same data and server, in interleaved rounds."""

    kind: str
    data: DataInfo
    environment: Environment
    options: dict[str, Any]
    load_seconds: float
    table_bytes: int
    indexes: list[IndexInfo]
    methods: list[MethodResult]
    round_orders: list[list[str]]
    seconds: float
    warnings: list[str] = field(default_factory=list)
    tuning: TuneSummary | None = None

    def method(self, name: str) -> MethodResult:
        for result in self.methods:
            if result.name == name:
                return result
        raise KeyError(name)


@dataclass(frozen=True)
class SweepPoint:
    """The subset of methods measured at one table size."""

    rows: int
    load_seconds: float
    table_bytes: int
    indexes: list[IndexInfo]
    methods: list[MethodResult]
    round_orders: list[list[str]]


@dataclass(frozen=True)
class RowsSweepReport:
    """How QPS, buffers per query and build time grow with the table."""

    kind: str
    data: DataInfo
    environment: Environment
    options: dict[str, Any]
    points: list[SweepPoint]
    seconds: float
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class EqualRecall:
    """mrl_pg's default against the fastest single-pass setting reaching its recall."""

    adaptive: MethodResult
    single_pass: MethodResult | None
    """None when no single-pass setting measured reached the adaptive recall."""
    best_single_pass: MethodResult | None

    @property
    def speedup(self) -> float | None:
        if self.single_pass is None or not self.single_pass.qps.get(1):
            return None
        return self.adaptive.qps[1] / self.single_pass.qps[1]


def equal_recall(methods: list[MethodResult], *, tuned: bool = False) -> EqualRecall | None:
    """Compare at the same recall: the product default (or, with ``tuned``, the setting
    ``mrl-pg tune`` saved) against single-pass HNSW."""
    default = next((m for m in methods if m.family == ADAPTIVE
                    and (m.tuned if tuned else m.product_default)), None)
    singles = [m for m in methods if m.family == SINGLE_PASS]
    if default is None or not singles:
        return None
    reaching = [m for m in singles if m.recall >= default.recall]
    fastest = max(reaching, key=lambda m: m.qps[1]) if reaching else None
    best = max(singles, key=lambda m: (m.recall, m.qps[1]))
    return EqualRecall(adaptive=default, single_pass=fastest, best_single_pass=best)


def to_json(report: SearchBenchReport | RowsSweepReport) -> str:
    """Every field of the report as indented JSON (client counts become string keys)."""
    return json.dumps(asdict(report), indent=2, sort_keys=False)


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MB"


def _header(data: DataInfo, env: Environment, rounds: int) -> list[str]:
    source = ("synthetic Matryoshka-like vectors" if data.source == "synthetic"
              else f"vectors from {data.source}")
    held = "held-out " if data.queries_source == "synthetic" else ""
    return [
        f"{data.rows:,} x {data.full_dim} {source} (seed {data.seed}), prefix {data.prefix_dim}, "
        f"{data.queries} {held}queries, k={data.k}",
        "",
        f"PostgreSQL {env.postgresql}, pgvector {env.pgvector}; {env.usable_cpus} cores, "
        f"{env.ram_bytes / 2**30:.1f} GiB RAM; {rounds} interleaved rounds, median QPS; "
        f"recall@{data.k} against numpy brute force; load average "
        f"{_load(env.load_average_start)} at the start, {_load(env.load_average_end)} at the end",
    ]


def _load(values: list[float]) -> str:
    return f"{values[0]:.1f}" if values else "unknown"


def _client_counts(methods: list[MethodResult]) -> list[int]:
    return sorted({c for m in methods for c in m.qps})


def _method_table(methods: list[MethodResult], k: int) -> list[str]:
    clients = _client_counts(methods)
    head = (["method", f"recall@{k}"]
            + [f"QPS {c} client{'s' if c > 1 else ''}" for c in clients]
            + ["p50 ms", "p99 ms", "buffers/query", "HNSW rows/query", "index", "index size",
               "build s"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        cells = [m.name + (" **(mrl_pg default)**" if m.product_default else "")
                 + (" **(as tuned)**" if m.tuned else ""),
                 f"{m.recall:.3f}"]
        cells += [f"{m.qps[c]:,.1f}" if c in m.qps else "" for c in clients]
        cells += [f"{m.p50_ms:.2f}", f"{m.p99_ms:.2f}", f"{m.buffers_per_query:,.0f}",
                  f"{m.index_rows:,.0f}" if m.index else "",
                  f"{m.index_role} HNSW" if m.index else "none (seq scan)",
                  _mb(m.index_bytes) if m.index else "",
                  f"{m.index_build_seconds:.1f}" if m.index else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _equal_recall_lines(methods: list[MethodResult], k: int, *, tuned: bool) -> list[str]:
    compared = equal_recall(methods, tuned=tuned)
    if compared is None:
        return []
    a = compared.adaptive
    if compared.single_pass is None or compared.speedup is None:
        best = compared.best_single_pass
        tail = (f"; the best, {best.name}, reached {best.recall:.3f} at {best.qps[1]:,.1f} QPS"
                if best else "")
        return [f"At equal recall: no single-pass setting measured reached {a.name}'s "
                f"recall@{k} {a.recall:.3f}{tail}."]
    s = compared.single_pass
    return [
        f"At equal recall: {a.name} reaches recall@{k} {a.recall:.3f} at {a.qps[1]:,.1f} QPS "
        f"(1 client); the fastest single-pass setting reaching it, {s.name} "
        f"(recall {s.recall:.3f}), runs {s.qps[1]:,.1f} QPS: **{compared.speedup:.2f}x**, "
        f"reading {a.buffers_per_query:,.0f} against {s.buffers_per_query:,.0f} "
        f"buffers per query, from a {_mb(a.index_bytes)} index against {_mb(s.index_bytes)}."
    ]


def search_markdown(report: SearchBenchReport) -> str:
    """The side-by-side table, with the equal-recall comparison and the index builds."""
    rounds = int(report.options.get("rounds", len(report.round_orders)))
    lines = ["## mrl-pg bench", ""] + _header(report.data, report.environment, rounds) + [""]
    lines += _method_table(report.methods, report.data.k) + [""]
    lines += _equal_recall_lines(report.methods, report.data.k, tuned=False)
    lines += [""] + _equal_recall_lines(report.methods, report.data.k, tuned=True)
    if report.tuning is not None:
        t = report.tuning
        chose = (f"oversample {t.recommended['oversample']}, ef_search "
                 f"{t.recommended['ef_search']} (recall {t.recall_on_rows:.3f} on rows)"
                 if t.recommended else "nothing: no setting reached the target")
        lines += ["", f"`mrl-pg tune --target-recall {t.target_recall}` on {t.queries} rows of "
                      f"the table ({t.seconds:.0f} s) chose {chose}."]
    lines += [""] + [
        f"- {i.role} index `{i.name}`: {_mb(i.bytes)}, built in {i.build_seconds:.1f} s "
        f"(max_parallel_maintenance_workers {i.parallel_workers}, maintenance_work_mem "
        f"{_mb(i.maintenance_work_mem)})"
        for i in report.indexes
    ]
    lines.append(f"- table: {_mb(report.table_bytes)}, loaded in {report.load_seconds:.1f} s; "
                 f"whole run {report.seconds:.0f} s")
    lines += [f"- warning: {w}" for w in report.warnings]
    if report.environment.command:
        lines += ["", f"`{report.environment.command}`"]
    return "\n".join(lines) + "\n"


def sweep_markdown(report: RowsSweepReport) -> str:
    """One row per (table size, method): how QPS, buffers and build time grow."""
    rounds = int(report.options.get("rounds", 0))
    lines = ["## mrl-pg bench --rows", ""] + _header(report.data, report.environment, rounds)
    clients = _client_counts([m for p in report.points for m in p.methods])
    head = (["rows", "method", f"recall@{report.data.k}"]
            + [f"QPS {c} client{'s' if c > 1 else ''}" for c in clients]
            + ["p50 ms", "buffers/query", "index size", "index build s"])
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for point in report.points:
        for m in point.methods:
            cells = [f"{point.rows:,}", m.name, f"{m.recall:.3f}"]
            cells += [f"{m.qps[c]:,.1f}" if c in m.qps else "" for c in clients]
            cells += [f"{m.p50_ms:.2f}", f"{m.buffers_per_query:,.0f}",
                      _mb(m.index_bytes) if m.index else "",
                      f"{m.index_build_seconds:.1f}" if m.index else ""]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for point in report.points:
        builds = ", ".join(f"{i.role} {_mb(i.bytes)} in {i.build_seconds:.1f} s"
                           for i in point.indexes)
        lines.append(f"- {point.rows:,} rows: loaded in {point.load_seconds:.1f} s; {builds}")
    lines.append(f"- whole run {report.seconds:.0f} s")
    lines += [f"- warning: {w}" for w in report.warnings]
    if report.environment.command:
        lines += ["", f"`{report.environment.command}`"]
    return "\n".join(lines) + "\n"
