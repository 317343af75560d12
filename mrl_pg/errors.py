"""One small hierarchy for every error a caller can cause or meet.

Each class names the problem; each message names the offending value and
what was expected. Value problems also subclass ``ValueError`` so generic
callers can catch them the usual way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "one_line",
    "MrlPgError",
    "InvalidIdentifierError",
    "InvalidConfigError",
    "InvalidVectorError",
    "DimensionMismatchError",
    "InvalidSearchError",
    "IngestError",
    "EmbeddingError",
    "InvalidTextError",
    "ServerError",
    "DatabaseError",
    "DatabaseNotConfiguredError",
    "PgvectorVersionError",
]


class MrlPgError(Exception):
    """Base class of every error raised by mrl_pg."""


class InvalidIdentifierError(MrlPgError, ValueError):
    """A table or schema name that would need quoting, is reserved, or is too long."""


class InvalidConfigError(MrlPgError, ValueError):
    """A table configuration that PostgreSQL or pgvector cannot honour."""


class InvalidVectorError(MrlPgError, ValueError):
    """A vector that cannot be stored or searched: NaN, infinity, zero norm, wrong shape."""


class DimensionMismatchError(InvalidVectorError):
    """A vector whose length is not the table's dimension."""

    def __init__(self, message: str, *, expected: int, actual: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class InvalidSearchError(MrlPgError, ValueError):
    """Search arguments out of range: k, oversample, filter."""


class IngestError(MrlPgError, ValueError):
    """A record that cannot be loaded; carries the file and line it came from."""

    def __init__(self, message: str, *, path: Path | str | None = None, line: int | None = None):
        where = ""
        if path is not None and line is not None:
            where = f"{path}:{line}: "
        elif path is not None:
            where = f"{path}: "
        elif line is not None:
            where = f"record {line}: "
        super().__init__(where + message)
        self.path = path
        self.line = line
        self.reason = message


class EmbeddingError(MrlPgError):
    """The embedding service failed or answered with something unusable."""


class InvalidTextError(EmbeddingError, ValueError):
    """A text that cannot be embedded (empty, whitespace only, not a string); no request is sent."""


class ServerError(MrlPgError):
    """The embedded PostgreSQL server could not be started, found or stopped."""


class DatabaseError(MrlPgError):
    """PostgreSQL refused an operation; wraps the driver error as ``__cause__``."""


class LockTimeoutError(DatabaseError):
    """A statement gave up waiting for a lock (``lock_timeout``).

    ``holders`` describes the other sessions holding locks on the table, when
    they could be read (``pid N (state): query``).
    """

    def __init__(self, message: str, *, holders: list[str]) -> None:
        super().__init__(message)
        self.holders = holders
        self.what = message


class DatabaseNotConfiguredError(MrlPgError):
    """No database was named: a library call never starts the embedded server on its own."""


class PgvectorVersionError(DatabaseError):
    """The ``vector`` extension is missing or older than mrl_pg needs.

    ``installed`` is the installed version text, or None when the extension is missing.
    """

    def __init__(self, message: str, *, installed: str | None) -> None:
        super().__init__(message)
        self.installed = installed


def one_line(exc: psycopg.Error) -> str:
    """The server's message and detail on one line (no CONTEXT, LINE or caret lines)."""
    lines = str(exc).splitlines()
    parts = [exc.diag.message_primary or (lines[0] if lines else type(exc).__name__)]
    if exc.diag.message_detail:
        parts.append(exc.diag.message_detail)
    return " ".join(" ".join(p.split()) for p in parts)
