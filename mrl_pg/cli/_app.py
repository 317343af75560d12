"""The root command group and the shared options and error handling of every subcommand."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..config import DEFAULT_FULL_DIM, DEFAULT_PREFIX_DIM, DEFAULT_TABLE, TableConfig
from ..errors import MrlPgError
from ..server import resolve_dsn

F = TypeVar("F", bound=Callable[..., Any])


class _Group(click.Group):
    """Turns every mrl_pg error into one line on stderr and exit code 1, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MrlPgError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mrl_pg")
def cli() -> None:
    """Matryoshka adaptive retrieval on PostgreSQL + pgvector.

    The database is MRL_PG_DSN, else DATABASE_URL, else an embedded
    PostgreSQL started (or reused) with its data in ./.mrl-pg.
    """


def _resolve(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    # The CLI keeps the zero-setup default: no DSN anywhere means the embedded server.
    return value or resolve_dsn(embedded=True)


def dsn_option(func: F) -> F:
    """``--dsn``: the database, overriding MRL_PG_DSN / DATABASE_URL / the embedded server."""
    return click.option(
        "--dsn",
        default=None,
        metavar="DSN",
        callback=_resolve,
        help="PostgreSQL connection string (default: MRL_PG_DSN, DATABASE_URL, or embedded).",
    )(func)


def table_options(func: F) -> F:
    """``--table/--dim/--prefix-dim/--schema``, turned into a ``config: TableConfig`` argument."""

    @click.option("--table", "table", default=DEFAULT_TABLE, show_default=True,
                  help="Table name.")
    @click.option("--schema", default=None, help="Schema of the table (default: search_path).")
    @click.option("--dim", "full_dim", type=int, default=DEFAULT_FULL_DIM, show_default=True,
                  help="Full embedding dimension N.")
    @click.option("--prefix-dim", type=int, default=DEFAULT_PREFIX_DIM, show_default=True,
                  help="Prefix dimension P indexed by HNSW.")
    @functools.wraps(func)
    def wrapper(*args: Any, table: str, schema: str | None, full_dim: int, prefix_dim: int,
                **kwargs: Any) -> Any:
        config = TableConfig(table, full_dim=full_dim, prefix_dim=prefix_dim, schema=schema)
        return func(*args, config=config, **kwargs)

    return wrapper  # type: ignore[return-value]
