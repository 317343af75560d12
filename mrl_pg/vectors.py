"""Checking vectors and deriving Matryoshka prefixes with numpy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from mrl_pg.errors import DimensionMismatchError, InvalidVectorError

__all__ = ["truncate_and_normalize", "as_embedding", "as_embedding_matrix", "load_npy"]

FloatArray = npt.NDArray[np.float32]


def truncate_and_normalize(vectors: npt.ArrayLike, dim: int) -> FloatArray:
    """Keep the first ``dim`` dimensions and rescale each row to unit length.

    This is how a Matryoshka prefix becomes an embedding of its own. Accepts
    one vector or a 2-D batch and returns float32 of the same rank. A row whose
    prefix is all zeros has no direction: it raises ``InvalidVectorError``
    rather than returning NaN.

    >>> truncate_and_normalize([3.0, 4.0, 12.0], 2).tolist()
    [0.6000000238418579, 0.800000011920929]
    """
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim not in (1, 2):
        raise InvalidVectorError(f"expected a vector or a 2-D batch, got shape {array.shape}")
    if dim < 1 or dim > array.shape[-1]:
        raise DimensionMismatchError(
            f"cannot truncate {array.shape[-1]}-dimensional vectors to {dim} dimensions",
            expected=dim,
            actual=array.shape[-1],
        )
    prefix = array[..., :dim]
    if not np.isfinite(prefix).all():
        raise InvalidVectorError("vector contains NaN or infinity")
    norms = np.linalg.norm(prefix.astype(np.float64), axis=-1, keepdims=True)
    zero = (norms == 0).reshape(-1)
    if zero.any():
        row = int(np.flatnonzero(zero)[0])
        where = f"row {row}: " if array.ndim == 2 else ""
        raise InvalidVectorError(f"{where}the first {dim} dimensions are all zero")
    normalized: FloatArray = (prefix / norms).astype(np.float32)
    return normalized


def as_embedding(
    vector: Any, dim: int, *, prefix_dim: int | None = None, what: str = "embedding"
) -> FloatArray:
    """Check one vector for a table: right length, finite, non-zero, and its prefix non-zero.

    Catching these here gives a message naming the problem instead of a
    constraint violation from the server.
    """
    if vector is None:
        raise InvalidVectorError(f"{what} is missing")
    try:
        array = np.asarray(_to_list(vector), dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidVectorError(f"{what} is not a list of numbers: {exc}") from exc
    if array.ndim != 1:
        raise InvalidVectorError(f"{what} must be a flat list of numbers, got shape {array.shape}")
    if array.shape[0] != dim:
        raise DimensionMismatchError(
            f"{what} has {array.shape[0]} dimensions, expected {dim}",
            expected=dim,
            actual=array.shape[0],
        )
    _check_finite_nonzero(array, what)
    if prefix_dim is not None and not array[:prefix_dim].any():
        raise InvalidVectorError(
            f"{what}: the first {prefix_dim} dimensions are all zero, "
            "so its prefix has no direction"
        )
    return array


def as_embedding_matrix(vectors: npt.ArrayLike, dim: int, prefix_dim: int) -> FloatArray:
    """Check a batch of vectors at once: shape ``(n, dim)``, finite, non-zero full and prefix."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2:
        raise InvalidVectorError(f"expected a 2-D batch of vectors, got shape {array.shape}")
    if array.shape[1] != dim:
        raise DimensionMismatchError(
            f"embeddings have {array.shape[1]} dimensions, expected {dim}",
            expected=dim,
            actual=array.shape[1],
        )
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise InvalidVectorError(f"row {row}: embedding contains NaN or infinity")
    for width, label in ((dim, "embedding is the zero vector"),
                         (prefix_dim, f"the first {prefix_dim} dimensions are all zero")):
        zero = ~np.any(array[:, :width], axis=1)
        if zero.any():
            row = int(np.flatnonzero(zero)[0])
            raise InvalidVectorError(f"row {row}: {label}")
    return array


def _to_list(vector: Any) -> Sequence[float] | npt.NDArray[Any]:
    if hasattr(vector, "to_numpy"):  # pgvector.Vector / HalfVector
        return vector.to_numpy()  # type: ignore[no-any-return]
    if isinstance(vector, (str, bytes)):
        raise TypeError("got a string")
    return vector  # type: ignore[no-any-return]


def _check_finite_nonzero(array: FloatArray, what: str) -> None:
    if np.isnan(array).any():
        index = int(np.flatnonzero(np.isnan(array))[0])
        raise InvalidVectorError(f"{what} contains NaN at index {index}")
    if np.isinf(array).any():
        raise InvalidVectorError(
            f"{what} contains infinity at index {int(np.flatnonzero(np.isinf(array))[0])}"
        )
    if not array.any():
        raise InvalidVectorError(f"{what} is the zero vector: cosine distance is undefined for it")


_NPY_MAGIC = b"\x93NUMPY"


def load_npy(path: Any, what: str) -> npt.NDArray[Any]:
    """A numeric array from a ``.npy`` file, or an :class:`InvalidVectorError` naming the file
    and the problem (missing, a directory, empty, not a ``.npy`` file, not numbers).

    Pickled object arrays are never loaded: they can run code.
    """
    name = str(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_NPY_MAGIC))
            if not head:
                raise InvalidVectorError(f"{what} {name!r} is empty")
            if head != _NPY_MAGIC:
                raise InvalidVectorError(
                    f"{what} {name!r} is not a .npy file (it does not start with NumPy's "
                    "header; save arrays with numpy.save)")
            handle.seek(0)
            array: npt.NDArray[Any] = np.asarray(np.load(handle, allow_pickle=False))
    except IsADirectoryError:
        raise InvalidVectorError(f"{what} {name!r} is a directory, not a .npy file") from None
    except FileNotFoundError:
        raise InvalidVectorError(f"{what} {name!r} does not exist") from None
    except InvalidVectorError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc):
            raise InvalidVectorError(
                f"{what} {name!r} holds Python objects, not numbers; save a float array "
                "with numpy.save") from None
        raise InvalidVectorError(f"{what} {name!r} is not a readable .npy file: {exc}") from None
    except (OSError, EOFError) as exc:
        raise InvalidVectorError(f"{what} {name!r} is not a readable .npy file: {exc}") from None
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise InvalidVectorError(f"{what} {name!r} holds {array.dtype} values, not real numbers")
    return array
