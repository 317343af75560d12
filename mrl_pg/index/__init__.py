"""The prefix index and the settings that walk it: building and rebuilding it (concurrently,
with progress and a memory estimate), adopting a user's table (an expression index and a
search function), and ``mrl-pg tune`` (measuring and saving the search settings).

- :mod:`~mrl_pg.index.build`: build, drop and inspect the HNSW index;
- :mod:`~mrl_pg.index.memory` and :mod:`~mrl_pg.index.progress`: its size estimate and
  build progress;
- :mod:`~mrl_pg.index.adopt`: adopt and release an existing table;
- :mod:`~mrl_pg.index.tune`: measure settings against exact search and save the fastest.
"""

from mrl_pg.index.adopt import AdoptReport, adopt_table, release_table
from mrl_pg.index.build import (
    PHASE_DONE,
    IndexBuildReport,
    IndexProgress,
    IndexStatus,
    build_hnsw_index,
    default_maintenance_work_mem,
    default_parallel_workers,
    drop_hnsw_index,
    estimate_hnsw_bytes,
    fits_in_memory,
    index_status,
)

__all__ = [
    "AdoptReport",
    "adopt_table",
    "release_table",
    "IndexProgress",
    "IndexBuildReport",
    "IndexStatus",
    "PHASE_DONE",
    "build_hnsw_index",
    "drop_hnsw_index",
    "index_status",
    "estimate_hnsw_bytes",
    "fits_in_memory",
    "default_maintenance_work_mem",
    "default_parallel_workers",
]
