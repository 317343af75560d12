"""Run the host project's Alembic history up and down against the embedded server and check
what each step left in the database. Usage: python check_host.py PATH/TO/alembic"""

import os
import subprocess
import sys

import numpy as np
import psycopg

import mrl_pg
from mrl_pg.server import resolve_dsn

alembic = sys.argv[1]
dsn = resolve_dsn(embedded=True)
os.environ["MRL_PG_DSN"] = dsn


def run(*args: str) -> None:
    print("$ alembic", " ".join(args), flush=True)
    subprocess.run([alembic, *args], check=True)


def functions(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute("SELECT proname FROM pg_proc WHERE proname LIKE 'mrl_search_host%'")
    return {r[0] for r in rows}


with psycopg.connect(dsn, autocommit=True) as conn:
    conn.execute("DROP TABLE IF EXISTS host_docs, host_articles, alembic_version CASCADE")

run("upgrade", "head")
with mrl_pg.connect(dsn) as conn:
    assert functions(conn) == {"mrl_search_host_docs", "mrl_search_host_articles"}, functions(conn)
    articles = mrl_pg.table_config(conn, "host_articles")
    query = np.sin(np.arange(1, 65) + 7 * 42)
    found = mrl_pg.search(conn, articles, query, k=3)
    assert found[0].id == 42, found
    row = conn.execute(
        "SELECT id FROM mrl_search_host_articles(%s::vector, 3) LIMIT 1", (query.tolist(),)
    ).fetchone()
    assert row is not None and row[0] == 42, row
    print("search through psycopg and the SQL function: nearest is article 42")

run("downgrade", "base")
with psycopg.connect(dsn) as conn:
    assert functions(conn) == set(), functions(conn)
    left = conn.execute("SELECT to_regclass('host_docs'), to_regclass('host_articles')").fetchone()
    assert left == (None, None), left
print("host project: upgrade, search and downgrade all passed")
