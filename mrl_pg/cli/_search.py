"""``mrl-pg search``: one query from the command line, as a table or JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..client import SearchResult, exact_search, search
from ..config import TableConfig
from ..db import connect
from ..errors import InvalidSearchError
from ..vectors import load_npy
from ._app import dsn_option, table_options


def _load_vector(path: Path) -> Any:
    vector = load_npy(path, "query vector file")
    if vector.ndim == 2 and vector.shape[0] == 1:
        vector = vector[0]
    return vector


def _parse_filter(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidSearchError(f"--filter is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidSearchError(
            f'--filter must be a JSON object such as {{"lang": "en"}}, got {text}'
        )
    return value


def _shorten(text: str | None, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def render_table(results: list[SearchResult]) -> str:
    """Rank, distance, external id, content and metadata, one row per result."""
    if not results:
        return "no results"
    header = ("#", "distance", "external_id", "content", "metadata")
    rows = [
        (str(i), f"{r.distance:.4f}", r.external_id or "", _shorten(r.content, 60),
         _shorten(json.dumps(r.metadata, ensure_ascii=False), 40))
        for i, r in enumerate(results, 1)
    ]
    widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    return "\n".join(lines)


@click.command(name="search")
@click.argument("text", required=False)
@click.option("--vector", "vector_file", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="Query vector from a .npy file instead of text.")
@click.option("-k", type=int, default=10, show_default=True, help="Results to return.")
@click.option("--oversample", type=int, default=None,
              help="Candidates per result taken from the prefix index (default: what "
                   "`mrl-pg tune` saved for the table, else 8).")
@click.option("--filter", "filter_json", metavar="JSON",
              help='Metadata containment filter, e.g. \'{"lang": "en"}\'.')
@click.option("--exact", is_flag=True, help="Exact full-dimension search (no index).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@click.option("--model", default=None, help="Embedding model for TEXT.")
@table_options
@dsn_option
def search_command(text: str | None, vector_file: Path | None, k: int, oversample: int | None,
                   filter_json: str | None, exact: bool, as_json: bool, model: str | None,
                   config: TableConfig, dsn: str | None) -> None:
    """Search by TEXT (embedded with the OpenAI SDK) or by --vector FILE.npy."""
    if (text is None) == (vector_file is None):
        raise click.UsageError("give either TEXT or --vector FILE.npy")
    flt = _parse_filter(filter_json)
    if vector_file is not None:
        query = _load_vector(vector_file)
    else:
        from ..embeddings import DEFAULT_MODEL, EmbeddingClient

        client = EmbeddingClient(model=model or DEFAULT_MODEL, dimensions=config.full_dim)
        query = client.embed_one(text or "")
    with connect(dsn, autocommit=True) as conn:
        if exact:
            results = exact_search(conn, config, query, k=k, filter=flt)
        else:
            results = search(conn, config, query, k=k, oversample=oversample, filter=flt)
    if as_json:
        for r in results:
            click.echo(json.dumps({"id": r.id, "external_id": r.external_id,
                                   "content": r.content, "metadata": r.metadata,
                                   "distance": r.distance}, ensure_ascii=False))
    else:
        click.echo(render_table(results))


COMMANDS = [search_command]
