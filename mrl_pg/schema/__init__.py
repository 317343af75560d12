"""What mrl_pg creates in the database, generated in one place, and what it reads back.

- :mod:`~mrl_pg.schema.tables`: a table of mrl_pg's own (columns, generated prefix,
  constraints), the prefix expression and its HNSW index, ``mrl_pg_tuning``;
- :mod:`~mrl_pg.schema.search_function`: each table's ``mrl_search...`` SQL function;
- :mod:`~mrl_pg.schema.install`: the statements of an install (``sql/install.sql``,
  ``mrl-pg migrate``'s fresh state) and of dropping a table;
- :mod:`~mrl_pg.schema.adoption`: adopting an existing table (expression index, function);
- :mod:`~mrl_pg.schema.rls`: row-level security policies and the tenant index;
- :mod:`~mrl_pg.schema.catalog`: a table's description read from the catalog;
- :mod:`~mrl_pg.schema.compat`: the pgvector version check.

Migrations hold the literal SQL these produced when they were released; the tests
compare an upgraded database with a fresh install from here.
"""
