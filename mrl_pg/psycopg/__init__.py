"""The psycopg front end: adaptive and exact search over a connection, sync and async.

The search itself is :mod:`mrl_pg.statement`; this package runs it (settings,
statement and their end in one round trip) and turns rows into results.
"""

from mrl_pg.psycopg._search import (
    SearchResult,
    SearchStatement,
    adaptive_search_statement,
    exact_search,
    exact_search_async,
    exact_search_statement,
    explain,
    explain_statement,
    run_statement,
    search,
    search_async,
)

__all__ = [
    "SearchResult",
    "SearchStatement",
    "adaptive_search_statement",
    "exact_search_statement",
    "search",
    "exact_search",
    "explain",
    "explain_statement",
    "run_statement",
    "search_async",
    "exact_search_async",
]
