"""A seeded synthetic corpus with Matryoshka-like structure, for tests, the demo and benchmarks.

Real MRL embeddings put most of their meaning in the leading dimensions.
This generator imitates that: dimension ``d`` has scale
``s_d = (1 + d / decay) ** -0.5``, so variance falls off smoothly and with
the default ``decay=64`` the first 512 of 1536 dimensions carry about two
thirds of it. Points are drawn around cluster centres (a Gaussian mixture
with uneven cluster sizes), both centres and offsets scaled by ``s``; queries
are fresh draws from the same mixture, so their neighbours are real, not
copies. Every row also gets metadata for filter tests: ``cluster``,
``bucket`` (uniform 0..99, independent of the vector: ``{"bucket": 7}``
matches 1% of rows) and ``lang``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["SyntheticCorpus", "dimension_scales", "make_corpus", "make_queries"]

_LANGS = ("en", "de", "fr", "es", "ja")


@dataclass(frozen=True)
class SyntheticCorpus:
    """Unit-length float32 embeddings ``(n, dim)`` with ids and metadata."""

    embeddings: npt.NDArray[np.float32]
    external_ids: list[str]
    metadata: list[dict[str, Any]]
    clusters: npt.NDArray[np.int64]


def dimension_scales(dim: int, decay: float = 64.0) -> npt.NDArray[np.float64]:
    """Per-dimension standard deviation: slowly decaying, so leading dimensions dominate."""
    return (1.0 + np.arange(dim) / decay) ** -0.5


def _centres(dim: int, clusters: int, seed: int, decay: float) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng([seed, 1])
    return rng.standard_normal((clusters, dim)) * dimension_scales(dim, decay)


def _draw(
    rng: np.random.Generator,
    centres: npt.NDArray[np.float64],
    assignment: npt.NDArray[np.int64],
    spread: float,
    decay: float,
) -> npt.NDArray[np.float32]:
    dim = centres.shape[1]
    scales = dimension_scales(dim, decay).astype(np.float32)
    out = rng.standard_normal((len(assignment), dim), dtype=np.float32)
    out *= scales * np.float32(spread)
    out += centres[assignment].astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def _assign(rng: np.random.Generator, n: int, clusters: int) -> npt.NDArray[np.int64]:
    weights = rng.gamma(2.0, size=clusters)  # uneven cluster sizes, as in real corpora
    return rng.choice(clusters, size=n, p=weights / weights.sum()).astype(np.int64)


def make_corpus(
    n: int,
    dim: int = 1536,
    *,
    clusters: int = 200,
    spread: float = 0.6,
    decay: float = 64.0,
    seed: int = 0,
) -> SyntheticCorpus:
    """``n`` unit vectors of ``dim`` dimensions; the same arguments always give the same corpus.

    ``spread`` is the within-cluster scale relative to the spread of centres.
    """
    rng = np.random.default_rng([seed, 2])
    centres = _centres(dim, clusters, seed, decay)
    assignment = _assign(rng, n, clusters)
    embeddings = _draw(rng, centres, assignment, spread, decay)
    buckets = rng.integers(0, 100, size=n)
    langs = rng.integers(0, len(_LANGS), size=n)
    metadata = [
        {"cluster": int(c), "bucket": int(b), "lang": _LANGS[int(lang)]}
        for c, b, lang in zip(assignment, buckets, langs, strict=True)
    ]
    return SyntheticCorpus(
        embeddings=embeddings,
        external_ids=[f"doc-{i:07d}" for i in range(n)],
        metadata=metadata,
        clusters=assignment,
    )


def make_queries(
    count: int,
    dim: int = 1536,
    *,
    clusters: int = 200,
    spread: float = 0.6,
    decay: float = 64.0,
    seed: int = 0,
) -> npt.NDArray[np.float32]:
    """Query vectors from the same mixture as :func:`make_corpus` with the same arguments."""
    rng = np.random.default_rng([seed, 3])
    centres = _centres(dim, clusters, seed, decay)
    return _draw(rng, centres, _assign(rng, count, clusters), spread, decay)
