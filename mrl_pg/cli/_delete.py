"""``mrl-pg delete``: remove rows by key or metadata filter, with a dry run."""

from __future__ import annotations

from pathlib import Path

import click

from mrl_pg.cli._app import TableChoice, dsn_option, table_options
from mrl_pg.cli._search import _parse_filter
from mrl_pg.db import connect
from mrl_pg.errors import InvalidConfigError
from mrl_pg.ingest.delete import delete_rows


@click.command(name="delete")
@click.option("--id", "ids", multiple=True, metavar="KEY",
              help="external_id of a row to delete (repeat for more).")
@click.option("--ids-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A file of external_ids, one per line.")
@click.option("--filter", "filter_json", metavar="JSON",
              help='Delete rows whose metadata contains this object, e.g. \'{"lang": "en"}\'.')
@click.option("--tenant", metavar="VALUE",
              help="Only rows of this tenant (required on a table with a tenant column).")
@click.option("--dry-run", is_flag=True, help="Count the matching rows; delete nothing.")
@table_options
@dsn_option
def delete_command(ids: tuple[str, ...], ids_file: Path | None, filter_json: str | None,
                   tenant: str | None, dry_run: bool, table: TableChoice, dsn: str) -> None:
    """Delete rows by --id/--ids-file, by --filter, or both (rows matching both).

    All matching rows go in one transaction, or none do.
    """
    keys: list[str] | None = None
    if ids or ids_file is not None:
        keys = list(ids)
        if ids_file is not None:
            try:
                text = ids_file.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise click.BadParameter(f"{ids_file} is not UTF-8 text ({exc.reason})",
                                         param_hint="--ids-file") from None
            keys += [line.strip() for line in text.splitlines() if line.strip()]
    flt = _parse_filter(filter_json)
    if keys is None and flt is None:
        raise click.UsageError("name the rows to delete: --id, --ids-file and/or --filter")
    with connect(dsn, autocommit=True) as conn:
        config = table.existing(conn)
        if config.adopted:
            raise InvalidConfigError(
                f"{config.qualified_name} is an adopted table: mrl-pg delete works on tables "
                "mrl_pg created (by external_id or metadata); delete its rows with SQL")
        report = delete_rows(conn, config, external_ids=keys, filter=flt, tenant=tenant,
                             dry_run=dry_run)
    if report.dry_run:
        click.echo(f"{config.qualified_name}: {report.matched} rows match; nothing deleted "
                   "(--dry-run)")
    else:
        click.echo(f"{config.qualified_name}: deleted {report.deleted} rows")


COMMANDS = [delete_command]
