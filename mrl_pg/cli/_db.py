"""``mrl-pg migrate`` and ``mrl-pg sql``: schema management."""

from __future__ import annotations

import click

from .. import migrate as migrations
from ..config import TableConfig
from ..install import install_script
from ._app import dsn_option, table_options


@click.command()
@dsn_option
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def migrate(dsn: str | None, revision: str) -> None:
    """Upgrade the database to the latest mrl_pg schema (creates mrl_documents and mrl_search)."""
    migrations.upgrade(dsn, revision)
    click.echo(f"database at revision {migrations.current(dsn)}", err=True)


@click.command(name="sql")
@table_options
def sql_command(config: TableConfig) -> None:
    """Print the install script (table, indexes, search function) for psql -f."""
    click.echo(install_script(config), nl=False)


COMMANDS = [migrate, sql_command]
