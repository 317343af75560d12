"""How much memory pgvector needs to build an HNSW graph in one go, and this machine's defaults."""

from __future__ import annotations

import os

from mrl_pg.config import TableConfig
from mrl_pg.errors import InvalidConfigError

_KB = 1024
_MB = 1024 * _KB
_GB = 1024 * _MB

# Layout of pgvector's in-memory build graph (hnsw.h, hnswutils.c, 0.8): one
# HnswElementData per row, an array of per-level neighbour-array pointers, one
# neighbour array per level (2*m HnswCandidates on level 0, m above) and a
# copy of the halfvec. A serial build allocates each piece in a generation
# memory context, which adds a chunk header to every allocation.
_ELEMENT_BYTES = 128
_CANDIDATE_BYTES = 16
_NEIGHBOR_ARRAY_HEADER = 8
_POINTER_BYTES = 8
_CHUNK_HEADER = 8
_HALFVEC_HEADER = 8
# The graph context grows in 1 MB blocks; a parallel build also keeps ~4 MB
# of the shared area for other things.
_FIXED_OVERHEAD = 4 * _MB

# A concurrent rebuild builds the new index under this name's suffix, then swaps.
_MIN_MAINTENANCE_WORK_MEM = 64 * _MB
_MAX_DEFAULT_MAINTENANCE_WORK_MEM = 8 * _GB
_HEADROOM = 1.25


def estimate_hnsw_bytes(rows: int, config: TableConfig) -> int:
    """Memory pgvector needs to build the whole HNSW graph of ``rows`` prefixes in one go.

    Follows pgvector's in-memory layout for ``halfvec(prefix_dim)`` and
    ``m``; levels above 0 are counted at their expected number, 1/(m-1) per row.

    >>> estimate_hnsw_bytes(1_000_000, TableConfig()) // 2**20
    1662
    """
    if rows < 0:
        raise InvalidConfigError(f"rows must be zero or more, got {rows}")
    m = config.hnsw_m
    upper_levels = 1 / (m - 1)
    per_row = (
        _CHUNK_HEADER + _ELEMENT_BYTES
        + _CHUNK_HEADER + _POINTER_BYTES * (1 + upper_levels)
        + _CHUNK_HEADER + _NEIGHBOR_ARRAY_HEADER + _CANDIDATE_BYTES * 2 * m
        + upper_levels * (_CHUNK_HEADER + _NEIGHBOR_ARRAY_HEADER + _CANDIDATE_BYTES * m)
        + _CHUNK_HEADER + _align(_HALFVEC_HEADER + 2 * config.prefix_dim)
    )
    return int(rows * per_row) + _FIXED_OVERHEAD


def fits_in_memory(rows: int, config: TableConfig, maintenance_work_mem: int) -> bool:
    """Whether the graph of ``rows`` prefixes fits in ``maintenance_work_mem`` bytes.

    When it does not, pgvector writes what it has to disk and inserts the rest
    one by one, which is many times slower.
    """
    return estimate_hnsw_bytes(rows, config) <= maintenance_work_mem


def default_maintenance_work_mem(estimated_bytes: int = 0) -> int:
    """The graph's estimated size plus 25 %, between 64 MB and min(25 % of RAM, 8 GB).

    When the estimate is larger than that cap it still gets the memory, up to
    half the RAM. Sizing to the graph rather than always taking the cap
    matters for parallel builds: pgvector reserves all of
    ``maintenance_work_mem`` in shared memory up front. RAM is this machine's;
    pass an explicit value when the server runs elsewhere.
    """
    ram = _physical_ram()
    cap = min(ram // 4, _MAX_DEFAULT_MAINTENANCE_WORK_MEM)
    wanted = max(int(estimated_bytes * _HEADROOM), _MIN_MAINTENANCE_WORK_MEM)
    if wanted > cap:
        cap = max(cap, min(wanted, ram // 2))
    return _round_up(min(wanted, cap), _MB)


def default_parallel_workers() -> int:
    """One worker per CPU this process may use, less one for the leader (at least 0)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(cpus - 1, 0)


def _physical_ram() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 4 * _GB


def _align(n: int) -> int:
    return (n + 7) & ~7


def _round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


def _size(n: int) -> str:
    for unit, factor in (("GB", _GB), ("MB", _MB), ("kB", _KB)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n} bytes"
