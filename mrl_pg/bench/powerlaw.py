"""A second synthetic generator, with a cluster structure unlike :mod:`mrl_pg.bench.synthetic`'s.

A benchmark on one generator may flatter one index: the project's generator
(200 Gaussian clusters of gamma-distributed sizes, a slowly decaying spectrum)
happens to give an unusually weak full-dimension HNSW graph. This one differs
in every part of its structure:

- 64 clusters with Zipf-like sizes (weight ``1 / (j + 1) ** 1.2``): a few huge
  clusters and a long tail of small ones;
- a power-law spectrum, ``s_d = (1 + d / 8) ** -0.8``: variance falls off much
  faster, so the leading dimensions carry most of it (Matryoshka-like);
- each cluster its own spread (log-normal), so some clusters are tight and
  others diffuse;
- heavy tails: offsets from the centre are multivariate Student-t with 3
  degrees of freedom (a Gaussian scaled per row by ``sqrt(3 / chi2(3))``), so a
  share of rows lie far from any centre.

Queries are fresh draws from the same mixture (another random stream).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["CLUSTERS", "powerlaw_spectrum", "make_powerlaw_rows", "make_powerlaw_queries"]

CLUSTERS = 64
_ZIPF = 1.2
_DEGREES_OF_FREEDOM = 3.0
_CHUNK = 8192


def powerlaw_spectrum(dim: int, exponent: float = 0.8, knee: float = 8.0
                      ) -> npt.NDArray[np.float64]:
    """Per-dimension scale ``(1 + d / knee) ** -exponent``."""
    return (1.0 + np.arange(dim) / knee) ** -exponent


class _Mixture:
    def __init__(self, dim: int, seed: int) -> None:
        rng = np.random.default_rng([seed, 11])
        self.spectrum = powerlaw_spectrum(dim)
        self.centres = rng.standard_normal((CLUSTERS, dim)) * self.spectrum
        weights = 1.0 / (np.arange(CLUSTERS) + 1.0) ** _ZIPF
        self.weights = weights / weights.sum()
        self.spreads = rng.lognormal(mean=np.log(0.6), sigma=0.5, size=CLUSTERS)

    def draw(self, rng: np.random.Generator, n: int) -> npt.NDArray[np.float32]:
        dim = self.centres.shape[1]
        out = np.empty((n, dim), dtype=np.float32)
        assignment = rng.choice(CLUSTERS, size=n, p=self.weights)
        tails = np.sqrt(_DEGREES_OF_FREEDOM / rng.chisquare(_DEGREES_OF_FREEDOM, size=n))
        spectrum = self.spectrum.astype(np.float32)
        for start in range(0, n, _CHUNK):
            part = slice(start, min(n, start + _CHUNK))
            a = assignment[part]
            chunk = rng.standard_normal((len(a), dim), dtype=np.float32)
            chunk *= spectrum
            chunk *= (self.spreads[a] * tails[part]).astype(np.float32)[:, None]
            chunk += self.centres[a].astype(np.float32)
            chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
            out[part] = chunk
        return out


def make_powerlaw_rows(n: int, dim: int = 1536, *, seed: int = 0) -> npt.NDArray[np.float32]:
    """``n`` unit vectors; the same arguments always give the same rows."""
    return _Mixture(dim, seed).draw(np.random.default_rng([seed, 12]), n)


def make_powerlaw_queries(count: int, dim: int = 1536, *, seed: int = 0
                          ) -> npt.NDArray[np.float32]:
    """Queries from the same mixture as :func:`make_powerlaw_rows` (not copies of rows)."""
    return _Mixture(dim, seed).draw(np.random.default_rng([seed, 13]), count)
