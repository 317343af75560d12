"""Reading ``EXPLAIN (FORMAT JSON)`` plans: the benchmark's and tune's plan guards, and tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["plan_tree", "plan_nodes", "uses_index"]


def plan_tree(plan: Any) -> Iterator[dict[str, Any]]:
    """Every node of an ``EXPLAIN (FORMAT JSON)`` plan, depth first."""
    if isinstance(plan, list):
        for item in plan:
            yield from plan_tree(item)
        return
    node = plan.get("Plan", plan)
    yield node
    for child in node.get("Plans", []):
        yield from plan_tree(child)


def plan_nodes(plan: Any) -> list[str]:
    """Each node of a plan, depth first: its type, the index or relation it reads."""
    described = []
    for node in plan_tree(plan):
        text = str(node.get("Node Type"))
        if "Index Name" in node:
            text += f" using {node['Index Name']}"
        elif "Relation Name" in node:
            text += f" on {node['Relation Name']}"
        described.append(text)
    return described


def uses_index(plan: Any, index: str) -> bool:
    """Whether the plan has an index scan of ``index`` (not a bitmap scan, not another index)."""
    return any(n.get("Index Name") == index and n.get("Node Type") == "Index Scan"
               for n in plan_tree(plan))
