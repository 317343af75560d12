"""Hand-curated mutation testing for mrl_pg: does the test suite notice when behaviour breaks?

Each mutation in ``MUTATIONS`` breaks one behaviour that matters (the settings
that make the HNSW scan fill the pool, the re-rank, the DDL, the upsert, the
input checks) by replacing one exact source snippet (or regex match). For each
one the script applies it to the tree under ``--root``, runs the test files a
developer would run for that module, and restores the file byte for byte (also
on Ctrl-C or SIGTERM). A mutation is

* ``killed``          the selection failed, errored or timed out: the tests noticed;
* ``survived``        the selection passed: a weak spot of the test suite;
* ``not applicable``  the snippet is no longer in the file (the code was refactored):
                      update the list by hand; counted as neither killed nor survived.

The mutations come in two groups, counted apart: ``baseline`` (the 48 of the
first run, on commit f841f71; when the code moves, a mutation is updated in place
so it breaks the same behaviour under the same name) and ``added`` (behaviour
added since). Totals are printed, and written to the JSON, per group and overall.

Before any mutation the unmutated selection runs once; if it fails, nothing is mutated.

Run it on a separate clone, never on a working tree people are editing (files are
rewritten while the tests run); the script itself may live anywhere, it only
touches ``--root``::

    git clone /work/main /tmp/mut-base && cd /tmp/mut-base
    python3 -m venv .venv && .venv/bin/pip install -e '.[test]'
    MRL_PG_HOME=/tmp/mut-base/.mrl-pg .venv/bin/python scripts/mutation_run.py \\
        --root /tmp/mut-base --json /tmp/mut-results.json [--only NAME ...]
    MRL_PG_HOME=/tmp/mut-base/.mrl-pg .venv/bin/mrl-pg server stop

``--list`` shows which mutations still apply without running anything;
``--full-suite --only NAME`` checks a survivor against every test. pytest
runs as ``nice -n 19 PYTHON -m pytest -x -q -p no:cacheprovider FILES`` in
``--root`` with the caller's environment (set ``MRL_PG_HOME`` so the clone uses
its own embedded server); PYTHON is ``ROOT/.venv/bin/python`` when it exists.
If the script is killed with SIGKILL a mutated file may stay behind:
``git -C ROOT checkout -- .`` restores it.

Adding a mutation: keep ``find`` short and meaningful; it must occur exactly once
in the file, or, with ``within``, once after the (unique) ``within`` snippet.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import FrameType

KILLED = "killed"
SURVIVED = "survived"
NOT_APPLICABLE = "not applicable"

PYTEST_FLAGS = ("-x", "-q", "-p", "no:cacheprovider")
DEFAULT_TIMEOUT = 600.0

# --- Test selections: the files a developer runs after touching the module -----------------

SEARCH = "tests/test_search.py"
SQL_FUNCTION = "tests/test_sql_function.py"
ORM = "tests/test_sqlalchemy.py"
THREE_WAYS = "tests/test_three_ways.py"
SCHEMA = "tests/test_schema.py"
CONFIG = "tests/test_config.py"
MIGRATIONS = "tests/test_migrations.py"
SQL_SCRIPT = "tests/test_sql_script.py"
README = "tests/test_readme.py"
INGEST = "tests/test_ingest.py"
EMBEDDINGS = "tests/test_embeddings.py"
CLI = "tests/test_cli.py"
# Added after the baseline run (f841f71):
SETTINGS_SCOPE = "tests/test_settings_scope.py"
SEARCH_GUARDS = "tests/test_search_guards.py"
ONE_RULE = "tests/test_one_rule.py"
TWINS = "tests/test_twins.py"
DB = "tests/test_db.py"
INGEST_TRANSACTIONS = "tests/test_ingest_transactions.py"
INGEST_GUARDS = "tests/test_ingest_guards.py"
INDEX = "tests/test_index.py"
INDEX_REBUILD = "tests/test_index_rebuild.py"
SERVER = "tests/test_server.py"
TUNE = "tests/test_tune.py"
STAGES = "tests/test_stages.py"
SEARCH_BENCH = "tests/test_search_bench.py"
FILTER_ORACLE = "tests/test_filter_oracle.py"
REAL_TABLES = "tests/test_real_tables_filters.py"

# query.py feeds all three front ends (psycopg, SQL function, ORM).
QUERY_TESTS = (SEARCH, SQL_FUNCTION, ORM, THREE_WAYS, SETTINGS_SCOPE, ONE_RULE, TWINS, DB,
               SEARCH_GUARDS)
CLIENT_TESTS = (SEARCH, SQL_FUNCTION, THREE_WAYS, ORM, CLI, SETTINGS_SCOPE, TWINS, DB,
                SEARCH_GUARDS)
ORM_TESTS = (ORM, THREE_WAYS, SETTINGS_SCOPE)
FUNCTION_TESTS = (SQL_FUNCTION, THREE_WAYS, ONE_RULE)
# test_sql_script.py is left out of the DDL selections: its first test compares
# sql/install.sql with the generator, so it fails on *any* change to the default
# DDL (a developer regenerates the file); its second test reads only the file and
# the frozen migrations. It is in the selection of the migrations themselves.
SCHEMA_TESTS = (SCHEMA, CONFIG, ORM, MIGRATIONS)
INSTALL_TESTS = (SCHEMA, CONFIG, MIGRATIONS, SQL_FUNCTION)
MIGRATION_TESTS = (MIGRATIONS, SQL_SCRIPT, SQL_FUNCTION, ORM, README)
# The ingest modules (ingest.py, _ingest_writer.py, _ingest_batches.py) and readers.py.
INGEST_TESTS = (INGEST, THREE_WAYS, INGEST_TRANSACTIONS, INGEST_GUARDS)
VECTOR_TESTS = (SCHEMA, EMBEDDINGS, INGEST, SEARCH, ORM, INGEST_TRANSACTIONS, INGEST_GUARDS)
DB_TESTS = (TWINS, DB)
# compat.py: the version checks of connect() (test_db, test_twins) and of install/migrate.
COMPAT_TESTS = (DB, TWINS, MIGRATIONS)
SERVER_TESTS = (SERVER,)
INDEX_TESTS = (INDEX, INDEX_REBUILD)


# Groups: the mutations of the baseline run (commit f841f71, 48 of them; updated in place
# when the code moves, same name, same behaviour) and those for behaviour added since,
# counted apart so before/after stays comparable on the original list.
BASELINE = "baseline"
ADDED = "added"
GROUPS = (BASELINE, ADDED)


@dataclass(frozen=True)
class Mutation:
    """One deliberate bug: replace ``find`` in ``file`` by ``replace``, run ``tests``.

    ``regex``: ``find`` is a regular expression and ``replace`` a ``re`` template.
    ``within``: a unique snippet; the first match of ``find`` after it is replaced
    (for snippets that occur more than once in the file).
    ``group``: :data:`BASELINE` or :data:`ADDED` (see above).
    """

    name: str
    description: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]
    regex: bool = False
    within: str | None = None
    group: str = BASELINE


Q, C = "mrl_pg/statement/query.py", "mrl_pg/psycopg/_search.py"
S = "mrl_pg/sqlalchemy/_search.py"
F, D = "mrl_pg/schema/search_function.py", "mrl_pg/schema/tables.py"
INS = "mrl_pg/schema/install.py"
M2 = "migrations/versions/0002_search_function.py"
G, R, V = "mrl_pg/ingest/load.py", "mrl_pg/ingest/readers.py", "mrl_pg/vectors.py"
W = "mrl_pg/ingest/writer.py"  # ingest.py's batch writer (staging, upsert, direct COPY)
DBM, COMPAT = "mrl_pg/db.py", "mrl_pg/schema/compat.py"
SRV, IDX = "mrl_pg/server.py", "mrl_pg/index/build.py"
SS = "mrl_pg/sqlalchemy/_settings.py"  # the ORM's settings listeners
PX, SAVED = "mrl_pg/statement/prefix.py", "mrl_pg/index/saved_tuning.py"
TU, TN, ST = "mrl_pg/statement/tuning.py", "mrl_pg/index/tune.py", "mrl_pg/statement/stages.py"
BR, MIG = "mrl_pg/bench/run.py", "mrl_pg/migrate.py"
FL, CAT, AD = "mrl_pg/statement/filters.py", "mrl_pg/schema/catalog.py", "mrl_pg/index/adopt.py"
ADOPT, ADOPT_CLI = "tests/test_adopt.py", "tests/test_adopt_cli.py"
ROUND_TRIPS, SEARCH_REAL_TABLES = "tests/test_round_trips.py", "tests/test_search_real_tables.py"
RT = "mrl_pg/statement/round_trip.py"
ADN, READOPT = "mrl_pg/schema/adoption.py", "tests/test_readopt.py"
RF = "mrl_pg/schema/replace_function.py"

BASELINE_MUTATIONS: tuple[Mutation, ...] = (
    # --- The adaptive statement and its settings (query.py) ---
    Mutation(
        "query-cte-not-materialized",
        "candidate CTE loses MATERIALIZED: the pool LIMIT can be flattened into the outer query",
        Q, "WITH candidates AS MATERIALIZED (", "WITH candidates AS (", QUERY_TESTS,
    ),
    Mutation(
        # The rule now lives in tuning.py (SearchTuning, scaled by ef_search_for and
        # rendered by ef_search_sql); the default tuning is read by all three front ends,
        # so this changes them at once.
        "query-ef-search-equals-pool",
        "hnsw.ef_search = pool instead of 2 x pool: less room for the graph walk, lower recall "
        "(default SearchTuning ef_search 80 for a pool of 80; the SQL function renders it too)",
        TU, "    ef_search: int = 160\n", "    ef_search: int = 80\n", QUERY_TESTS,
    ),
    Mutation(
        "query-no-iterative-scan",
        "hnsw.iterative_scan not set: filtered searches and pools above 1000 come back short",
        Q, '("hnsw.iterative_scan", "relaxed_order"),', "", QUERY_TESTS,
        within="def adaptive_settings_sql(",
    ),
    Mutation(
        "query-no-max-scan-tuples",
        "hnsw.max_scan_tuples not set: the caller's bound on a filtered scan is ignored",
        Q, '("hnsw.max_scan_tuples", scan_tuples),', "", QUERY_TESTS,
    ),
    Mutation(
        "query-adaptive-generic-plans",
        "adaptive search no longer forces custom plans: a cached generic plan may be reused",
        Q, '("plan_cache_mode", "force_custom_plan"),', "", QUERY_TESTS,
        within="def scan_settings(",
    ),
    Mutation(
        "query-exact-settings-empty",
        "EXACT_SETTINGS = []: exact search no longer turns index scans off (an empty SELECT)",
        Q, r"EXACT_SETTINGS: list\[tuple\[str, str\]\] = \[[^\]]*\]",
        "EXACT_SETTINGS: list[tuple[str, str]] = []", QUERY_TESTS, regex=True,
    ),
    Mutation(
        "query-exact-index-scans-on",
        "exact search leaves index scans on: an index on the embedding would make it approximate",
        Q, '("enable_indexscan", "off"),', "", QUERY_TESTS,
    ),
    Mutation(
        "query-rerank-order-by-id",
        "re-rank orders by id instead of by full-dimension distance",
        Q, "ORDER BY distance, {key}", "ORDER BY {key}", QUERY_TESTS, within="FROM candidates",
    ),
    Mutation(
        "query-exact-no-id-tiebreak",
        "exact search drops the id tie-breaker: equal distances come back in arbitrary order",
        Q, "ORDER BY distance, {key}", "ORDER BY distance", QUERY_TESTS,
        within="/* mrl_pg exact */",
    ),
    Mutation(
        "query-rerank-l2-distance",
        "re-rank and reported distance use L2 (<->) instead of cosine (<=>)",
        Q, 'return sql.SQL("{} <=> {}::{}").format(', 'return sql.SQL("{} <-> {}::{}").format(',
        QUERY_TESTS,
    ),
    Mutation(
        "query-filter-dropped",
        "the adaptive statement ignores the metadata filter",
        Q, "        conditions.append(sql.SQL(\"{} @> {}::jsonb\").format(",
        "        conditions.append(sql.SQL(\"{} IS NOT NULL OR {} IS NULL\").format(",
        QUERY_TESTS,
    ),
    # --- psycopg front end (psycopg.py) ---
    Mutation(
        "client-statement-prepared",
        "prepare=False removed: psycopg prepares repeated searches (server-side statements)",
        C, "step.query, step.params, prepare=False)", "step.query, step.params)",
        CLIENT_TESTS, within="def _run_once(",
    ),
    Mutation(
        "client-no-transaction",
        "sync search not in its own transaction: on a non-autocommit connection the settings "
        "outlive the search",
        "mrl_pg/statement/round_trip.py",
        'return Wrapping(before=(start,), after=(sql.SQL("COMMIT"),), undo=(sql.SQL("ROLLBACK"),),',
        'return Wrapping(before=(start,), after=(), undo=(sql.SQL("ROLLBACK"),),',
        CLIENT_TESTS + (ROUND_TRIPS,),
    ),
    Mutation(
        "client-exact-ignores-filter",
        "exact_search drops the filter (ground truth for filtered searches is wrong)",
        C, 'filter=sql.Placeholder("filter") if params.has_filter else None', "filter=None",
        CLIENT_TESTS, within="def exact_search_statement(",
    ),
    # --- SQLAlchemy front end (sqlalchemy.py) ---
    Mutation(
        "orm-pool-ignores-offset",
        "ORM pool is k * oversample instead of (offset + k) * oversample: later pages run dry",
        "mrl_pg/sqlalchemy/_target.py", "return SearchParams(k=k + offset,",
        "return SearchParams(k=k,", ORM_TESTS,
    ),
    Mutation(
        "orm-offset-ignored",
        "search_select ignores offset: page two repeats page one",
        "mrl_pg/sqlalchemy/_target.py", "statement = statement.offset(offset)",
        "statement = statement", ORM_TESTS, within="def adaptive_select(",
    ),
    Mutation(
        "orm-rerank-by-prefix",
        "ORM re-ranks by prefix distance instead of full-dimension cosine",
        "mrl_pg/sqlalchemy/_target.py",
        'return cast("ColumnElement[float]", mixin.embedding.cosine_distance(full))',
        'return cast("ColumnElement[float]", mixin.embedding_prefix.cosine_distance('
        'text(render(prefix_expression(sql.SQL(_QUERY_SQL), self.described.prefix_dim)))'
        '.bindparams(query)))', ORM_TESTS,
    ),
    Mutation(
        # The refusal is gone by design: on an autocommit connection the ORM now wraps the
        # statement in a transaction of its own. Same behaviour, new mechanism: without the
        # wrapper the transaction-local settings end with their own statement.
        "orm-async-autocommit-unchecked",
        "ORM search on an autocommit connection (sync or async) runs without its own "
        "transaction: the settings do not apply to the search",
        SS, "wrap = wrapping(conn.info.transaction_status, autocommit=conn.autocommit,",
        "wrap = wrapping(conn.info.transaction_status, autocommit=False,", ORM_TESTS,
        within="def _run_sync(",
    ),
    Mutation(
        "orm-no-toast-target",
        "the ORM model's table loses toast_tuple_target (differs from install()'s table)",
        S, '{"postgresql_with": {"toast_tuple_target": TOAST_TUPLE_TARGET}}', "{}", ORM_TESTS,
    ),
    # --- The SQL function (ddl/search_function.py) ---
    Mutation(
        "function-no-search-path",
        "mrl_search loses its fixed SET search_path (search_path hijacking, wrong operators)",
        F, "SET search_path = {search_path}\n", "", FUNCTION_TESTS,
    ),
    Mutation(
        "function-ignores-filter",
        "mrl_search ignores its filter argument",
        F, "EXECUTE {filtered} USING query_embedding, pool, match_count, filter,",
        "EXECUTE {unfiltered} USING query_embedding, pool, match_count, filter,",
        FUNCTION_TESTS,
    ),
    Mutation(
        "function-ef-search-equals-pool",
        "mrl_search sets hnsw.ef_search to the pool instead of twice the pool "
        "(an untuned table gets ef_search 80 for a pool of 80; Python keeps 160)",
        F, "default_ef_search=sql.Literal(DEFAULT_TUNING.ef_search),",
        "default_ef_search=sql.Literal(DEFAULT_TUNING.ef_search // 2),", FUNCTION_TESTS,
    ),
    Mutation(
        "function-no-iterative-scan",
        "mrl_search does not turn on hnsw.iterative_scan: filtered or large pools come back short",
        F, "SET hnsw.iterative_scan = relaxed_order\n", "", FUNCTION_TESTS,
    ),
    Mutation(
        "function-settings-leak",
        "mrl_search loses SET hnsw.ef_search: its set_config leaks into the caller's transaction",
        F, "SET hnsw.ef_search = 40\n", "", FUNCTION_TESTS,
    ),
    # --- DDL (ddl/tables.py, ddl/install.py) ---
    Mutation(
        "ddl-prefix-not-normalized",
        "prefix_expression drops l2_normalize: stored and query prefixes are not unit length",
        PX, '"l2_normalize(subvector({source}, 1, {p}))::halfvec({p})"',
        '"subvector({source}, 1, {p})::halfvec({p})"', (*SCHEMA_TESTS, SEARCH),
    ),
    Mutation(
        "ddl-no-nonzero-check",
        "the non-zero CHECK on the embedding always passes",
        D, '"vector_norm({}) > 0"', '"vector_norm({}) >= 0"', SCHEMA_TESTS,
    ),
    Mutation(
        "ddl-no-prefix-nonzero-check",
        "the non-zero CHECK on the prefix always passes (zero prefix: undefined cosine)",
        D, '"vector_norm(subvector({}, 1, {})) > 0"', '"vector_norm(subvector({}, 1, {})) >= 0"',
        SCHEMA_TESTS,
    ),
    Mutation(
        "ddl-no-toast-target",
        "CREATE TABLE loses toast_tuple_target: 1536-dim rows are TOASTed, re-rank reads TOAST",
        D, " WITH (toast_tuple_target = {toast_target})", "", SCHEMA_TESTS,
    ),
    Mutation(
        "ddl-external-id-not-unique",
        "CREATE TABLE loses UNIQUE (external_id): duplicate ids, and upserts cannot work",
        D, ",\n    CONSTRAINT {external_key} UNIQUE ({upsert_key})", "", SCHEMA_TESTS,
    ),
    Mutation(
        "install-not-transactional",
        "install() runs its statements outside a transaction: a failure leaves half a table",
        INS, "with conn.transaction():\n            for statement in create_ddl",
        "if True:\n            for statement in create_ddl", INSTALL_TESTS,
    ),
    Mutation(
        "install-drop-keeps-function",
        "drop_ddl (drop_mrl_table) leaves the search function behind",
        INS, "statements = [drop_search_function_ddl(config)] if with_search_function else []",
        "statements = []", INSTALL_TESTS,
    ),
    # --- Released migrations ---
    Mutation(
        "migration-0002-no-search-path",
        "revision 0002's mrl_search has no fixed search_path",
        M2, 'SET search_path = "pg_catalog", "public", "extensions"\n', "", MIGRATION_TESTS,
    ),
    Mutation(
        "migration-0002-ignores-filter",
        "revision 0002's mrl_search ignores the filter",
        M2, "    WHERE metadata @> $4::jsonb\n", "", MIGRATION_TESTS,
    ),
    Mutation(
        "migration-0002-downgrade-keeps-function",
        "downgrading revision 0002 leaves mrl_search behind",
        M2, "op.execute(sa.text(DROP_FUNCTION))", "pass", MIGRATION_TESTS,
    ),
    # --- Ingest (ingest.py, _ingest_writer.py) ---
    Mutation(
        "ingest-staging-not-dropped",
        "staging table loses ON COMMIT DROP: temp tables pile up in the session",
        W, " ON COMMIT DROP", "", INGEST_TESTS,
    ),
    Mutation(
        "ingest-upsert-always-updates",
        "the upsert drops its IS DISTINCT FROM clause: unchanged rows get new row versions",
        W, r'"WHERE \(t\.content[^"]*IS DISTINCT FROM "\s*"\(EXCLUDED\.content[^"]*"', '""',
        INGEST_TESTS, regex=True,
    ),
    Mutation(
        "ingest-no-duplicate-id-check",
        "a load no longer refuses an external_id repeated within it",
        G, "if first != line:", "if False:", INGEST_TESTS,
    ),
    Mutation(
        "ingest-updates-counted-as-inserts",
        "the report counts every written row as inserted (xmax = 0 test dropped)",
        W, "RETURNING (xmax = 0) AS inserted", "RETURNING true AS inserted", INGEST_TESTS,
    ),
    Mutation(
        "ingest-direct-copy-into-nonempty",
        "the plain-COPY fast path is used even when the table already has rows",
        W, "return bool(empty and empty[0])", "return True", INGEST_TESTS,
    ),
    Mutation(
        "ingest-reuse-ignores-content",
        "stored embeddings are reused by external_id alone, even when the content changed",
        G, " AND t.content = s.content", "", INGEST_TESTS,
    ),
    Mutation(
        "ingest-embedder-shape-unchecked",
        "the embedder's result shape is not checked against the batch and the table",
        "mrl_pg/ingest/run.py", "if matrix.shape != (len(texts), config.full_dim):",
        "if False:", INGEST_TESTS,
    ),
    # --- Reading records (readers.py) ---
    Mutation(
        "readers-nul-allowed",
        "a NUL character in external_id/content is not caught before PostgreSQL sees it",
        R, 'if "\\x00" in value:', "if False:", INGEST_TESTS,
    ),
    Mutation(
        "readers-duplicate-rows-unchecked",
        "ingest_arrays no longer refuses repeated external ids",
        R, "if len(set(ids)) != len(ids):", "if False:", INGEST_TESTS,
    ),
    Mutation(
        "readers-blank-id-allowed",
        "a whitespace-only external_id is accepted",
        R, "if not external_id.strip():", "if False:", INGEST_TESTS,
    ),
    # --- Vectors (vectors.py) ---
    Mutation(
        "vectors-nan-allowed",
        "as_embedding lets NaN through",
        V, "if np.isnan(array).any():", "if False:", VECTOR_TESTS,
    ),
    Mutation(
        "vectors-matrix-nonfinite-allowed",
        "as_embedding_matrix lets NaN and infinity through",
        V, "if not finite.all():", "if False:", VECTOR_TESTS,
    ),
    Mutation(
        "vectors-matrix-prefix-unchecked",
        "as_embedding_matrix checks only the full vector for zeros, not the prefix",
        V, "zero = ~np.any(array[:, :width], axis=1)", "zero = ~np.any(array, axis=1)",
        VECTOR_TESTS,
    ),
    Mutation(
        "vectors-normalize-by-full-norm",
        "truncate_and_normalize divides the prefix by the full vector's norm",
        V, "norms = np.linalg.norm(prefix.astype(np.float64)",
        "norms = np.linalg.norm(array.astype(np.float64)", VECTOR_TESTS,
    ),
)

ADDED_MUTATIONS: tuple[Mutation, ...] = (
    # --- One round trip, short walks, stale caches, the planner (issues 16 and 20) ---
    Mutation(
        "client-default-tuning-instead-of-the-tables",
        "psycopg search built with DEFAULT_TUNING instead of the table's tuning row",
        C, "settings=_settings_statement(config, True, DEFAULT_TUNING)",
        "settings=_settings_statement(config, False, DEFAULT_TUNING)", (TUNE, ROUND_TRIPS),
        group=ADDED,
    ),
    Mutation(
        "client-tuning-read-and-or-swapped",
        "psycopg search reads the tuning only when both oversample and ef_search are unset",
        C, "if tuning is not None or (oversample is not None and ef_search is not None):",
        "if tuning is not None or (oversample is not None or ef_search is not None):",
        (TUNE, ROUND_TRIPS), within="def adaptive_search_statement(", group=ADDED,
    ),
    Mutation(
        "function-no-iterative-scan",
        "the SQL function's SET hnsw.iterative_scan turned off: pools above ef_search stop short",
        F, "SET hnsw.iterative_scan = relaxed_order", "SET hnsw.iterative_scan = off",
        FUNCTION_TESTS, group=ADDED,
    ),
    Mutation(
        "psycopg-begin-synced-apart",
        "psycopg's own BEGIN is left to psycopg, which syncs after it: two round trips",
        RT, "    conn._autocommit = True\n", "", (ROUND_TRIPS,), group=ADDED,
    ),
    Mutation(
        "search-parallel-workers",
        "searches may start parallel workers: a Gather for the exact scan that never runs "
        "costs 8 of 10 ms",
        Q, '("max_parallel_workers_per_gather", "0"),', '("max_parallel_workers_per_gather", "2"),',
        (SEARCH,), group=ADDED,
    ),
    Mutation(
        "scan-memory-not-raised",
        "hnsw.scan_mem_multiplier not set: a 30,000 pool stops short at the default work_mem",
        Q, '("hnsw.scan_mem_multiplier", SCAN_MEMORY_RULE.sql(scan_tuples)),', "",
        (SEARCH_REAL_TABLES,), group=ADDED,
    ),
    Mutation(
        "short-walk-kept",
        "a walk that came back short of k is not replaced by the exact answer",
        Q, "    SELECT {key}, distance FROM missed\n", "    SELECT {key}, distance FROM missed "
        "WHERE false\n", (SEARCH_REAL_TABLES, SEARCH), group=ADDED,
    ),
    Mutation(
        "orm-short-walk-kept",
        "an ORM walk that came back short of k is not replaced by the exact answer",
        "mrl_pg/sqlalchemy/_target.py",
        "        select(*(missed.c[n] for n in names), missed.c.distance),",
        "        select(*(missed.c[n] for n in names), missed.c.distance).where(short & ~short),",
        (SEARCH_REAL_TABLES,), group=ADDED,
    ),
    Mutation(
        "planner-bitmap-on-adopted",
        "adopted tables keep bitmap scans: a 20% filter at pool 160 sorts 6,000 TOASTed rows",
        Q, 'bitmap: Value = "off" if config.prefix_column is None else',
        'bitmap: Value = "on" if config.prefix_column is None else', (SEARCH_REAL_TABLES,),
        group=ADDED,
    ),
    Mutation(
        "orm-stale-prefix-unchecked",
        "a pooled ORM connection never checks the prefix index it read (stale after re-adoption)",
        "mrl_pg/sqlalchemy/_target.py",
        "    if target.index_definition is None or target.config is None:\n        return None",
        "    return None", (SEARCH_REAL_TABLES,), group=ADDED,
    ),
    Mutation(
        "missing-tuning-table-not-retried",
        "a search after mrl_pg_tuning went away (a downgrade) fails instead of using the defaults",
        C, "if search.without_tuning is None or not _missing_tuning(exc):", "if True:",
        (SEARCH_REAL_TABLES,), within="def _run(conn", group=ADDED,
    ),
    Mutation(
        "client-settings-not-restored-in-transaction",
        "a sync search inside the caller's transaction leaves its HNSW/exact settings behind "
        "(restore_settings_sql not sent)",
        "mrl_pg/statement/round_trip.py",
        "restore = (restore_settings_sql(setting_names),) if setting_names else ()",
        "restore = ()", CLIENT_TESTS, group=ADDED,
    ),
    Mutation(
        "orm-settings-not-restored-in-transaction",
        "an ORM search in the session's transaction leaves its settings behind "
        "(it commits a session's transaction it did not open, settings kept for the rest)",
        SS, "keep_transaction=True)", "keep_transaction=False)", ORM_TESTS + (ROUND_TRIPS,),
        within="def _run_sync(", group=ADDED,
    ),
    Mutation(
        "compat-accepts-pgvector-0.7",
        "MIN_PGVECTOR_VERSION = 0.7: connect/install/migrate accept a pgvector without "
        "iterative scans",
        COMPAT, "MIN_PGVECTOR_VERSION = (0, 8, 0)", "MIN_PGVECTOR_VERSION = (0, 7, 0)",
        COMPAT_TESTS, group=ADDED,
    ),
    Mutation(
        "function-table-unqualified",
        "mrl_search installed without a schema names its table unqualified (and leaves the "
        "install schema out of its search_path) instead of current_schema()",
        F, "template = render(_create_function(replace(config, schema=_SCHEMA_PLACEHOLDER)))",
        "template = render(_create_function(config))", FUNCTION_TESTS, group=ADDED,
    ),
    Mutation(
        "server-embedded-without-asking",
        "resolve_dsn starts the embedded server when no DSN is configured, unasked",
        SRV, "if env.dsn == EMBEDDED or embedded:", "if True:", SERVER_TESTS, group=ADDED,
    ),
    Mutation(
        "db-configure-leaves-transaction-open",
        "configure_connection leaves a non-autocommit connection idle in transaction "
        "(no rollback; psycopg_pool's configure contract broken)",
        DBM, "conn.rollback()", "pass", DB_TESTS, within="def configure_connection(",
        group=ADDED,
    ),
    Mutation(
        "index-concurrent-rebuild-drops-first",
        "a concurrent index rebuild drops the old index before building the new one "
        "(searches go without an index meanwhile)",
        IDX, "if concurrently:\n                    swap = True",
        "if False:\n                    swap = True", INDEX_TESTS, group=ADDED,
    ),
    Mutation(
        "ingest-embeds-inside-transaction",
        "a load with an embedder calls the embedding service inside its write transaction",
        "mrl_pg/ingest/run.py", "elif embedder is None or not idle:", "elif True:",
        INGEST_TESTS, group=ADDED,
    ),
    # --- Per-table tuning (tuning.py, tune.py) and what reads it ---
    Mutation(
        "client-ignores-tuning",
        "psycopg search never reads the table's mrl_pg_tuning row (statement built with the "
        "defaults)",
        C, "    if tuning is not None or (oversample is not None and ef_search is not None):\n"
        "        return untuned", "    if True:\n        return untuned", (TUNE, ROUND_TRIPS),
        within="def adaptive_search_statement(", group=ADDED,
    ),
    Mutation(
        "orm-search-ignores-tuning",
        "ORM search does not read the table's tuning (the untuned settings always)",
        "mrl_pg/sqlalchemy/_target.py",
        "    if tuning is not None or (oversample is not None and ef_search is not None):\n"
        "        return untuned", "    if True:\n        return untuned", (TUNE, ROUND_TRIPS),
        group=ADDED,
    ),
    Mutation(
        "orm-async-search-ignores-tuning",
        "an ORM search reads the tuning only when both oversample and ef_search are unset "
        "(and for or)",
        "mrl_pg/sqlalchemy/_target.py",
        "if tuning is not None or (oversample is not None and ef_search is not None):",
        "if tuning is not None or (oversample is not None or ef_search is not None):",
        (TUNE, ROUND_TRIPS), group=ADDED,
    ),
    Mutation(
        "function-ignores-tuned-row",
        "mrl_search never reads mrl_pg_tuning (SELECT ... INTO removed): always the defaults",
        F, "    SELECT t.k, t.oversample, t.ef_search INTO tuned_k, tuned_oversample, "
        "tuned_ef_search\n    FROM {tuning} AS t WHERE t.table_name = {table_name};\n"
        "    IF NOT FOUND THEN", "    IF TRUE THEN", (ONE_RULE, TUNE), group=ADDED,
    ),
    Mutation(
        "function-ignores-tuned-oversample",
        "mrl_search reads the tuned row but takes the default oversample when none is given",
        F, "oversample := coalesce(oversample, tuned_oversample);",
        "oversample := coalesce(oversample, {default_oversample});", (ONE_RULE, TUNE),
        group=ADDED,
    ),
    Mutation(
        "tuning-ef-search-no-floor",
        "ef_search_for drops its floor of min(40, ef_search): small pools walk a tiny graph",
        TU, "return min(MAX_EF_SEARCH, max(min(EF_SEARCH_FLOOR, self.ef_search), scaled))",
        "return min(MAX_EF_SEARCH, scaled)", (ONE_RULE,), group=ADDED,
    ),
    Mutation(
        "tuning-ef-search-rounds-down",
        "ef_search_for rounds the scaled ef_search down instead of up",
        TU, "scaled = (self.ef_search * pool + self.pool - 1) // self.pool",
        "scaled = (self.ef_search * pool) // self.pool", (ONE_RULE,), group=ADDED,
    ),
    Mutation(
        "tuning-ef-search-sql-off-by-one",
        "ef_search_sql renders ceil division without its - 1: the SQL function sets one more "
        "than Python on exact multiples",
        TU, '"(({ef})::bigint * ({pool}) + ({k})::bigint * ({oversample}) - 1) "',
        '"(({ef})::bigint * ({pool}) + ({k})::bigint * ({oversample})) "', (ONE_RULE,),
        group=ADDED,
    ),
    Mutation(
        "tuning-save-does-not-replace",
        "save_tuning does ON CONFLICT DO NOTHING: re-running tune keeps the old row",
        SAVED, r'ON CONFLICT \(table_name\) DO UPDATE SET[^"]*',
        "ON CONFLICT (table_name) DO NOTHING", (TUNE,), regex=True, group=ADDED,
    ),
    Mutation(
        "tune-recommends-slowest",
        "tune recommends the slowest passing setting (min instead of max QPS)",
        TN, "recommended = max(passing, key=lambda r: r.qps)",
        "recommended = min(passing, key=lambda r: r.qps)", (TUNE,), group=ADDED,
    ),
    Mutation(
        "tune-keeps-setting-off-index",
        "tune may recommend a setting whose plan leaves the prefix index (uses_index ignored)",
        TN, "result.meets_target = result.uses_index and result.min_recall",
        "result.meets_target = result.min_recall", (TUNE,), group=ADDED,
    ),
    Mutation(
        "tune-saves-on-dry-run",
        "tune --dry-run saves its recommendation anyway",
        TN, "if recommended is not None and not options.dry_run:",
        "if recommended is not None:", (TUNE,), group=ADDED,
    ),
    Mutation(
        "tune-recall-counts-own-row",
        "tune's recall counts a sampled row as its own neighbour (flatters every setting)",
        TN, "    expected = [i for i in truth if i != own]",
        "    own = None\n    expected = [i for i in truth if i != own]", (TUNE,), group=ADDED,
    ),
    Mutation(
        "schema-forget-tuning-noop",
        "forget_tuning_ddl deletes nothing: a dropped table's tuning applies to a new table "
        "of the same name",
        D, "        DELETE FROM {table} WHERE table_name = {table_name};\n", "        NULL;\n",
        (*INSTALL_TESTS, TUNE), group=ADDED,
    ),
    Mutation(
        "install-drop-keeps-tuning",
        "drop_ddl (drop_mrl_table) leaves the dropped table's mrl_pg_tuning row behind",
        INS, 'sql.SQL("DROP TABLE {}").format(config.table), forget_tuning_ddl(config)]',
        'sql.SQL("DROP TABLE {}").format(config.table)]', (*INSTALL_TESTS, TUNE), group=ADDED,
    ),
    # --- First stages (stages.py) ---
    Mutation(
        "stages-binary-orders-by-halfvec",
        "the binary stage orders by halfvec cosine instead of <~> on the bits: it walks the "
        "prefix index, not its own",
        ST, 'return sql.SQL("{} <~> {}").format(\n'
        "            self._bits(config, indexed_prefix(config)),\n"
        "            self._bits(config, _query_prefix(config, query)))",
        'return sql.SQL("{} <=> {}").format(indexed_prefix(config),\n'
        "                                           _query_prefix(config, query))",
        (STAGES,), group=ADDED,
    ),
    # --- Adopted tables: filters, catalog, statement (issue "Your own table") ---
    Mutation(
        "adopt-where-dropped-from-candidates",
        "column filters are left out of the candidate scan: rows of other authors come back",
        Q, 'where_sql = _where(config, filter, where, "\\n    ")',
        'where_sql = _where(config, filter, None, "\\n    ")', (ADOPT,), group=ADDED,
    ),
    Mutation(
        "adopt-join-on-first-key-column",
        "the best k are joined back on the first key column only: composite keys duplicate rows",
        Q, "            for c in key),", "            for c in key[:1]),", (ADOPT,), group=ADDED,
    ),
    Mutation(
        "adopt-expression-prefix-off-by-one",
        "the ORDER BY's prefix expression differs from the index's: the planner cannot walk it",
        PX, "    return prefix_expression(sql.Identifier(config.embedding_column), "
            "config.prefix_dim)",
        "    return prefix_expression(sql.Identifier(config.embedding_column), "
        "config.prefix_dim - 1)", (ADOPT,), group=ADDED,
    ),
    Mutation(
        "filters-in-without-cast",
        "IN values are not cast to the column's array type: a uuid column compared with text[]",
        FL, "column, sql.SQL(_SETS[op]), _cast(value.array, type_schema, array_type))",
        "column, sql.SQL(_SETS[op]), value.array)", (ADOPT,), group=ADDED,
    ),
    # --- The filter language (issue 16): operators, NULL vectors, keys, pages ---
    Mutation(
        "filters-not-in-as-any",
        "not_in compiled as <> ANY: every row with another value passes",
        FL, '_SETS = {"in": "= ANY", "not_in": "<> ALL"}',
        '_SETS = {"in": "= ANY", "not_in": "<> ANY"}', (FILTER_ORACLE,), group=ADDED,
    ),
    Mutation(
        "filters-lte-as-lt",
        "lte compiled as <: the bound itself is left out",
        FL, '"lte": "<="', '"lte": "<"', (FILTER_ORACLE,), group=ADDED,
    ),
    Mutation(
        "filters-fraction-cast-to-integer",
        "a fraction against an integer column is cast to the column's type (rounded)",
        FL, "    if kind == NUMERIC:\n        column =",
        "    if False:\n        column =", (FILTER_ORACLE,), group=ADDED,
    ),
    Mutation(
        "query-null-embeddings-kept",
        "rows whose embedding is NULL stay candidates: float(None) or NULL distances",
        Q, '        sql.SQL("{} IS NOT NULL").format(column_name(config.embedding_column))]',
        '        sql.SQL("true")]', (REAL_TABLES,), group=ADDED,
    ),
    Mutation(
        "catalog-nullable-key-accepted",
        "a key column that may hold NULL is accepted: rows with a NULL key never come back",
        CAT, "    _refuse_nullable_key(conn, name, shown, key)\n", "", (REAL_TABLES,),
        group=ADDED,
    ),
    Mutation(
        "query-pool-ignores-offset",
        "the pool is k * oversample whatever the offset: a later page walks short and falls "
        "back to the exact scan",
        Q, 'return {"k": params.offset + params.k,', 'return {"k": params.k,',
        (REAL_TABLES,), group=ADDED,
    ),
    Mutation(
        "function-pool-ignores-offset",
        "the SQL function's pool is match_count * oversample whatever match_offset",
        F, "    pool := (match_offset + match_count) * oversample;",
        "    pool := match_count * oversample;", (REAL_TABLES,), group=ADDED,
    ),
    Mutation(
        "orm-select-takes-a-later-offset",
        "search_select's Select takes a later .offset(): the page silently comes back empty",
        "mrl_pg/sqlalchemy/_target.py", "return _with_settings(paged, settings)",
        "return _with_settings(statement, settings)", (REAL_TABLES,),
        group=ADDED,
    ),
    Mutation(
        "query-missed-ignores-offset",
        "the exact answer that replaces a short walk ignores the offset: a short page repeats "
        "the rows before it",
        Q, "    ORDER BY ({distance}) + 0, {key}\n    LIMIT {k}{offset}",
        "    ORDER BY ({distance}) + 0, {key}\n    LIMIT {k}", (REAL_TABLES,), group=ADDED,
    ),
    Mutation(
        "query-offset-ignored",
        "the offset is not applied to the best rows: page 2 repeats page 1",
        Q, 'return sql.SQL("") if offset is None else sql.SQL(" OFFSET {}").format(offset)',
        'return sql.SQL("")', (REAL_TABLES,), group=ADDED,
    ),
    Mutation(
        "catalog-any-key-accepted",
        "from_table accepts a key that no unique constraint covers: the join back may duplicate",
        CAT, "if not any(set(cols) == set(key) for _, cols in unique_keys):", "if False:",
        (ADOPT,), group=ADDED,
    ),
    Mutation(
        "function-adopted-filter-on-metadata",
        "the adopted table's SQL function filters a metadata column it does not have",
        F, "    if config.adopted:\n        filtered", "    if False:\n        filtered",
        (ADOPT,), group=ADDED,
    ),
    Mutation(
        "adopt-rebuilds-a-valid-index",
        "adopt_table rebuilds the index on every run instead of keeping a valid one",
        AD, "    if not (status.exists and status.valid):", "    if True:",
        (ADOPT, ADOPT_CLI), group=ADDED,
    ),
    # --- Adopting again (issue 16: re-adoption, names, CLI) ---
    Mutation(
        "readopt-prefix-guard-removed",
        "adopting again with another prefix keeps the old index and rewrites the function: "
        "every call sorts the whole table",
        ADN, "before=[pgvector_check_ddl(), same_index_ddl(config)],",
        "before=[pgvector_check_ddl()],", (READOPT,), group=ADDED,
    ),
    Mutation(
        "readopt-grants-not-given-back",
        "a search function dropped and created for new columns loses its EXECUTE grants",
        RF, "    IF dropped AND acl IS NOT NULL THEN", "    IF false THEN", (READOPT,),
        group=ADDED,
    ),
    Mutation(
        "readopt-forgets-the-recorded-tenant",
        "a plain adopt after --tenant-column records no tenant: search --tenant then fails",
        CAT, "                if field == \"tenant\" and tenant is None:",
        "                if False:", (READOPT,), group=ADDED,
    ),
    Mutation(
        "readopt-default-columns-recorded-as-named",
        "default returned columns are recorded as a list: ADD COLUMN is never followed",
        ADN, "columns = None if config.returned_columns == every else",
        "columns = list(config.returned_columns) if True else", (READOPT,), group=ADDED,
    ),
    Mutation(
        "readopt-rebuild-drops-the-old-index-first",
        "a rebuild drops the old index before building the new one: searches sort the "
        "whole table meanwhile",
        ADN, "concurrent=[drop(new), drop(old), create],",
        "concurrent=[drop(new), drop(old), drop(config.hnsw_index_name), create],",
        (READOPT,), group=ADDED,
    ),
    Mutation(
        "readopt-dropped-column-unnoticed",
        "a column dropped under the adoption is not named: searches fail with "
        "'column t.price does not exist' and no repair command",
        CAT, "    if gone:\n", "    if False:\n", (READOPT,), group=ADDED,
    ),
    # --- Benchmark run (_search_bench_run.py) ---
    Mutation(
        "bench-single-pass-not-forced",
        "the benchmark re-raises the plan guard for single-pass methods instead of forcing the "
        "index (seqscan off)",
        BR, "if method.family != SINGLE_PASS:\n                raise",
        "if True:\n                raise", (SEARCH_BENCH,), group=ADDED,
    ),
    # --- Alembic integration (migrate.py) ---
    Mutation(
        "migrate-include-name-version-only",
        "include_name skips only the version table: alembic check proposes dropping "
        "mrl_pg_tuning",
        MIG, 'return not (type_ == "table" and name in OWN_TABLES)',
        'return not (type_ == "table" and name == VERSION_TABLE)', (ORM,), group=ADDED,
    ),
)

MUTATIONS: tuple[Mutation, ...] = BASELINE_MUTATIONS + ADDED_MUTATIONS


# --- Applying a mutation -----------------------------------------------------------------


def mutate(text: str, mutation: Mutation) -> str | None:
    """The mutated source, or None when the snippet is not (exactly once) where expected."""
    start = 0
    if mutation.within is not None:
        if text.count(mutation.within) != 1:
            return None
        start = text.index(mutation.within)
    region = text[start:]
    if mutation.regex:
        matches = list(re.finditer(mutation.find, region))
        if not matches or (mutation.within is None and len(matches) != 1):
            return None
        match = matches[0]
        begin, end = start + match.start(), start + match.end()
        replacement = match.expand(mutation.replace)
    else:
        count = region.count(mutation.find)
        if count == 0 or (mutation.within is None and count != 1):
            return None
        begin = start + region.index(mutation.find)
        end = begin + len(mutation.find)
        replacement = mutation.replace
    mutated = text[:begin] + replacement + text[end:]
    return None if mutated == text else mutated


def forget_bytecode(path: Path) -> None:
    """Remove cached bytecode of ``path`` so the next import compiles the current source."""
    for cached in path.parent.glob(f"__pycache__/{path.stem}.*.pyc"):
        cached.unlink(missing_ok=True)


class Applied:
    """Context manager: the mutated file in place; the original bytes and times restored."""

    def __init__(self, path: Path, mutated: str) -> None:
        self.path = path
        self.mutated = mutated.encode("utf-8")
        self.original = path.read_bytes()
        stat = path.stat()
        self.times = (stat.st_atime_ns, stat.st_mtime_ns)

    def __enter__(self) -> Applied:
        try:
            self.path.write_bytes(self.mutated)
            forget_bytecode(self.path)
        except BaseException:
            self.restore()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def restore(self) -> None:
        self.path.write_bytes(self.original)
        os.utime(self.path, ns=self.times)
        forget_bytecode(self.path)


# --- Running pytest ----------------------------------------------------------------------


@dataclass
class PytestRun:
    returncode: int | None  # None: timed out
    seconds: float
    output: str

    @property
    def passed(self) -> bool:
        return self.returncode == 0

    def first_failure(self) -> str:
        """The first FAILED/ERROR line of pytest's short summary, or the last output line."""
        if self.returncode is None:
            return "timed out"
        lines = [line.strip() for line in self.output.splitlines() if line.strip()]
        for line in lines:
            if line.startswith(("FAILED ", "ERROR ")):
                return line[:240]
        return (lines[-1] if lines else f"exit status {self.returncode}")[:240]


def _kill_group(process: subprocess.Popen[str]) -> None:
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_pytest(python: str, root: Path, tests: Sequence[str], timeout: float) -> PytestRun:
    """``nice -n 19 python -m pytest -x -q -p no:cacheprovider TESTS`` in ``root``."""
    command = ["nice", "-n", "19", python, "-m", "pytest", *PYTEST_FLAGS, *tests]
    started = time.monotonic()
    # Own process group: a timeout or Ctrl-C ends pytest and whatever it started.
    process = subprocess.Popen(
        command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
        returncode: int | None = process.returncode
    except subprocess.TimeoutExpired:
        _kill_group(process)
        output, _ = process.communicate()
        returncode = None
    except BaseException:
        _kill_group(process)
        raise
    return PytestRun(returncode, time.monotonic() - started, output)


# --- The run -----------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    description: str
    file: str
    outcome: str
    seconds: float
    tests: list[str]
    detail: str = ""
    group: str = BASELINE


@dataclass
class Report:
    root: str
    commit: str | None
    python: str
    timeout: float
    baseline_seconds: float = 0.0
    seconds: float = 0.0
    results: list[Result] = field(default_factory=list)

    def totals(self, group: str | None = None) -> dict[str, int]:
        """Counts over all results, or over one group's."""
        counts = {KILLED: 0, SURVIVED: 0, NOT_APPLICABLE: 0}
        for result in self.results:
            if group is None or result.group == group:
                counts[result.outcome] += 1
        return {"tried": counts[KILLED] + counts[SURVIVED], "killed": counts[KILLED],
                "survived": counts[SURVIVED], "not_applicable": counts[NOT_APPLICABLE]}

    def groups(self) -> list[str]:
        present = {r.group for r in self.results}
        return [g for g in GROUPS if g in present]

    def as_json(self) -> dict[str, object]:
        data = asdict(self)
        data["totals"] = self.totals()
        data["totals_by_group"] = {g: self.totals(g) for g in self.groups()}
        return data


def _commit(root: Path) -> str | None:
    result = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"],
                            capture_output=True, text=True, check=False)
    return result.stdout.strip() or None


def _python(root: Path, given: str | None) -> str:
    if given:
        return given
    venv = root / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _check_imports_from_root(python: str, root: Path) -> None:
    """Refuse to run if ``mrl_pg`` would be imported from somewhere other than ``root``."""
    result = subprocess.run([python, "-c", "import mrl_pg; print(mrl_pg.__file__)"],
                            cwd=root, capture_output=True, text=True, check=False)
    location = Path(result.stdout.strip()).resolve() if result.returncode == 0 else None
    if location is None or not location.is_relative_to(root):
        raise SystemExit(f"mutation_run: {python} imports mrl_pg from {location or '?'}, "
                         f"not from {root}: install the root's package (pip install -e)")


def _selected(names: Sequence[str] | None, group: str | None = None) -> list[Mutation]:
    if not names:
        return [m for m in MUTATIONS if group is None or m.group == group]
    by_name = {m.name: m for m in MUTATIONS}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SystemExit(f"mutation_run: unknown mutation(s): {', '.join(unknown)}")
    return [by_name[n] for n in names]


def _plan(root: Path, mutations: Sequence[Mutation]) -> list[tuple[Mutation, str | None, str]]:
    """(mutation, mutated source or None, why not applicable)."""
    plan: list[tuple[Mutation, str | None, str]] = []
    for mutation in mutations:
        path = root / mutation.file
        missing = [t for t in mutation.tests if not (root / t).exists()]
        if not path.is_file():
            plan.append((mutation, None, f"{mutation.file} does not exist"))
        elif missing:
            plan.append((mutation, None, f"missing test file {missing[0]}"))
        else:
            mutated = mutate(path.read_text(encoding="utf-8"), mutation)
            why = "" if mutated is not None else "snippet not found (or not unique)"
            plan.append((mutation, mutated, why))
    return plan


def _print_table(results: Sequence[Result]) -> None:
    width = max([len(r.name) for r in results] + [8])
    fwidth = max([len(r.file) for r in results] + [4])
    print(f"\n{'mutation':<{width}}  {'group':<8}  {'file':<{fwidth}}  {'outcome':<14}  seconds")
    print(f"{'-' * width}  {'-' * 8}  {'-' * fwidth}  {'-' * 14}  -------")
    for r in results:
        print(f"{r.name:<{width}}  {r.group:<8}  {r.file:<{fwidth}}  {r.outcome:<14}  "
              f"{r.seconds:7.1f}")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--root", required=True, type=Path, help="source tree to mutate")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this mutation (repeatable)")
    parser.add_argument("--group", choices=GROUPS,
                        help="run only this group's mutations (baseline: the 48 of the "
                        "baseline run; added: behaviour added since)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds per pytest run (default {DEFAULT_TIMEOUT:.0f})")
    parser.add_argument("--python", help="interpreter for pytest (default ROOT/.venv/bin/python)")
    parser.add_argument("--full-suite", action="store_true",
                        help="run all of tests/ instead of each mutation's selection (slow; "
                        "with --only, to see whether any test at all kills a survivor)")
    parser.add_argument("--list", action="store_true",
                        help="list the mutations and whether they apply; run nothing")
    args = parser.parse_args(argv)

    root: Path = args.root.resolve()
    mutations = _selected(args.only, args.group)
    if args.full_suite:
        mutations = [replace(m, tests=("tests",)) for m in mutations]
    plan = _plan(root, mutations)
    if args.list:
        for mutation, mutated, why in plan:
            state = "applies" if mutated is not None else f"NOT APPLICABLE: {why}"
            print(f"{mutation.name:<44} {mutation.group:<8} {mutation.file:<44} {state}")
            print(f"    {mutation.description}\n    tests: {' '.join(mutation.tests)}")
        return 0

    python = _python(root, args.python)
    _check_imports_from_root(python, root)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    report = Report(root=str(root), commit=_commit(root), python=python, timeout=args.timeout)
    started = time.monotonic()

    selection = list(dict.fromkeys(t for m, mutated, _ in plan if mutated for t in m.tests))
    try:
        if selection:
            print(f"baseline: {' '.join(selection)}", flush=True)
            baseline = run_pytest(python, root, selection, args.timeout)
            report.baseline_seconds = round(baseline.seconds, 1)
            if not baseline.passed:
                print(baseline.output[-4000:], file=sys.stderr)
                print(f"mutation_run: the unmutated selection fails "
                      f"({baseline.first_failure()}); nothing was mutated", file=sys.stderr)
                return 2
            print(f"baseline passed in {baseline.seconds:.1f} s\n", flush=True)
        for number, (mutation, mutated, why) in enumerate(plan, start=1):
            prefix = f"[{number}/{len(plan)}] {mutation.name}"
            if mutated is None:
                report.results.append(Result(mutation.name, mutation.description, mutation.file,
                                             NOT_APPLICABLE, 0.0, list(mutation.tests), why,
                                             mutation.group))
                print(f"{prefix}: {NOT_APPLICABLE} ({why})", flush=True)
                continue
            with Applied(root / mutation.file, mutated):
                run = run_pytest(python, root, mutation.tests, args.timeout)
            outcome = SURVIVED if run.passed else KILLED
            detail = "" if run.passed else run.first_failure()
            report.results.append(Result(mutation.name, mutation.description, mutation.file,
                                         outcome, round(run.seconds, 1), list(mutation.tests),
                                         detail, mutation.group))
            print(f"{prefix}: {outcome} in {run.seconds:.1f} s"
                  + (f" ({detail})" if detail else ""), flush=True)
    except KeyboardInterrupt:
        print("\nmutation_run: interrupted; no file is left mutated", file=sys.stderr)
        return 130
    finally:
        report.seconds = round(time.monotonic() - started, 1)
        if args.json and report.results:
            args.json.write_text(json.dumps(report.as_json(), indent=2) + "\n")

    _print_table(report.results)
    print()
    for group in [*report.groups(), None]:
        totals = report.totals(group)
        label = f"{group} mutations" if group else "all"
        print(f"{label + ':':<20} tried {totals['tried']}, killed {totals['killed']}, "
              f"survived {totals['survived']}, not applicable {totals['not_applicable']}")
    print(f"{report.seconds:.0f} s in all (unmutated selection {report.baseline_seconds:.0f} s)")
    survivors = [r for r in report.results if r.outcome == SURVIVED]
    if survivors:
        print("\nsurvived (the tests did not notice):")
        for r in survivors:
            print(f"  {r.name} [{r.group}]: {r.description}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
