"""Loading an adopted table: records of the table's own columns, upserted on its key.

A record is a mapping from column names to values (JSONL objects, CSV or
Parquet columns). The embedding column holds the vector; left out, it is
computed from ``text_column``. Values are checked for their shape here
(an object only for json columns, a list only for arrays) and parsed by
PostgreSQL into each column's own type, so a timestamp, a uuid or a numeric
can be given as text. The transaction rules are those of every ingest
(:mod:`mrl_pg.ingest.run`); the SQL is in :mod:`mrl_pg.ingest.adopted_writer`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from mrl_pg.config import TableConfig
from mrl_pg.embeddings import Embedder
from mrl_pg.errors import IngestError, InvalidConfigError
from mrl_pg.ingest.adopted_writer import RowBatch, TableWriter
from mrl_pg.ingest.readers import _check_text, _embedding, _json_type, _show
from mrl_pg.ingest.record_files import detect_format, file_rows, repeated_name
from mrl_pg.ingest.run import (
    IngestReport,
    ProgressCallback,
    check_batch_size,
    check_tenant,
    embed_missing,
    reading,
    run_load,
)
from mrl_pg.vectors import FloatArray

_JSON_TYPES = ("json", "jsonb")
_TEXT_TYPES = ("text", "varchar", "bpchar", "citext", "name")


@dataclass(frozen=True)
class _Rules:
    """What a record of one table may hold, and where its embedding comes from."""

    config: TableConfig
    text_column: str | None
    tenant: str | None

    @property
    def writable(self) -> dict[str, str]:
        """Column name to type name: every column but vectors, and the embedding."""
        types = {name: entry[2] for name, entry in self.config.filterable_columns.items()}
        return {**types, self.config.embedding_column: self.config.embedding_type}

    def unknown(self, names: Iterable[str]) -> str | None:
        unknown = [name for name in names if name not in self.writable]
        if not unknown:
            return None
        plural = "s" if len(unknown) > 1 else ""
        return (f"unknown column{plural} {', '.join(map(repr, unknown))}: "
                f"{self.config.qualified_name} has {', '.join(self.writable)}")


def check_text_column(config: TableConfig, text_column: str | None) -> None:
    """``text_column`` must be a text column of the table (not the key or the embedding)."""
    if text_column is None:
        return
    entry = config.filterable_columns.get(text_column)
    if entry is None or entry[2] not in _TEXT_TYPES:
        kind = "no column" if entry is None else f"column {entry[2]}"
        raise InvalidConfigError(
            f"text column {text_column!r}: table {config.qualified_name} has {kind} of that "
            "name; name a text column to compute embeddings from")


def ingest_table_file(
    conn: psycopg.Connection[Any],
    config: TableConfig,
    path: str | Path,
    *,
    format: str | None,
    batch_size: int,
    embedder: Embedder | None,
    commit_each_batch: bool,
    reuse_embeddings: bool,
    on_progress: ProgressCallback | None,
    tenant: str | None,
    text_column: str | None,
) -> IngestReport:
    """:func:`mrl_pg.ingest_file` into an adopted table."""
    rules = _rules(config, tenant, text_column)
    kind = detect_format(path, format)

    def check_names(names: list[str], kind: str) -> str | None:
        problem = rules.unknown(names)
        if problem is None and (repeated := repeated_name(names)) is not None:
            problem = f"column {repeated!r} appears twice"
        return problem if problem is None or kind != "csv" else f"the header: {problem}"

    rows = file_rows(path, kind, check_names, vector_column=config.embedding_column)
    with closing(rows):
        return _load(conn, rules, rows, source=path, text_cells=kind != "jsonl",
                     batch_size=batch_size, embedder=embedder,
                     commit_each_batch=commit_each_batch, reuse_embeddings=reuse_embeddings,
                     on_progress=on_progress)


def ingest_table_records(
    conn: psycopg.Connection[Any],
    config: TableConfig,
    records: Iterable[Mapping[str, Any] | Any],
    *,
    batch_size: int,
    embedder: Embedder | None,
    commit_each_batch: bool,
    reuse_embeddings: bool,
    on_progress: ProgressCallback | None,
    source: str | Path | None,
    tenant: str | None,
    text_column: str | None,
) -> IngestReport:
    """:func:`mrl_pg.ingest_records` into an adopted table."""
    rules = _rules(config, tenant, text_column)
    return _load(conn, rules, enumerate(records, start=1), source=source, text_cells=False,
                 batch_size=batch_size, embedder=embedder, commit_each_batch=commit_each_batch,
                 reuse_embeddings=reuse_embeddings, on_progress=on_progress)


def _rules(config: TableConfig, tenant: str | None, text_column: str | None) -> _Rules:
    check_text_column(config, text_column)
    return _Rules(config, text_column, check_tenant(config, tenant))


def _load(
    conn: psycopg.Connection[Any],
    rules: _Rules,
    rows: Iterable[tuple[int, Any]],
    *,
    source: str | Path | None,
    text_cells: bool,
    batch_size: int,
    embedder: Embedder | None,
    commit_each_batch: bool,
    reuse_embeddings: bool,
    on_progress: ProgressCallback | None,
) -> IngestReport:
    check_batch_size(batch_size)
    config = rules.config
    batches = _batches(rows, rules, source=source, text_cells=text_cells, batch_size=batch_size)
    fill = partial(_fill_embeddings, conn, rules, embedder=embedder, source=source)
    return run_load(conn, config, batches, writer=TableWriter(conn, config, source=source),
                    fill=fill, source=source, embedder=embedder,
                    reuse_embeddings=reuse_embeddings and rules.text_column is not None,
                    commit_each_batch=commit_each_batch, on_progress=on_progress)


def _batches(
    rows: Iterable[tuple[int, Any]],
    rules: _Rules,
    *,
    source: str | Path | None,
    text_cells: bool,
    batch_size: int,
) -> Iterator[RowBatch]:
    key = rules.config.upsert_key
    seen: dict[tuple[str, ...], int] = {}
    batch = RowBatch([], [], [], "", [])
    for line, fields in rows:
        row, embedding, text = _check(fields, rules, source=source, line=line,
                                      text_cells=text_cells)
        if all(k in row and row[k] is not None for k in key):
            values = tuple(str(row[k]) for k in key)
            first = seen.setdefault(values, line)
            if first != line:
                also = f"line {first}" if source else f"record {first}"
                raise IngestError(
                    f"duplicate key ({', '.join(key)})=({', '.join(values)}), also on {also}",
                    path=source, line=line)
        batch.rows.append(row)
        batch.embeddings.append(embedding)
        batch.texts.append(text)
        batch.lines.append(line)
        if len(batch.lines) == batch_size:
            yield _named(batch, source)
            batch = RowBatch([], [], [], "", [])
    if batch.lines:
        yield _named(batch, source)


def _named(batch: RowBatch, source: str | Path | None) -> RowBatch:
    unit = "lines" if source else "records"
    batch.span = f"{f'{source} ' if source else ''}{unit} {batch.lines[0]}-{batch.lines[-1]}"
    return batch


def _check(
    fields: Any, rules: _Rules, *, source: str | Path | None, line: int, text_cells: bool
) -> tuple[dict[str, Any], FloatArray | None, str | None]:
    """One record as (column values for COPY, embedding or None, text to embed or None)."""

    def fail(message: str) -> IngestError:
        return IngestError(message, path=source, line=line)

    config = rules.config
    if not isinstance(fields, Mapping):
        raise fail(f"expected a JSON object, got {_json_type(fields)}")
    problem = rules.unknown(fields)
    if problem is not None:
        raise fail(problem)
    types = rules.writable
    row: dict[str, Any] = {}
    embedding = None
    for name, value in fields.items():
        if text_cells and isinstance(value, str) and not value:
            continue  # an empty cell is absent: a new row gets the column's default
        if name == config.embedding_column:
            embedding = _embedding(value, config, text_cells, fail)
        else:
            row[name] = _value(name, types[name], value, text_cells, fail)
    tenant_column = config.tenant_column
    if tenant_column is not None:
        given = row.get(tenant_column)
        if given is None:
            row[tenant_column] = rules.tenant
        elif str(given) != rules.tenant:
            raise fail(f"{tenant_column} is {_show(given)}, but this load is for tenant "
                       f"{_show(rules.tenant)}")
    text = None
    if embedding is None:
        text = row.get(rules.text_column) if rules.text_column else None
        if not isinstance(text, str) or not text.strip():
            source_of = (f"no {rules.text_column} text" if rules.text_column
                         else "no text column named to compute one from (--text-column)")
            raise fail(f"no {config.embedding_column} embedding, and {source_of}")
    return row, embedding, text


def _value(name: str, type_name: str, value: Any, text_cells: bool, fail: Any) -> Any:
    if value is None:
        return None
    if type_name in _JSON_TYPES:
        if text_cells and isinstance(value, str):
            try:
                json.loads(value)
            except json.JSONDecodeError as exc:
                raise fail(f"{name} is not valid JSON: {exc.msg} at column {exc.colno}") from None
            return value
        try:
            text = json.dumps(value, allow_nan=False, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise fail(f"{name} cannot be stored as JSON: {exc}") from None
        if "\\u0000" in text.replace("\\\\", "") and type_name == "jsonb":
            raise fail(f"{name} contains a NUL character (\\u0000), which jsonb cannot store")
        return text
    if isinstance(value, (list, tuple)):
        if not type_name.startswith("_"):
            raise fail(f"{name} is a {type_name} column, got an array")
        for item in value:
            _value(name, type_name[1:], item, False, fail)
        return list(value)
    if isinstance(value, Mapping):
        raise fail(f"{name} is a {type_name} column, got an object")
    if isinstance(value, np.ndarray):
        raise fail(f"{name} is a {type_name} column, got an array")
    if isinstance(value, str):
        _check_text(value, name, fail)
    return value


def _fill_embeddings(
    conn: psycopg.Connection[Any],
    rules: _Rules,
    batch: RowBatch,
    reuse: bool,
    *,
    embedder: Embedder | None,
    source: str | Path | None,
) -> None:
    missing = [i for i, e in enumerate(batch.embeddings) if e is None]
    if not missing:
        return
    if reuse:
        with reading(conn):
            stored = _stored_embeddings(conn, rules, batch, missing)
        for i, vector in stored.items():
            batch.embeddings[i] = vector
        missing = [i for i in missing if batch.embeddings[i] is None]
    embed_missing(batch, missing, [batch.texts[i] or "" for i in missing], embedder, rules.config,
                  source=source, what=f"{rules.text_column} column")


def _stored_embeddings(
    conn: psycopg.Connection[Any], rules: _Rules, batch: RowBatch, missing: list[int]
) -> dict[int, FloatArray]:
    """Stored embeddings of rows whose key (and tenant) and text are the record's own."""
    config = rules.config
    if rules.text_column is None:  # only rows embedded from a text column get here
        return {}
    match = [*config.upsert_key, rules.text_column]
    if config.tenant_column is not None and config.tenant_column not in match:
        match.append(config.tenant_column)
    wanted = [(i, {c: batch.rows[i][c] for c in match}) for i in missing
              if all(batch.rows[i].get(c) is not None for c in match)]
    if not wanted:
        return {}
    # The record's values are cast to the columns' types by jsonb_populate_record.
    query = sql.SQL(
        "SELECT e.n, t.{embedding} FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY "
        "AS e(doc, n) CROSS JOIN LATERAL jsonb_populate_record(NULL::{table}, e.doc) AS s "
        "JOIN {table} AS t ON {match}"
    ).format(embedding=sql.Identifier(config.embedding_column), table=config.table,
             match=sql.SQL(" AND ").join(
                 sql.SQL("t.{c} = s.{c}").format(c=sql.Identifier(c)) for c in match))
    documents = json.dumps([doc for _, doc in wanted], default=str)
    with conn.cursor(binary=True, row_factory=tuple_row) as cur:
        found = cur.execute(query, (documents,)).fetchall()
    return {wanted[int(n) - 1][0]: np.asarray(vector.to_numpy(), dtype=np.float32)
            for n, vector in found}
