"""What ``mrl-pg bench`` measured: report dataclasses, their JSON and their markdown tables."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from mrl_pg.bench.methods import ADAPTIVE, PREFIX_ONLY, SINGLE_PASS

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
    "RECALL_TARGETS",
    "FrontierRow",
    "Check",
    "fastest_reaching",
    "frontier",
    "checks",
    "frontier_markdown",
    "confirm_candidates",
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
    reused: bool = False
    """Kept from an earlier run (``--reuse``): not built, so no build figures."""


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
    pass_reads: float | None = None
    """Blocks read per query over the timed 1-client passes (the database's ``blks_read``,
    every round): the steady state's reads, where the EXPLAIN sample's depend on which
    method ran before it. None: not counted (``measure(..., count_io=True)``)."""
    pass_hits: float | None = None
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
    confirmed: list[MethodResult] = field(default_factory=list)
    """The frontier's candidates (:func:`confirm_candidates`) timed again, alone."""
    confirm_round_orders: list[list[str]] = field(default_factory=list)

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


RECALL_TARGETS = (0.95, 0.99, 0.995, 0.999)
"""The recalls@k the equal-recall frontier reports (issue 20)."""


def _frontier_candidates(methods: list[MethodResult], family: str, k: int) -> list[MethodResult]:
    if family == ADAPTIVE:  # explicit settings through the prefix index, not tune's choice
        return [m for m in methods if m.family == ADAPTIVE and not m.tuned
                and m.index_role in (None, "prefix")]
    if family == PREFIX_ONLY:  # LIMIT k: a search of its own, not the walk of a larger pool
        return [m for m in methods if m.family == PREFIX_ONLY and m.settings.get("pool") == k]
    return [m for m in methods if m.family == family]


def fastest_reaching(
    methods: list[MethodResult], family: str, target: float, *, k: int, clients: int = 1,
) -> MethodResult | None:
    """The setting of ``family`` with the most QPS (at ``clients``) whose recall@k reaches
    ``target``; None when none does."""
    reaching = [m for m in _frontier_candidates(methods, family, k)
                if m.recall >= target and clients in m.qps]
    return max(reaching, key=lambda m: m.qps[clients]) if reaching else None


@dataclass(frozen=True)
class FrontierRow:
    """At one recall target, the fastest setting of each method reaching it."""

    target: float
    adaptive: MethodResult | None
    single_pass: MethodResult | None
    prefix_only: MethodResult | None

    @property
    def qps_ratio(self) -> float | None:
        """Adaptive QPS over single-pass QPS (1 client)."""
        if self.adaptive is None or self.single_pass is None:
            return None
        return self.adaptive.qps[1] / self.single_pass.qps[1]

    @property
    def buffers_ratio(self) -> float | None:
        """Adaptive shared buffers per query over single-pass's."""
        if (self.adaptive is None or self.single_pass is None
                or not self.single_pass.buffers_per_query):
            return None
        return self.adaptive.buffers_per_query / self.single_pass.buffers_per_query


def frontier(
    methods: list[MethodResult], *, k: int, targets: tuple[float, ...] = RECALL_TARGETS,
) -> list[FrontierRow]:
    """The equal-recall frontier: per target, the fastest adaptive, single-pass and
    prefix-only settings reaching it."""
    return [FrontierRow(target=t,
                        adaptive=fastest_reaching(methods, ADAPTIVE, t, k=k),
                        single_pass=fastest_reaching(methods, SINGLE_PASS, t, k=k),
                        prefix_only=fastest_reaching(methods, PREFIX_ONLY, t, k=k))
            for t in targets]


@dataclass(frozen=True)
class Check:
    """One target of issue 20, measured: ``met`` None when it could not be measured."""

    name: str
    target: str
    measured: str
    met: bool | None


def _same_walk(methods: list[MethodResult], adaptive: MethodResult) -> MethodResult | None:
    """Prefix-only at the adaptive setting's ef_search and pool (LIMIT pool)."""
    pool, ef = adaptive.settings.get("pool"), adaptive.settings.get("ef_search")
    return next((m for m in methods if m.family == PREFIX_ONLY
                 and m.settings.get("pool") == pool and m.settings.get("ef_search") == ef), None)


def checks(
    methods: list[MethodResult], *, k: int, target_recall: float = 0.99,
    min_speedup: float = 1.3, min_prefix_share: float = 0.9, max_buffer_share: float = 0.7,
) -> list[Check]:
    """Issue 20's targets at ``target_recall``: the product as tuned against the fastest
    single-pass setting reaching it (QPS and shared buffers), and adaptive search against
    prefix-only at the same ef_search and pool (the price of the re-rank)."""
    single = fastest_reaching(methods, SINGLE_PASS, target_recall, k=k)
    best_adaptive = fastest_reaching(methods, ADAPTIVE, target_recall, k=k)
    tuned = next((m for m in methods if m.tuned), None)
    out = []
    for label, a in (("product as tuned", tuned), ("fastest adaptive setting", best_adaptive)):
        if a is None:
            out.append(Check(f"{label} >= {min_speedup}x single-pass QPS at recall "
                             f"{target_recall}", f">= {min_speedup}x", "not measured", None))
            continue
        if single is None:
            out.append(Check(f"{label} ({a.name}) QPS vs single-pass at recall {target_recall}",
                             f">= {min_speedup}x", "no single-pass setting reached the recall",
                             None))
        else:
            ratio = a.qps[1] / single.qps[1]
            reached = a.recall >= target_recall
            out.append(Check(
                f"{label} ({a.name}, recall {a.recall:.3f}) vs {single.name} "
                f"(recall {single.recall:.3f}), QPS",
                f">= {min_speedup}x at recall >= {target_recall}",
                f"{ratio:.2f}x ({a.qps[1]:,.0f} vs {single.qps[1]:,.0f})"
                + ("" if reached else f"; recall {a.recall:.3f} misses {target_recall}"),
                ratio >= min_speedup and reached))
            share = (a.buffers_per_query / single.buffers_per_query
                     if single.buffers_per_query else None)
            out.append(Check(
                f"{label} ({a.name}) vs {single.name}, shared buffers per query",
                f"<= {max_buffer_share}x",
                "not measured" if share is None else
                f"{share:.2f}x ({a.buffers_per_query:,.0f} vs {single.buffers_per_query:,.0f})",
                None if share is None else share <= max_buffer_share))
        walk = _same_walk(methods, a)
        if walk is None:
            out.append(Check(f"{label} ({a.name}) vs prefix-only at the same ef_search and pool",
                             f">= {min_prefix_share}x", "prefix-only not measured there", None))
        else:
            ratio = a.qps[1] / walk.qps[1]
            out.append(Check(f"{label} ({a.name}) vs {walk.name}, QPS",
                             f">= {min_prefix_share}x",
                             f"{ratio:.2f}x ({a.qps[1]:,.0f} vs {walk.qps[1]:,.0f})",
                             ratio >= min_prefix_share))
    return out


def confirm_candidates(methods: list[MethodResult], *, k: int,
                       targets: tuple[float, ...] = RECALL_TARGETS) -> list[str]:
    """The settings worth timing again, alone, in more rounds: per method and recall target
    the two fastest reaching it and the one reading the fewest buffers (a sweep's single
    fastest is partly luck on a busy machine), the product's default and tuned settings,
    and prefix-only at each chosen adaptive setting's ef_search and pool."""
    chosen: set[str] = set()
    for family in (ADAPTIVE, SINGLE_PASS, PREFIX_ONLY):
        pool = _frontier_candidates(methods, family, k)
        for target in targets:
            reaching = [m for m in pool if m.recall >= target and 1 in m.qps]
            chosen.update(m.name for m in sorted(reaching, key=lambda m: -m.qps[1])[:2])
            if reaching:
                chosen.add(min(reaching, key=lambda m: m.buffers_per_query).name)
    chosen.update(m.name for m in methods if m.tuned or m.product_default)
    for m in methods:
        if m.name in chosen and m.family == ADAPTIVE:
            walk = _same_walk(methods, m)
            if walk is not None:
                chosen.add(walk.name)
    return [m.name for m in methods if m.name in chosen]


def _cell(m: MethodResult | None) -> str:
    if m is None:
        return "none reached it"
    return (f"{m.name}: {m.recall:.3f}, {m.qps[1]:,.0f} QPS, "
            f"{m.buffers_per_query:,.0f} buf")


def _ratio(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}x"


def frontier_markdown(methods: list[MethodResult], *, k: int, target_recall: float = 0.99,
                      ) -> list[str]:
    """The equal-recall frontier table and issue 20's checks, as markdown lines."""
    lines = [f"| recall@{k} >= | adaptive (fastest) | single-pass (fastest) | "
             "prefix-only (fastest) | adaptive / single-pass QPS | "
             "adaptive / single-pass buffers |", "|---|---|---|---|---|---|"]
    for row in frontier(methods, k=k):
        lines.append(f"| {row.target} | {_cell(row.adaptive)} | {_cell(row.single_pass)} | "
                     f"{_cell(row.prefix_only)} | {_ratio(row.qps_ratio)} | "
                     f"{_ratio(row.buffers_ratio)} |")
    lines += ["", "| check | target | measured | |", "|---|---|---|---|"]
    for c in checks(methods, k=k, target_recall=target_recall):
        verdict = {True: "MET", False: "MISSED", None: "not measured"}[c.met]
        lines.append(f"| {c.name} | {c.target} | {c.measured} | {verdict} |")
    return lines


def to_json(report: SearchBenchReport | RowsSweepReport) -> str:
    """Every field of the report as indented JSON (client counts become string keys)."""
    return json.dumps(asdict(report), indent=2, sort_keys=False)


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MB"


def _header(data: DataInfo, env: Environment, rounds: int) -> list[str]:
    source = ("synthetic Matryoshka-like vectors (the project's generator)"
              if data.source == "synthetic"
              else "synthetic power-law vectors (64 Zipf-sized clusters, heavy tails)"
              if data.source == "synthetic powerlaw" else f"vectors from {data.source}")
    held = "held-out " if data.queries_source.startswith("synthetic") else ""
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
    lines += ["### Equal-recall frontier (QPS with 1 client, buffers = shared hit + read)", ""]
    if report.confirmed:
        lines += [f"From the confirm run: the sweep's candidates ({len(report.confirmed)} "
                  f"settings) timed again alone in {len(report.confirm_round_orders)} "
                  "interleaved rounds.", ""]
    lines += frontier_markdown(report.confirmed or report.methods, k=report.data.k,
                               target_recall=float(report.options.get("target_recall", 0.99)))
    if report.confirmed:
        lines += ["", "### The confirm run", ""]
        lines += _method_table(report.confirmed, report.data.k)
    lines += ["", "### Every setting measured (the sweep)", ""]
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
        f"- {i.role} index `{i.name}`: {_mb(i.bytes)}, kept from an earlier run (--reuse)"
        if i.reused else
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
