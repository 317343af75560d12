"""``mrl-pg server start|stop|status|url``: the embedded PostgreSQL."""

from __future__ import annotations

import click

from mrl_pg.server import EmbeddedServer


@click.group()
def server() -> None:
    """Manage the embedded PostgreSQL 18 + pgvector server (data in ./.mrl-pg or MRL_PG_HOME)."""


@server.command()
def start() -> None:
    """Start the server, or reuse it if it is running; print its DSN."""
    click.echo(EmbeddedServer().start())


@server.command()
def stop() -> None:
    """Stop the server; its data stays for the next start."""
    stopped = EmbeddedServer().stop()
    click.echo("stopped" if stopped else "not running", err=True)


@server.command()
def status() -> None:
    """Say whether the server runs, where its data is, and its DSN."""
    st = EmbeddedServer().status()
    if st.running:
        click.echo(f"running (pid {st.pid})\ndata: {st.pgdata}\ndsn:  {st.dsn}")
    else:
        click.echo(f"not running\ndata: {st.pgdata}")


@server.command()
def url() -> None:
    """Print the DSN of the running server alone on stdout (for $(mrl-pg server url))."""
    click.echo(EmbeddedServer().url())


COMMANDS = [server]
