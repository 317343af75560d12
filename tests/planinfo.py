"""Walking EXPLAIN (FORMAT JSON) plans in tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def nodes(plan: Any) -> Iterator[dict[str, Any]]:
    """Every node of a plan, depth first (accepts the list EXPLAIN returns)."""
    if isinstance(plan, list):
        for item in plan:
            yield from nodes(item)
        return
    node = plan.get("Plan", plan)
    yield node
    for child in node.get("Plans", []):
        yield from nodes(child)


def index_scans(plan: Any, index_name: str) -> list[dict[str, Any]]:
    return [n for n in nodes(plan) if n.get("Index Name") == index_name]


def candidate_limit(plan: Any) -> dict[str, Any]:
    """The LIMIT node inside the ``candidates`` CTE: its row count is the candidate pool."""
    for node in nodes(plan):
        if node.get("Subplan Name") == "CTE candidates" and node["Node Type"] == "Limit":
            return node
    raise AssertionError("no candidates CTE in plan")
