"""The ``mrl-pg`` command line: parses arguments and calls the library, nothing more."""

from __future__ import annotations

from mrl_pg.cli import _adopt, _bench, _db, _delete, _demo, _index, _ingest, _search, _server, _tune
from mrl_pg.cli._app import cli

for _module in (_server, _db, _adopt, _ingest, _delete, _index, _search, _tune, _demo, _bench):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="mrl-pg")


__all__ = ["cli", "main"]
