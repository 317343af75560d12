"""Records to load into a table mrl_pg created: checked one at a time as they are read.

Every record is checked as it is read and carries the line it came from, so
a problem is reported as ``FILE:LINE: what is wrong`` before anything is
written. The file formats themselves are read by :mod:`mrl_pg.ingest.record_files`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mrl_pg.config import TableConfig
from mrl_pg.errors import IngestError, InvalidVectorError
from mrl_pg.ingest.record_files import (
    FORMATS,
    count_records,
    detect_format,
    file_rows,
    repeated_name,
)
from mrl_pg.vectors import FloatArray, as_embedding

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

_ALLOWED = ", ".join(FIELDS)

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
    return _checked(file_rows(path, kind, _check_names), config, path, kind != "jsonl")


def _checked(
    rows: Generator[tuple[int, Any], None, None], config: TableConfig, path: str | Path,
    text_columns: bool,
) -> Generator[Record, None, None]:
    with closing(rows):
        for line, fields in rows:
            yield parse_record(fields, config, path=path, line=line, text_columns=text_columns)


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


def _check_names(names: list[str], kind: str) -> str | None:
    where = " in the header" if kind == "csv" else ""
    for name in names:
        if name not in FIELDS:
            return f"unknown column {name!r}{where}; allowed columns: {_ALLOWED}"
    repeated = repeated_name(names)
    if repeated is not None:
        return f"column {repeated!r} appears twice in the header"
    if "external_id" not in names:
        return ("the header has no external_id column" if kind == "csv"
                else "the file has no external_id column")
    return None
