"""Every benchmark of mrl_pg, in one place; each prints figures, none is run by a search.

- :mod:`~mrl_pg.bench.search` (``mrl-pg bench``): adaptive search against single-pass HNSW
  on the full vector, prefix-only and exact, side by side in interleaved rounds;
  :mod:`~mrl_pg.bench.methods`, :mod:`~mrl_pg.bench.run`, :mod:`~mrl_pg.bench.report` and
  :mod:`~mrl_pg.bench.plot` are its parts;
- :mod:`~mrl_pg.bench.load`: bulk load against a plain COPY, and index build time;
- :mod:`~mrl_pg.bench.synthetic`: the seeded Matryoshka-like generator;
- :mod:`~mrl_pg.bench.layouts`, :mod:`~mrl_pg.bench.rls`, :mod:`~mrl_pg.bench.soak`:
  ``python -m mrl_pg.bench.<name>`` studies (prefix layouts, row-level security, a soak of
  writers and readers).
"""
