"""``mrl-pg migrate`` and ``mrl-pg sql``: schema management."""

from __future__ import annotations

import click

from mrl_pg import migrate as migrations
from mrl_pg.cli._app import TableChoice, dsn_option, table_options
from mrl_pg.schema.install import install_script


@click.command()
@dsn_option
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def migrate(dsn: str | None, revision: str) -> None:
    """Upgrade the database to the latest mrl_pg schema (creates mrl_documents and mrl_search)."""
    migrations.upgrade(dsn, revision)
    click.echo(f"database at revision {migrations.current(dsn)}", err=True)


@click.command(name="sql")
@table_options
@click.option("--tenant-column", default=None, metavar="NAME",
              help="Give the table a tenant column (text NOT NULL); external_id is then "
                   "unique per tenant.")
def sql_command(table: TableChoice, tenant_column: str | None) -> None:
    """Print the install script (table, indexes, search function) for psql -f."""
    click.echo(install_script(table.new_config(tenant_column=tenant_column)), nl=False)


COMMANDS = [migrate, sql_command]
