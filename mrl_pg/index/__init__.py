"""The prefix index and the settings that walk it: building and rebuilding it (concurrently,
with progress and a memory estimate), adopting a user's table (an expression index and a
search function), and ``mrl-pg tune`` (measuring and saving the search settings).

- :mod:`~mrl_pg.index.build`: build, drop and inspect the HNSW index;
- :mod:`~mrl_pg.index.memory` and :mod:`~mrl_pg.index.progress`: its size estimate and
  build progress;
- :mod:`~mrl_pg.index.adopt`: adopt and release an existing table;
- :mod:`~mrl_pg.index.tune`: measure settings against exact search and save the fastest.
"""

from mrl_pg.index import adopt as _adopt
from mrl_pg.index import build as _build
from mrl_pg.index.adopt import *  # noqa: F403
from mrl_pg.index.build import *  # noqa: F403

__all__ = [*_adopt.__all__, *_build.__all__]
