"""The search statement and its rules, as SQL built from a :class:`~mrl_pg.config.TableConfig`.

Nothing here talks to the database; every front end (psycopg, the ORM, the SQL function)
runs what these modules build.

- :mod:`~mrl_pg.statement.query`: the adaptive statement (candidates by prefix, re-ranked by
  the full vector) and the exact one, with the scan settings each needs;
- :mod:`~mrl_pg.statement.stages`: how candidates are found (the prefix HNSW walk, or others);
- :mod:`~mrl_pg.statement.prefix`: the re-normalized prefix, one expression for stored rows
  and queries;
- :mod:`~mrl_pg.statement.tuning`: the ``ef_search`` rule, limits and the saved tuning;
- :mod:`~mrl_pg.statement.filters`: the column filter grammar;
- :mod:`~mrl_pg.statement.plans`: reading plans (which index a statement walks).
"""
