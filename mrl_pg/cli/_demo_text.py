"""``mrl-pg demo --text``: rendering of the text demo."""

from __future__ import annotations

import click

from mrl_pg.db import connect
from mrl_pg.demo.text import run_text_demo as run
from mrl_pg.embeddings import DEFAULT_DIMENSIONS, DEFAULT_MODEL, EmbeddingClient
from mrl_pg.migrate import upgrade


def run_text_demo(dsn: str, *, model: str | None, dimensions: int | None, k: int) -> None:
    """Embed the shipped corpus, load it, and print the best passages for each question."""
    client = EmbeddingClient(model=model or DEFAULT_MODEL,
                             dimensions=dimensions or DEFAULT_DIMENSIONS)
    click.echo(f"embedding the shipped corpus with {client.model} at {client.base_url}", err=True)
    upgrade(dsn)  # the vector extension and mrl_pg's schema
    with connect(dsn, autocommit=True) as conn:
        report = run(conn, client, k=k)
    click.echo(f"loaded {report.load.rows_read} passages into {report.config.name} "
               f"(vector({report.config.full_dim}), halfvec({report.config.prefix_dim}) prefix)")
    for question, results in report.answers:
        click.echo(f"\nQ: {question}")
        for r in results:
            topic = r.metadata.get("topic", "")
            click.echo(f"  {r.distance:.3f}  [{topic}] {r.content}")
