"""``mrl-pg search``: one query from the command line, as a table or JSON."""

from __future__ import annotations

import datetime
import decimal
import json
import uuid
from pathlib import Path
from typing import Any

import click

from mrl_pg.cli._app import TableChoice, dsn_option, table_options
from mrl_pg.config import TableConfig
from mrl_pg.db import connect
from mrl_pg.errors import InvalidSearchError
from mrl_pg.psycopg._search import SearchResult, exact_search, search
from mrl_pg.vectors import load_npy


def _load_vector(path: Path) -> Any:
    vector = load_npy(path, "query vector file")
    if vector.ndim == 2 and vector.shape[0] == 1:
        vector = vector[0]
    return vector


def _json_object(text: str | None, option: str, example: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidSearchError(f"{option} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidSearchError(f"{option} must be a JSON object such as {example}, got {text}")
    return value


def _parse_filter(text: str | None) -> dict[str, Any] | None:
    return _json_object(text, "--filter", '{"lang": "en"}')


def _parse_where(text: str | None) -> dict[str, Any] | None:
    return _json_object(text, "--where", '{"author_id": 7}')


def _shorten(text: str | None, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def json_safe(value: Any) -> Any:
    """A column value as JSON can carry it: timestamps, uuids, decimals and the like as text."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, decimal.Decimal)):
        return str(value)
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).hex()
    return str(value)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in [header, *rows])


def render_table(results: list[SearchResult], config: TableConfig | None = None) -> str:
    """Rank, distance and the row: external id, content and metadata for a table mrl_pg
    created; every returned column for an adopted one. Text is shortened to fit; values
    that mean nothing cut (uuids, numbers, timestamps) are shown whole, as PostgreSQL
    prints them."""
    if not results:
        return "no results"
    if config is None or not config.adopted:
        return _table(("#", "distance", "external_id", "content", "metadata"), [
            (str(i), f"{r.distance:.4f}", r.external_id or "", _shorten(r.content, 60),
             _shorten(json.dumps(r.metadata, ensure_ascii=False), 40))
            for i, r in enumerate(results, 1)])
    shown = config.returned_columns
    return _table(("#", "distance", *shown), [
        (str(i), f"{r.distance:.4f}", *(_cell(r.row.get(c)) for c in shown))
        for i, r in enumerate(results, 1)])


def _cell(value: Any) -> str:
    """A value in the table view: text shortened to 60 characters, JSON (objects, arrays)
    to 40, anything else (uuid, number, date, timestamp) whole and without quotes."""
    if value is None:
        return ""
    if isinstance(value, str):
        return _shorten(value, 60)
    safe = json_safe(value)
    if isinstance(safe, (dict, list)):
        return _shorten(json.dumps(safe, ensure_ascii=False), 40)
    return str(safe) if not isinstance(safe, bool) else str(safe).lower()


@click.command(name="search")
@click.argument("text", required=False)
@click.option("--vector", "vector_file", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="Query vector from a .npy file instead of text.")
@click.option("-k", type=int, default=10, show_default=True, help="Results to return.")
@click.option("--offset", type=int, default=0, show_default=True,
              help="Skip the best OFFSET rows: --offset 10 -k 10 is rows 11-20 (page 2).")
@click.option("--oversample", type=int, default=None,
              help="Candidates per result taken from the prefix index (default: what "
                   "`mrl-pg tune` saved for the table, else 8).")
@click.option("--filter", "filter_json", metavar="JSON",
              help='Metadata containment filter, e.g. \'{"lang": "en"}\'.')
@click.option("--where", "where_json", metavar="JSON",
              help='Conditions on the table\'s own columns, e.g. \'{"author_id": 7}\', '
                   '\'{"status": ["draft", "live"]}\', \'{"deleted_at": null}\' or '
                   '\'{"published": {"gte": "2024-01-01"}}\' (operators eq, ne, lt, lte, '
                   'gt, gte, in, not_in, is_null, contains; see docs/filters.md).')
@click.option("--tenant", default=None, metavar="VALUE",
              help="Only rows of this tenant (a table with a tenant column).")
@click.option("--exact", is_flag=True, help="Exact full-dimension search (no index).")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object per row: the table's columns and distance.")
@click.option("--model", default=None, help="Embedding model for TEXT.")
@table_options
@dsn_option
def search_command(text: str | None, vector_file: Path | None, k: int, offset: int,
                   oversample: int | None,
                   filter_json: str | None, where_json: str | None, tenant: str | None,
                   exact: bool, as_json: bool, model: str | None, table: TableChoice,
                   dsn: str | None) -> None:
    """Search by TEXT (embedded with the OpenAI SDK) or by --vector FILE.npy.

    Works on a table mrl_pg created and on one adopted with `mrl-pg adopt`;
    --where filters the table's own columns inside the index scan, so k
    matching rows come back whenever that many exist.
    """
    if (text is None) == (vector_file is None):
        raise click.UsageError("give either TEXT or --vector FILE.npy")
    flt = _parse_filter(filter_json)
    where = _parse_where(where_json)
    query = _load_vector(vector_file) if vector_file is not None else None
    with connect(dsn, autocommit=True) as conn:
        config = table.existing(conn)
        if query is None:
            from mrl_pg.embeddings import DEFAULT_MODEL, EmbeddingClient

            with EmbeddingClient(model=model or DEFAULT_MODEL,
                                 dimensions=config.full_dim) as client:
                query = client.embed_one(text or "")
        if exact:
            results = exact_search(conn, config, query, k=k, filter=flt, where=where,
                                   tenant=tenant, offset=offset)
        else:
            results = search(conn, config, query, k=k, oversample=oversample, filter=flt,
                             where=where, tenant=tenant, offset=offset)
    if as_json:
        for r in results:
            click.echo(json.dumps(json_safe(r.as_dict()), ensure_ascii=False))
    else:
        click.echo(render_table(results, config))


COMMANDS = [search_command]
