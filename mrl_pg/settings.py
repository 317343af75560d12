"""The one place that reads environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Environment", "read_environment"]


@dataclass(frozen=True)
class Environment:
    """What the environment says about where the database is."""

    dsn: str | None
    """``MRL_PG_DSN``, else ``DATABASE_URL``, else None; ``embedded`` names the embedded server."""
    home: Path
    """``MRL_PG_HOME``, else ``.mrl-pg`` under the current directory."""


def read_environment() -> Environment:
    """Read ``MRL_PG_DSN``, ``DATABASE_URL`` and ``MRL_PG_HOME``."""
    dsn = os.environ.get("MRL_PG_DSN") or os.environ.get("DATABASE_URL") or None
    home = os.environ.get("MRL_PG_HOME")
    return Environment(
        dsn=dsn,
        home=Path(home).expanduser() if home else Path.cwd() / ".mrl-pg",
    )
