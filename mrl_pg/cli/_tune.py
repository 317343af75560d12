"""``mrl-pg tune``: measure adaptive search on a table's own rows and keep the best setting."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from mrl_pg.cli._app import TableChoice, dsn_option, table_options
from mrl_pg.cli._bench import _counts, _Progress
from mrl_pg.cli._search import _load_vector, _parse_filter, _parse_where
from mrl_pg.db import connect
from mrl_pg.errors import MrlPgError
from mrl_pg.index.saved_tuning import clear_tuning
from mrl_pg.index.tune import STORED_ROWS, TuneOptions, TuneReport, tune
from mrl_pg.statement.tuning import load_tuning

STORED_ROWS_CAVEAT = (
    "caveat: the queries were rows the table stores, and such a figure runs optimistic: "
    "a stored vector sits in the index graph beside its neighbours, while a real query "
    "does not (in a trial, 0.991 here measured 0.966 on held-out queries). For a figure "
    "to rely on, pass real queries with --queries-file, and aim --target-recall above "
    "the recall you need.")


def caveat(report: TuneReport) -> str | None:
    """What the figure does not promise: set when the queries were stored rows."""
    return STORED_ROWS_CAVEAT if report.query_source == STORED_ROWS else None


class NothingMeetsTargetError(MrlPgError):
    """No setting of the grid reached the target recall; nothing was saved."""


def render_report(report: TuneReport) -> str:
    """The grid as a markdown table, the recommended row marked, then what was done."""
    workloads = list(report.results[0].recall) if report.results else []
    header = ["oversample", "ef_search", *[f"recall@{report.options.k} ({w})" for w in workloads],
              "QPS", "p50 ms", "p99 ms", "buffers/query", ""]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in report.results:
        mark = ("**recommended**" if r is report.recommended
                else "" if r.uses_index else f"plan leaves the index: {r.plan}")
        cells = [str(r.tuning.oversample), str(r.tuning.ef_search),
                 *[f"{r.recall[w]:.3f}" for w in workloads], f"{r.qps:.1f}",
                 f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}", f"{r.buffers_per_query:,.0f}", mark]
        lines.append("| " + " | ".join(cells) + " |")
    o = report.options
    lines += [
        "",
        f"{report.config.qualified_name}: {report.table_rows:,} rows; {report.queries} queries "
        f"({report.query_source}), k={o.k}, target recall {o.target_recall}, "
        f"{o.rounds} rounds; exact ground truth {report.truth_seconds:.1f} s, "
        f"all {report.seconds:.1f} s.",
        f"before: oversample {report.previous.oversample}, ef_search "
        f"{report.previous.ef_search} for k={report.previous.k}.",
    ]
    best = report.recommended
    if best is None and not any(r.uses_index for r in report.results):
        lines.append(
            f"no setting's plan walks the prefix index {report.config.hnsw_index_name}: is it "
            "built (`mrl-pg index build`) and the table analyzed? Nothing saved.")
    elif best is None:
        top = max(report.results, key=lambda r: r.min_recall)
        lines.append(
            f"no setting reached recall {o.target_recall} (best {top.min_recall:.3f} at "
            f"oversample {top.tuning.oversample}, ef_search {top.tuning.ef_search}); "
            "nothing saved. Try larger --oversample values.")
    else:
        verb = "would save" if o.dry_run else "saved"
        lines.append(
            f"{verb}: oversample {best.tuning.oversample}, ef_search {best.tuning.ef_search} "
            f"for k={o.k} (recall {best.min_recall:.3f}, {best.qps:.1f} QPS); searches that "
            "leave oversample unset use it, through psycopg, SQLAlchemy and the SQL function."
            + (" (--dry-run: nothing written)" if o.dry_run else ""))
    if caveat(report):
        lines.append(str(caveat(report)))
    return "\n".join(lines)


@click.command(name="tune")
@click.option("--queries", "query_count", type=int, default=200, show_default=True,
              help="Rows of the table to use as queries (a seeded sample).")
@click.option("--queries-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Query vectors from an (m, dim) .npy file instead of rows.")
@click.option("-k", type=int, default=10, show_default=True, help="Results per search.")
@click.option("--target-recall", type=float, default=0.99, show_default=True,
              help="Recall@k the saved setting must reach.")
@click.option("--oversample", default="2,3,4,6,8,12,16,24", show_default=True,
              help="Oversample values to sweep.")
@click.option("--ef-search", default=None,
              help="ef_search values to sweep (default: 40, and 1, 2 and 4 times each pool).")
@click.option("--filter", "filter_json", metavar="JSON",
              help="Also measure with this metadata filter; the setting must meet the "
                   "target with and without it.")
@click.option("--where", "where_json", metavar="JSON",
              help="Also measure with these conditions on the table's own columns (the form "
                   "of `mrl-pg search --where`); the setting must meet the target with and "
                   "without them.")
@click.option("--rounds", type=int, default=2, show_default=True,
              help="Interleaved timing rounds.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sample.")
@click.option("--dry-run", is_flag=True, help="Measure and report; save nothing.")
@click.option("--reset", is_flag=True,
              help="Forget the table's saved setting (back to the defaults) and stop.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@table_options
@dsn_option
def tune_command(query_count: int, queries_file: Path | None, k: int, target_recall: float,
                 oversample: str, ef_search: str | None, filter_json: str | None,
                 where_json: str | None, rounds: int,
                 seed: int, dry_run: bool, reset: bool, as_json: bool, table: TableChoice,
                 dsn: str) -> None:
    """Find the cheapest oversample and ef_search reaching --target-recall on this table.

    Takes rows of the table as queries (or --queries-file), finds their true
    neighbours by exact search, times every setting of the grid, and saves the
    fastest one that meets the target in mrl_pg_tuning: from then on every
    search that leaves oversample unset uses it. Run it again after the data
    changed. Recall measured with stored rows as queries runs optimistic (the
    report says so); real queries (--queries-file) measure what users will get.
    """
    with connect(dsn, autocommit=True) as conn:
        config = table.existing(conn)
        if reset:
            cleared = clear_tuning(conn, config)
            click.echo(f"{config.qualified_name}: "
                       + ("saved setting removed; searches use the defaults." if cleared
                          else "no saved setting; searches already use the defaults."))
            return
        options = TuneOptions(
            k=k, target_recall=target_recall, queries=query_count,
            oversample=_counts(oversample, "--oversample"),
            ef_search=_counts(ef_search, "--ef-search") if ef_search else None,
            filter=_parse_filter(filter_json), where=_parse_where(where_json),
            rounds=rounds, seed=seed, dry_run=dry_run,
        )
        queries = None
        if queries_file is not None:
            queries = np.atleast_2d(_load_vector(queries_file)).astype(np.float32)
        progress = _Progress()
        try:
            report = tune(conn, config, options, queries=queries, on_progress=progress.progress)
        finally:
            progress.close()
        now = load_tuning(conn, config)
    if as_json:
        click.echo(json.dumps({
            "table": config.qualified_name, "rows": report.table_rows,
            "queries": report.queries, "k": k, "target_recall": target_recall,
            "saved": report.saved, "query_source": report.query_source,
            "caveat": caveat(report),
            "recommended": None if report.recommended is None else {
                "oversample": report.recommended.tuning.oversample,
                "ef_search": report.recommended.tuning.ef_search},
            "in_effect": {"oversample": now.oversample, "ef_search": now.ef_search, "k": now.k},
            "settings": [{
                "oversample": r.tuning.oversample, "ef_search": r.tuning.ef_search,
                "recall": r.recall, "qps": r.qps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
                "buffers_per_query": r.buffers_per_query, "uses_index": r.uses_index,
            } for r in report.results],
        }, indent=2))
    else:
        click.echo(render_report(report))
    if report.recommended is None:
        raise NothingMeetsTargetError(
            f"no setting reached recall@{k} {target_recall}; nothing saved")


COMMANDS = [tune_command]
