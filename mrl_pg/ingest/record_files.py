"""File formats of a load: JSONL, CSV and Parquet rows as field dicts, with their lines.

Only the format is dealt with here: each row comes out as ``(line, fields)``,
and what the fields must be is the caller's (:mod:`mrl_pg.ingest.readers` for a
table mrl_pg created, :mod:`mrl_pg.ingest.adopted` for an adopted one).
Files are streamed: memory use does not grow with the file.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Generator, Iterable, Iterator
from pathlib import Path
from typing import Any

from mrl_pg.errors import IngestError

FORMATS = ("jsonl", "csv", "parquet")

_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
_ALIASES = {"ndjson": "jsonl"}
# An embedding of 16,000 dimensions written as JSON text is ~350 kB, beyond
# the csv module's default limit of 128 kB per field.
_CSV_FIELD_LIMIT = 64 * 1024 * 1024
_PARQUET_BATCH_ROWS = 1024

# Checks a CSV header's or a Parquet file's column names: an error message, or None.
# The second argument says which: "csv" or "parquet".
NameCheck = Callable[[list[str], str], "str | None"]


def detect_format(path: str | Path, format: str | None = None) -> str:
    """``"jsonl"``, ``"csv"`` or ``"parquet"``: ``format`` if given, else from the extension."""
    if format is not None:
        name = _ALIASES.get(format.lower(), format.lower())
        if name not in FORMATS:
            raise IngestError(
                f"unknown format {format!r}: use one of jsonl, ndjson, csv, parquet", path=path
            )
        return name
    suffix = Path(path).suffix.lower()
    try:
        return _EXTENSIONS[suffix]
    except KeyError:
        raise IngestError(
            f"cannot tell the format from the extension {suffix or '(none)'!r}: name the file "
            ".jsonl, .ndjson, .csv or .parquet, or give the format (jsonl, csv, parquet)",
            path=path,
        ) from None


def count_records(path: str | Path, *, format: str | None = None) -> int:
    """How many records the file holds, without checking them.

    Free for Parquet (the footer says); JSONL and CSV are read through once.
    """
    kind = detect_format(path, format)
    if kind == "parquet":
        pq = _import_parquet(path)
        try:
            return int(pq.ParquetFile(path).metadata.num_rows)
        except (OSError, ValueError) as exc:
            raise IngestError(f"cannot read Parquet file: {exc}", path=path) from exc
    try:
        with open(path, "rb") as file:
            if kind == "jsonl":
                return sum(1 for raw in file if raw.strip())
            _raise_csv_field_limit()
            rows = sum(1 for row in csv.reader(_decoded_lines(file, path)) if row)
            return max(rows - 1, 0)
    except OSError as exc:
        raise IngestError(f"cannot read file: {exc.strerror or exc}", path=path) from exc
    except csv.Error as exc:
        raise IngestError(f"invalid CSV: {exc}", path=path) from exc


def file_rows(
    path: str | Path, kind: str, check_names: NameCheck, *, vector_column: str = "embedding"
) -> Generator[tuple[int, Any], None, None]:
    """``(line, fields)`` for each row of a file of format ``kind`` (:func:`detect_format`).

    JSONL rows are whatever each line's JSON is (the caller checks it is an
    object); CSV and Parquet rows are dicts of their columns, whose names
    ``check_names`` approves before the first row. A Parquet list-of-floats
    ``vector_column`` comes as numpy rows.
    """
    if kind == "jsonl":
        return _jsonl_rows(path)
    if kind == "csv":
        return _csv_rows(path, check_names)
    return _parquet_rows(path, check_names, vector_column)


def repeated_name(names: list[str]) -> str | None:
    """The first name that appears twice, if any."""
    return next((name for i, name in enumerate(names) if name in names[:i]), None)


def _json_problem(exc: json.JSONDecodeError) -> str:
    return f"{exc.msg} at column {exc.colno}"


def _decoded_lines(file: Iterable[bytes], path: str | Path) -> Iterator[str]:
    """The file's lines as text, line endings kept (as ``newline=""`` would), BOM dropped."""
    for number, raw in enumerate(file, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise IngestError(
                f"not valid UTF-8 (byte {exc.start + 1} of the line)", path=path, line=number
            ) from None
        if number == 1 and text.startswith("\ufeff"):
            text = text[1:]
        yield text


def _open(path: str | Path) -> Any:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise IngestError(f"cannot read file: {exc.strerror or exc}", path=path) from exc


def _jsonl_rows(path: str | Path) -> Generator[tuple[int, Any], None, None]:
    with _open(path) as file:
        for number, text in enumerate(_decoded_lines(file, path), start=1):
            if not text.strip():
                continue
            try:
                fields = json.loads(text)
            except json.JSONDecodeError as exc:
                raise IngestError(
                    f"invalid JSON: {_json_problem(exc)}", path=path, line=number
                ) from None
            except RecursionError:
                raise IngestError(
                    "invalid JSON: nested too deeply", path=path, line=number
                ) from None
            yield number, fields


def _raise_csv_field_limit() -> None:
    # A process-wide setting; only ever raised, never lowered.
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)


def _csv_rows(
    path: str | Path, check_names: NameCheck
) -> Generator[tuple[int, Any], None, None]:
    _raise_csv_field_limit()
    with _open(path) as file:
        reader = csv.reader(_decoded_lines(file, path))
        header: list[str] | None = None
        header_line = 1
        consumed = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise IngestError(f"invalid CSV: {exc}", path=path, line=reader.line_num) from None
            # A quoted field may span lines: a record starts after the last one ended.
            start, consumed = consumed + 1, reader.line_num
            if not row:
                continue
            if header is None:
                header, header_line = [name.strip() for name in row], start
                problem = check_names(header, "csv")
                if problem is not None:
                    raise IngestError(problem, path=path, line=start)
                continue
            if len(row) != len(header):
                raise IngestError(
                    f"{len(row)} fields, but the header on line {header_line} has {len(header)}",
                    path=path,
                    line=start,
                )
            yield start, dict(zip(header, row, strict=True))
        if header is None:
            raise IngestError("the CSV file is empty: expected a header row", path=path)


def _import_parquet(path: str | Path) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise IngestError(
            "reading Parquet files needs pyarrow: pip install pyarrow", path=path
        ) from None
    return pq


def _parquet_rows(
    path: str | Path, check_names: NameCheck, vector_column: str
) -> Generator[tuple[int, Any], None, None]:
    pq = _import_parquet(path)
    try:
        parquet = pq.ParquetFile(path)
    except FileNotFoundError as exc:
        raise IngestError(f"cannot read file: {exc.strerror or exc}", path=path) from exc
    except (OSError, ValueError) as exc:
        raise IngestError(f"cannot read Parquet file: {exc}", path=path) from exc
    with parquet:
        problem = check_names(list(parquet.schema_arrow.names), "parquet")
        if problem is not None:
            raise IngestError(problem, path=path)
        batches = parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS)
        number = 0
        while True:
            try:
                batch = next(batches, None)
            except (OSError, ValueError) as exc:
                raise IngestError(
                    f"cannot read Parquet file: {exc}", path=path, line=number + 1
                ) from exc
            if batch is None:
                return
            for fields in _batch_rows(batch, vector_column):
                number += 1
                yield number, fields


def _batch_rows(batch: Any, vector_column: str) -> Iterator[dict[str, Any]]:
    """A record batch's rows as dicts, the vectors as numpy rows when the column allows."""
    names = list(batch.schema.names)
    vectors = (_float_rows(batch.column(vector_column)) if vector_column in names else None)
    columns = {
        name: batch.column(name).to_pylist()
        for name in names
        if not (name == vector_column and vectors is not None)
    }
    for i in range(batch.num_rows):
        fields = {name: values[i] for name, values in columns.items()}
        if vectors is not None:
            fields[vector_column] = vectors[i]
        yield fields


def _float_rows(column: Any) -> Any:
    """An ``(n, dim)`` array for a list-of-floats column with no nulls and one length, else None.

    Converting each row to a Python list costs more than the whole COPY; other
    columns take the slow path, whose errors name the row.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)
            or pa.types.is_fixed_size_list(kind)):
        return None
    if not pa.types.is_floating(kind.value_type) or column.null_count or len(column) == 0:
        return None
    values = column.flatten()
    lengths = pc.list_value_length(column)
    if values.null_count or pc.min(lengths).as_py() != pc.max(lengths).as_py():
        return None
    return values.to_numpy().reshape(len(column), -1)
