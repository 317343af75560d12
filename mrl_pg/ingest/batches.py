"""Batches of checked records, and the spool that parks embedded batches until the write."""

from __future__ import annotations

import copy
import pickle
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, Generic, Protocol, TypeVar

import numpy as np

from mrl_pg.errors import MrlPgError
from mrl_pg.vectors import FloatArray

# Embedded batches wait in memory up to this size, then in a temporary file.
_SPOOL_MEMORY_BYTES = 64 * 1024 * 1024


class Embedded(Protocol):
    """What every kind of batch has: its embeddings (None until filled), a name, its lines."""

    embeddings: list[FloatArray | None]
    span: str
    lines: list[int]


@dataclass
class _Batch:
    """Rows for a table mrl_pg created."""

    external_ids: list[str]
    contents: list[str | None]
    metadatas: list[dict[str, Any]]
    embeddings: list[FloatArray | None]
    span: str
    lines: list[int]


B = TypeVar("B", bound=Embedded)


class _Spool(Generic[B]):
    """Embedded batches parked until the write: in memory while small, then on disk."""

    def __init__(self) -> None:
        self._file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY_BYTES)
        self._count = 0

    def __enter__(self) -> _Spool[B]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._file.close()

    def append(self, batch: B) -> None:
        # One matrix pickles far smaller and faster than a list of row arrays.
        matrix = np.stack([_filled(e) for e in batch.embeddings])
        rest = copy.copy(batch)
        rest.embeddings = []
        with _spool_errors(batch.span):
            # Our own data, read back by this process only, so pickle is safe here.
            pickle.dump((rest, matrix), self._file, protocol=pickle.HIGHEST_PROTOCOL)
        self._count += 1

    def __iter__(self) -> Iterator[B]:
        self._file.seek(0)
        for _ in range(self._count):
            with _spool_errors("embedded batches"):
                batch, matrix = pickle.load(self._file)  # noqa: S301
            batch.embeddings = list(matrix)
            yield batch


@contextmanager
def _spool_errors(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise MrlPgError(
            f"could not keep {what} in a temporary file under {tempfile.gettempdir()} "
            f"(set TMPDIR to a roomier place): {exc}"
        ) from exc


def _filled(embedding: FloatArray | None) -> FloatArray:
    if embedding is None:
        raise MrlPgError("internal error: a batch was spooled before it was embedded")
    return embedding
