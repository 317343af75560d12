"""The benchmark's pictures: recall against QPS, and growth with the table size.

matplotlib is imported only when a picture is drawn (``pip install 'mrl_pg[bench]'``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mrl_pg.bench.methods import FAMILIES
from mrl_pg.bench.report import MethodResult, RowsSweepReport, SearchBenchReport

__all__ = ["pareto_frontier", "plot_search", "plot_sweep"]

_STYLE = {
    "exact": ("black", "X"),
    "single-pass": ("tab:blue", "o"),
    "supabase": ("tab:green", "D"),
    "prefix-only": ("tab:gray", "v"),
    "adaptive": ("tab:red", "s"),
}


def pareto_frontier(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (recall, qps) points no other point beats on both, by increasing recall.

    As ann-benchmarks draws it: take the points fastest first, keep each that
    has a higher recall than every point kept before it.
    """
    frontier: list[tuple[float, float]] = []
    best_recall = float("-inf")
    for recall, qps in sorted(points, key=lambda p: (-p[1], -p[0])):
        if recall > best_recall:
            frontier.append((recall, qps))
            best_recall = recall
    return sorted(frontier)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def plot_search(report: SearchBenchReport, path: Path | str, *, clients: int = 1) -> None:
    """Recall@k against QPS (log scale), one series per method family with its frontier."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    for family in FAMILIES:
        members = [m for m in report.methods if m.family == family and clients in m.qps]
        if not members:
            continue
        colour, marker = _STYLE.get(family, ("tab:purple", "o"))
        ax.scatter([m.recall for m in members], [m.qps[clients] for m in members],
                   color=colour, marker=marker, alpha=0.35, s=30)
        frontier = pareto_frontier([(m.recall, m.qps[clients]) for m in members])
        ax.plot([r for r, _ in frontier], [q for _, q in frontier], color=colour,
                marker=marker, label=family, linewidth=1.5)
        for m in members:
            ax.annotate(_short(m), (m.recall, m.qps[clients]), fontsize=6, alpha=0.8,
                        xytext=(3, 3), textcoords="offset points")
        default = [m for m in members if m.product_default]
        for m in default:
            ax.scatter([m.recall], [m.qps[clients]], color=colour, marker="*", s=260,
                       edgecolors="black", zorder=5, label="mrl_pg default")
    d = report.data
    ax.set_yscale("log")
    ax.set_xlabel(f"recall@{d.k} (against numpy brute force)")
    ax.set_ylabel(f"queries per second, {clients} client{'s' if clients > 1 else ''} (log)")
    ax.set_title(f"{d.rows:,} x {d.full_dim}, prefix {d.prefix_dim}: recall against QPS "
                 f"(up and right is better)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def _short(m: MethodResult) -> str:
    s = m.settings
    if m.family == "adaptive":
        return f"{s.get('oversample')}x/{s.get('ef_search')}"
    if s.get("ef_search") is not None:
        return f"ef {s['ef_search']}"
    return ""


def plot_sweep(report: RowsSweepReport, path: Path | str, *, clients: int = 1) -> None:
    """QPS, buffers per query and index build time against table size, per method."""
    plt = _pyplot()
    fig, (qps_ax, buf_ax, build_ax) = plt.subplots(1, 3, figsize=(14, 4.5), dpi=110)
    rows = [p.rows for p in report.points]
    names = [m.family for m in report.points[0].methods] if report.points else []
    for i, family in enumerate(names):
        colour, marker = _STYLE.get(family, ("tab:purple", "o"))
        series = [p.methods[i] for p in report.points]
        names_here = {m.name for m in series}
        label = series[0].name if len(names_here) == 1 else f"{family} (tuned at each size)"
        qps_ax.plot(rows, [m.qps.get(clients, 0.0) for m in series], color=colour,
                    marker=marker, label=label)
        buf_ax.plot(rows, [m.buffers_per_query for m in series], color=colour, marker=marker,
                    label=label)
    for role, style in (("prefix", "tab:red"), ("full", "tab:blue")):
        build_ax.plot(rows, [next((x.build_seconds for x in p.indexes if x.role == role), 0.0)
                             for p in report.points],
                      color=style, marker="o", label=f"{role} index")
    qps_ax.set_ylabel(f"QPS, {clients} client{'s' if clients > 1 else ''}")
    buf_ax.set_ylabel("shared buffers per query")
    build_ax.set_ylabel("index build seconds")
    for ax in (qps_ax, buf_ax, build_ax):
        ax.set_xlabel("rows")
        ax.set_xscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{report.data.full_dim}-d, prefix {report.data.prefix_dim}: growth with rows",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
