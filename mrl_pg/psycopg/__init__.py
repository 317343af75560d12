"""The psycopg front end: adaptive and exact search over a connection, sync and async.

The search itself is :mod:`mrl_pg.statement`; this package runs it (settings,
statement and their end in one round trip) and turns rows into results.
"""

from mrl_pg.psycopg._search import *  # noqa: F403
from mrl_pg.psycopg._search import __all__ as __all__
