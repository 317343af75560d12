"""Reading records to load from JSONL, CSV and Parquet files, one at a time.

Every record is checked as it is read and carries the line it came from, so
a problem is reported as ``FILE:LINE: what is wrong`` before anything is
written. Files are streamed: memory use does not grow with the file.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import TableConfig
from .errors import IngestError, InvalidVectorError
from .vectors import FloatArray, as_embedding

__all__ = [
    "FIELDS",
    "FORMATS",
    "Record",
    "check_columns",
    "count_records",
    "detect_format",
    "parse_record",
    "read_records",
]

FIELDS = ("external_id", "content", "metadata", "embedding")
"""The fields a record may have; only ``external_id`` is required."""

FORMATS = ("jsonl", "csv", "parquet")

_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
_ALIASES = {"ndjson": "jsonl"}
_ALLOWED = ", ".join(FIELDS)
# An embedding of 16,000 dimensions written as JSON text is ~350 kB, beyond
# the csv module's default limit of 128 kB per field.
_CSV_FIELD_LIMIT = 64 * 1024 * 1024
_PARQUET_BATCH_ROWS = 1024

_Fail = Callable[[str], IngestError]


@dataclass(frozen=True, eq=False)
class Record:
    """One row to load. ``embedding`` None means: embed ``content``.

    ``line`` is where the record came from (file line or Parquet row, from 1),
    used in error messages.
    """

    external_id: str
    content: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    embedding: FloatArray | None = None
    line: int | None = None


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


def read_records(
    path: str | Path, config: TableConfig, *, format: str | None = None
) -> Generator[Record, None, None]:
    """Yield the file's records one by one, each checked against ``config``'s dimensions.

    JSONL has one JSON object per line (blank lines are skipped); CSV has a
    header row and JSON text in the ``metadata`` and ``embedding`` columns;
    Parquet needs pyarrow. Raises :class:`~mrl_pg.errors.IngestError` naming
    the file and line of the first bad record. Repeated external ids are
    caught by :func:`mrl_pg.ingest.ingest_records`, which sees the whole load.
    """
    kind = detect_format(path, format)
    if kind == "jsonl":
        return _read_jsonl(path, config)
    if kind == "csv":
        return _read_csv(path, config)
    return _read_parquet(path, config)


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


def parse_record(
    fields: Mapping[str, Any],
    config: TableConfig,
    *,
    path: str | Path | None = None,
    line: int | None = None,
    text_columns: bool = False,
) -> Record:
    """Check one record's fields and turn them into a :class:`Record`.

    ``text_columns`` is for CSV and Parquet, where ``metadata`` and
    ``embedding`` may be JSON text and an empty cell means absent.
    """

    def fail(message: str) -> IngestError:
        return IngestError(message, path=path, line=line)

    if not isinstance(fields, Mapping):
        raise fail(f"expected a JSON object, got {_json_type(fields)}")
    unknown = [name for name in fields if name not in FIELDS]
    if unknown:
        raise fail(f"unknown field {unknown[0]!r}; allowed fields: {_ALLOWED}")

    external_id = fields.get("external_id")
    if isinstance(external_id, int) and not isinstance(external_id, bool):
        external_id = str(external_id)
    if external_id is None or external_id == "":
        raise fail("external_id is missing; every record needs a non-empty external_id")
    if not isinstance(external_id, str):
        raise fail(f"external_id must be a string, got {_json_type(external_id)}")
    if not external_id.strip():
        raise fail("external_id is blank; every record needs a non-empty external_id")
    _check_text(external_id, "external_id", fail)

    content = fields.get("content")
    if text_columns and content == "":
        content = None
    if content is not None:
        if not isinstance(content, str):
            raise fail(f"content must be a string, got {_json_type(content)}")
        _check_text(content, "content", fail)

    metadata = _metadata(fields.get("metadata"), text_columns, fail)
    embedding = _embedding(fields.get("embedding"), config, text_columns, fail)
    if embedding is None and (content is None or not content.strip()):
        raise fail("no embedding, and no content to compute one from")
    return Record(external_id, content, metadata, embedding, line)


def check_columns(
    ids: list[Any], texts: list[Any], metas: list[Any]
) -> list[dict[str, Any]]:
    """Check whole columns of ids, contents and metadata; returns the metadata as dicts.

    For :func:`mrl_pg.ingest.ingest_arrays`. Whole-list checks come first, since a
    Python loop over every row costs as much as the COPY; only when one fails are
    the rows checked one by one, so the error names the row (from 0).
    """

    def fail_at(row: int) -> Callable[[str], IngestError]:
        return lambda message: IngestError(f"row {row}: {message}")

    if not all(type(i) is str and i.strip() for i in ids):
        row = next(r for r, i in enumerate(ids) if not (type(i) is str and i.strip()))
        raise IngestError(
            f"row {row}: external_id must be a non-empty string, got {_show(ids[row])}"
        )
    if len(set(ids)) != len(ids):
        seen: dict[str, int] = {}
        for row, external_id in enumerate(ids):
            first = seen.setdefault(external_id, row)
            if first != row:
                raise IngestError(f"row {row}: duplicate external_id {_show(external_id)}, "
                                  f"already in row {first}")
    present = [t for t in texts if t is not None]
    if not all(type(t) is str for t in present):
        row = next(r for r, t in enumerate(texts) if t is not None and not isinstance(t, str))
        raise IngestError(f"row {row}: content must be a string, got {_show(texts[row])}")
    for name, values in (("external_id", ids), ("content", texts)):
        if not _clean_text("".join(v for v in values if v is not None)):
            for row, value in enumerate(values):
                if value is not None:
                    _check_text(value, name, fail_at(row))
    dicts = [{} if m is None else m if type(m) is dict else
             dict(m) if isinstance(m, Mapping) else m for m in metas]
    try:
        text = json.dumps(dicts, allow_nan=False, ensure_ascii=False)
        clean = all(type(m) is dict for m in dicts) and _clean_text(text.replace("\\\\", ""))
    except (TypeError, ValueError):
        clean = False
    if not clean:
        for row, value in enumerate(dicts):
            _metadata(value, False, fail_at(row))
    return dicts


def _clean_text(text: str) -> bool:
    """No NUL character (escaped or not) and valid UTF-8."""
    if "\x00" in text or "\\u0000" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _metadata(value: Any, text_columns: bool, fail: _Fail) -> dict[str, Any]:
    if text_columns and isinstance(value, str):
        if not value.strip():
            return {}
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise fail(f"metadata is not valid JSON: {_json_problem(exc)}") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(f"metadata must be a JSON object, got {_json_type(value)}")
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except ValueError:
        raise fail("metadata contains NaN or Infinity, which JSON does not allow") from None
    except TypeError as exc:
        raise fail(f"metadata cannot be stored as JSON: {exc}") from None
    # jsonb rejects the NUL character, and UTF-8 cannot carry lone surrogates.
    # Escaped backslashes go first, so a literal backslash-u0000 is no false alarm.
    if "\\u0000" in text.replace("\\\\", ""):
        raise fail("metadata contains a NUL character (\\u0000), which jsonb cannot store")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise fail("metadata contains an unpaired surrogate, which is not valid UTF-8") from None
    return value


def _embedding(
    value: Any, config: TableConfig, text_columns: bool, fail: _Fail
) -> FloatArray | None:
    if text_columns and isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise fail(f"embedding is not valid JSON: {_json_problem(exc)}") from None
    if value is None:
        return None
    if isinstance(value, (str, bytes, dict, bool, int, float)):
        raise fail(f"embedding must be an array of numbers, got {_json_type(value)}")
    try:
        array = np.asarray(value)
    except ValueError:
        raise fail("embedding must be a flat array of numbers") from None
    # Refuse strings and nulls inside the array (numpy would turn "1.5" into 1.5).
    if array.dtype.kind not in "fiu":
        raise fail("embedding must be an array of numbers only")
    try:
        return as_embedding(array, config.full_dim, prefix_dim=config.prefix_dim)
    except InvalidVectorError as exc:
        raise fail(str(exc)) from None


def _check_text(value: str, name: str, fail: _Fail) -> None:
    if "\x00" in value:
        raise fail(f"{name} contains a NUL character, which PostgreSQL text cannot store")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise fail(f"{name} contains an unpaired surrogate, which is not valid UTF-8") from None


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


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


def _read_jsonl(path: str | Path, config: TableConfig) -> Generator[Record, None, None]:
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
            yield parse_record(fields, config, path=path, line=number)


def _raise_csv_field_limit() -> None:
    # A process-wide setting; only ever raised, never lowered.
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)


def _read_csv(path: str | Path, config: TableConfig) -> Generator[Record, None, None]:
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
                header, header_line = _csv_header(row, path, start), start
                continue
            if len(row) != len(header):
                raise IngestError(
                    f"{len(row)} fields, but the header on line {header_line} has {len(header)}",
                    path=path,
                    line=start,
                )
            fields = dict(zip(header, row, strict=True))
            yield parse_record(fields, config, path=path, line=start, text_columns=True)
        if header is None:
            raise IngestError("the CSV file is empty: expected a header row", path=path)


def _csv_header(row: list[str], path: str | Path, line: int) -> list[str]:
    names = [name.strip() for name in row]
    for name in names:
        if name not in FIELDS:
            raise IngestError(
                f"unknown column {name!r} in the header; allowed columns: {_ALLOWED}",
                path=path,
                line=line,
            )
    repeated = [name for name in FIELDS if names.count(name) > 1]
    if repeated:
        raise IngestError(
            f"column {repeated[0]!r} appears twice in the header", path=path, line=line
        )
    if "external_id" not in names:
        raise IngestError("the header has no external_id column", path=path, line=line)
    return names


def _import_parquet(path: str | Path) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise IngestError(
            "reading Parquet files needs pyarrow: pip install pyarrow", path=path
        ) from None
    return pq


def _read_parquet(path: str | Path, config: TableConfig) -> Generator[Record, None, None]:
    pq = _import_parquet(path)
    try:
        parquet = pq.ParquetFile(path)
    except FileNotFoundError as exc:
        raise IngestError(f"cannot read file: {exc.strerror or exc}", path=path) from exc
    except (OSError, ValueError) as exc:
        raise IngestError(f"cannot read Parquet file: {exc}", path=path) from exc
    with parquet:
        names = list(parquet.schema_arrow.names)
        for name in names:
            if name not in FIELDS:
                raise IngestError(
                    f"unknown column {name!r}; allowed columns: {_ALLOWED}", path=path
                )
        if "external_id" not in names:
            raise IngestError("the file has no external_id column", path=path)
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
            for fields in _parquet_rows(batch):
                number += 1
                yield parse_record(fields, config, path=path, line=number, text_columns=True)


def _parquet_rows(batch: Any) -> Iterator[dict[str, Any]]:
    """A record batch's rows as dicts, embeddings as numpy rows when the column allows."""
    names = list(batch.schema.names)
    embeddings = _parquet_embeddings(batch.column("embedding")) if "embedding" in names else None
    columns = {
        name: batch.column(name).to_pylist()
        for name in names
        if not (name == "embedding" and embeddings is not None)
    }
    for i in range(batch.num_rows):
        fields = {name: values[i] for name, values in columns.items()}
        if embeddings is not None:
            fields["embedding"] = embeddings[i]
        yield fields


def _parquet_embeddings(column: Any) -> Any:
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
