"""Walking EXPLAIN (FORMAT JSON) plans in tests."""

from __future__ import annotations

from typing import Any

from mrl_pg.statement.plans import plan_tree

nodes = plan_tree  # every node of a plan, depth first (accepts the list EXPLAIN returns)


def index_scans(plan: Any, index_name: str) -> list[dict[str, Any]]:
    return [n for n in nodes(plan) if n.get("Index Name") == index_name]


def candidate_limit(plan: Any) -> dict[str, Any]:
    """The LIMIT node inside the ``candidates`` CTE: its row count is the candidate pool."""
    for node in nodes(plan):
        if node.get("Subplan Name") == "CTE candidates" and node["Node Type"] == "Limit":
            return node
    raise AssertionError("no candidates CTE in plan")
