"""The root command group and the shared options and error handling of every subcommand."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import click
import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from mrl_pg import __version__
from mrl_pg.config import (
    DEFAULT_FULL_DIM,
    DEFAULT_PREFIX_DIM,
    DEFAULT_TABLE,
    TableConfig,
    validate_identifier,
    validate_table_name,
)
from mrl_pg.errors import InvalidConfigError, MrlPgError
from mrl_pg.schema.catalog import CLI, describe_table
from mrl_pg.server import resolve_dsn

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
@click.version_option(version=__version__, prog_name="mrl-pg")
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


@dataclass(frozen=True)
class TableChoice:
    """What ``--table/--schema/--dim/--prefix-dim`` said.

    An existing table is described from the catalog (:meth:`resolve`), so a
    table mrl_pg created or adopted needs nothing but its name; ``full_dim``
    and ``prefix_dim`` (None when not given) only describe a table to create.
    """

    name: str
    schema: str | None
    full_dim: int | None
    prefix_dim: int | None

    def new_config(self, *, tenant_column: str | None = None) -> TableConfig:
        """The configuration of a table mrl_pg creates under this name."""
        return TableConfig(self.name, full_dim=self.full_dim or DEFAULT_FULL_DIM,
                           prefix_dim=self.prefix_dim or DEFAULT_PREFIX_DIM, schema=self.schema,
                           tenant_column=tenant_column)

    def exists(self, conn: psycopg.Connection[Any]) -> bool:
        name = (sql.Identifier(self.schema, self.name) if self.schema
                else sql.Identifier(self.name)).as_string(conn)
        with _reading(conn):
            row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
        return bool(row and row[0])

    def resolve(self, conn: psycopg.Connection[Any]) -> TableConfig:
        """The existing table as the catalog describes it, checked against --dim/--prefix-dim.

        A table that does not exist gets :meth:`new_config`, so the command
        reports the missing table in its own words (or creates it).
        """
        if not self.exists(conn):
            return self.new_config()
        with _reading(conn):
            config = describe_table(conn, self.name, schema=self.schema, spelling=CLI)
        given = {"--dim": (self.full_dim, config.full_dim),
                 "--prefix-dim": (self.prefix_dim, config.prefix_dim)}
        wrong = [f"{option} {mine}" for option, (mine, actual) in given.items()
                 if mine is not None and mine != actual]
        if wrong:
            prefix = (f"a halfvec({config.prefix_dim}) prefix" if config.prefix_column
                      else f"a {config.prefix_dim}-dimension prefix index")
            raise InvalidConfigError(
                f"table {config.qualified_name} has {config.embedding_type}({config.full_dim}) "
                f"embeddings and {prefix}, but {' and '.join(wrong)} was given: leave "
                "--dim/--prefix-dim out for an existing table")
        return config

    def existing(self, conn: psycopg.Connection[Any]) -> TableConfig:
        """:meth:`resolve` for a command that only works on a table that is there."""
        if not self.exists(conn):
            shown = f"{self.schema}.{self.name}" if self.schema else self.name
            raise InvalidConfigError(f"table {shown} does not exist")
        return self.resolve(conn)


@contextmanager
def _reading(conn: psycopg.Connection[Any]) -> Iterator[None]:
    # A read on a connection outside autocommit would leave a transaction open
    # (a concurrent index build afterwards refuses to run inside one).
    if conn.autocommit or conn.info.transaction_status != TransactionStatus.IDLE:
        yield
    else:
        with conn.transaction():
            yield


def table_options(func: F) -> F:
    """``--table/--schema/--dim/--prefix-dim``, turned into a ``table: TableChoice`` argument."""

    @click.option("--table", "table", default=DEFAULT_TABLE, show_default=True,
                  help="Table name: one mrl_pg created or adopted (`mrl-pg adopt`).")
    @click.option("--schema", default=None, help="Schema of the table (default: search_path).")
    @click.option("--dim", "full_dim", type=int, default=None,
                  help=f"Full embedding dimension N of a table to create (default "
                       f"{DEFAULT_FULL_DIM}); an existing table's is read from the catalog.")
    @click.option("--prefix-dim", type=int, default=None,
                  help=f"Prefix dimension P indexed by HNSW, for a table to create (default "
                       f"{DEFAULT_PREFIX_DIM}); an existing table's is read from the catalog.")
    @functools.wraps(func)
    def wrapper(*args: Any, table: str, schema: str | None, full_dim: int | None,
                prefix_dim: int | None, **kwargs: Any) -> Any:
        # Names are checked before any connection is made or SQL is built. An existing
        # table's name may need quoting ("CamelProducts"); one mrl_pg creates may not.
        validate_table_name(table)
        if schema is not None:
            validate_identifier(schema, what="schema name")
        return func(*args, table=TableChoice(table, schema, full_dim, prefix_dim), **kwargs)

    return wrapper  # type: ignore[return-value]
