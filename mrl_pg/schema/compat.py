"""What mrl_pg needs from the database server: pgvector 0.8 or later.

0.8 brought iterative index scans (``hnsw.iterative_scan``,
``hnsw.max_scan_tuples``), which every search sets; pgvector reserves the
``hnsw.`` prefix, so on 0.7 setting them fails. The install, the migrations and
every connection check the version here, with one message naming what is installed.
"""

from __future__ import annotations

import re

from mrl_pg.errors import PgvectorVersionError

__all__ = [
    "MIN_PGVECTOR_VERSION",
    "PGVECTOR_VERSION_SQL",
    "PGVECTOR_INSTALLABLE_SQL",
    "parse_version",
    "require_pgvector",
]

MIN_PGVECTOR_VERSION = (0, 8, 0)

PGVECTOR_VERSION_SQL = "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
"""Reads the installed version; None (no row) when the extension is not installed."""

PGVECTOR_INSTALLABLE_SQL = (
    "SELECT coalesce((SELECT extversion FROM pg_extension WHERE extname = 'vector'),"
    " (SELECT default_version FROM pg_available_extensions WHERE name = 'vector'))"
)
"""The installed version, else the one ``CREATE EXTENSION vector`` would install (else None)."""


def parse_version(text: str) -> tuple[int, ...]:
    """``'0.8.1'`` -> ``(0, 8, 1)``; a suffix such as ``-dev`` is ignored."""
    numbers = re.findall(r"\d+", text.split("-")[0])
    return tuple(int(n) for n in numbers)


def _minimum() -> str:
    return ".".join(map(str, MIN_PGVECTOR_VERSION))


def require_pgvector(installed: str | None, *, database: str | None = None) -> None:
    """Raise :class:`PgvectorVersionError` unless ``installed`` is at least 0.8.0.

    ``installed`` is ``pg_extension.extversion`` (None: not installed).
    """
    where = f" in database {database!r}" if database else ""
    if installed is None:
        raise PgvectorVersionError(
            f"the pgvector extension is not installed{where}: run `mrl-pg migrate` "
            f"(or CREATE EXTENSION vector as a role allowed to) with pgvector >= {_minimum()}",
            installed=None,
        )
    if parse_version(installed) < MIN_PGVECTOR_VERSION:
        raise PgvectorVersionError(
            f"pgvector {installed} is installed{where}, but mrl_pg needs {_minimum()} or later "
            "(iterative index scans): ALTER EXTENSION vector UPDATE after installing a newer "
            "pgvector",
            installed=installed,
        )
