"""Row-level security on the tenant column: which policy forms keep the search's plans.

    python -m mrl_pg.bench.rls [--rows 100000] [--dim 768] [--prefix-dim 256] [--queries 30]

Builds ``items(id bigserial, tenant_id int, title text, embedding vector(N))`` in a
database of its own (one large tenant with 70% of the rows, one small tenant with
0.1%, a tiny one with 5 rows, and 100 others sharing the rest), adopts it
(:func:`mrl_pg.index.adopt.adopt_table`), then for each policy form, applied in turn,
searches as two roles (NOBYPASSRLS; the large tenant's and the small tenant's)
through psycopg (``mrl_pg.psycopg.search``), psycopg with ``tenant=``, the ORM
(``mrl_pg.sqlalchemy.search`` on the model's column) and the SQL function
``mrl_search_items``. Per cell: the candidate scan the plan chose, its estimated
and actual rows, median latency, shared buffers per query (EXPLAIN ANALYZE
BUFFERS; auto_explain for the ORM and the SQL function), recall@10 against exact
search within the tenant (as the superuser), rows returned, and rows of another
tenant returned (always 0). The database and the roles are dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from mrl_pg import TableConfig
from mrl_pg import psycopg as mrl_psycopg
from mrl_pg.bench.synthetic import make_corpus, make_queries
from mrl_pg.db import configure_connection
from mrl_pg.index.adopt import adopt_table
from mrl_pg.schema.catalog import table_config
from mrl_pg.schema.rls import (
    DEFAULT_TENANT_SETTING,
    role_policy_ddl,
    set_tenant,
    tenant_index_ddl,
    tenant_policy_ddl,
    tenant_setting_expression,
)
from mrl_pg.schema.search_function import SEARCH_FUNCTION_ARGS
from mrl_pg.statement.plans import plan_tree

LARGE, SMALL, TINY = 1, 2, 3
SEED = 7
OTHER_TENANTS = range(10, 110)
TABLE = "items"


# --- the table -------------------------------------------------------------------------

def tenant_column(rows: int, *, large_share: float = 0.7, small_rows: int | None = None,
                  tiny_rows: int = 5, seed: int = 0) -> npt.NDArray[np.int32]:
    """Tenant of each row: LARGE ``large_share``, SMALL ``small_rows`` (0.1%), TINY
    ``tiny_rows``, the rest spread over 100 other tenants; shuffled, independent of the
    vectors (the hard case for a filtered HNSW scan)."""
    small_rows = max(20, rows // 1000) if small_rows is None else small_rows
    large = int(rows * large_share)
    tenants = np.empty(rows, dtype=np.int32)
    tenants[:large] = LARGE
    tenants[large:large + small_rows] = SMALL
    tenants[large + small_rows:large + small_rows + tiny_rows] = TINY
    rest = large + small_rows + tiny_rows
    rng = np.random.default_rng([seed, 5])
    tenants[rest:] = rng.integers(OTHER_TENANTS.start, OTHER_TENANTS.stop, size=rows - rest)
    rng.shuffle(tenants)
    return tenants


def create_items(conn: psycopg.Connection[Any], rows: int, dim: int, prefix_dim: int, *,
                 seed: int = SEED, schema: str | None = None,
                 tenants: npt.NDArray[np.int32] | None = None) -> TableConfig:
    """Create, load, analyze and adopt the table; returns its description."""
    table = sql.Identifier(schema, TABLE) if schema else sql.Identifier(TABLE)
    data = make_corpus(rows, dim, seed=seed)
    tenants = tenant_column(rows, seed=seed) if tenants is None else tenants
    conn.execute(sql.SQL(
        "CREATE TABLE {} (id bigserial PRIMARY KEY, tenant_id int NOT NULL, title text, "
        "embedding vector({}) NOT NULL)").format(table, sql.Literal(dim)))
    copy = sql.SQL("COPY {} (tenant_id, title, embedding) FROM STDIN (FORMAT BINARY)")
    with conn.transaction(), conn.cursor() as cur, cur.copy(copy.format(table)) as out:
        out.set_types(["int4", "text", "vector"])
        for i in range(rows):
            out.write_row((int(tenants[i]), f"item {i}", data.embeddings[i]))
    conn.execute(sql.SQL("VACUUM ANALYZE {}").format(table))
    config = table_config(conn, TABLE, embedding="embedding", prefix_dim=prefix_dim,
                                    schema=schema, tenant="tenant_id")
    adopt_table(conn, config, maintenance_work_mem="1GB")
    conn.execute(sql.SQL("ANALYZE {}").format(table))
    return config


def create_roles(conn: psycopg.Connection[Any], config: TableConfig, roles: list[str]) -> None:
    """Plain roles (no superuser, NOBYPASSRLS, not the owner) allowed to read and search."""
    schema = sql.Identifier(config.schema or "public")
    for role in roles:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN NOBYPASSRLS").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
            schema, sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(
            config.table, sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA {} TO {}").format(
            schema, sql.Identifier(role)))  # the bigserial id
        conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {}({}) TO {}").format(
            config.qualified(config.search_function_name), sql.SQL(SEARCH_FUNCTION_ARGS),
            sql.Identifier(role)))


def drop_roles(conn: psycopg.Connection[Any], roles: list[str]) -> None:
    for role in roles:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


# --- the policy forms ------------------------------------------------------------------

Ddl = Callable[[TableConfig, dict[str, int]], list[sql.Composable]]


@dataclass(frozen=True)
class Pattern:
    """A policy form: its DDL (given role -> tenant), whether a session sets the tenant,
    whether the tenant column has a btree."""

    name: str
    ddl: Ddl
    uses_setting: bool
    btree: bool = True
    recommended: bool = False


def _helper(config: TableConfig, name: str) -> sql.Identifier:
    return config.qualified(f"{config.name}_{name}")


def _setting_policy(config: TableConfig, roles: dict[str, int]) -> list[sql.Composable]:
    return list(tenant_policy_ddl(config, roles=list(roles)))


def _role_policies(config: TableConfig, roles: dict[str, int]) -> list[sql.Composable]:
    return [s for role, tenant in roles.items() for s in role_policy_ddl(config, role, tenant)]


def _raw_policy(config: TableConfig, roles: dict[str, int],
                value: sql.Composable) -> list[sql.Composable]:
    to = sql.SQL(", ").join(sql.Identifier(r) for r in roles)
    return [
        sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(config.table),
        sql.SQL("CREATE POLICY tenant_isolation ON {} TO {} USING (tenant_id = {}) "
                "WITH CHECK (tenant_id = {})").format(config.table, to, value, value),
    ]


def _subselect_setting(config: TableConfig, roles: dict[str, int]) -> list[sql.Composable]:
    value = sql.SQL("(SELECT {})").format(tenant_setting_expression(config))
    return _raw_policy(config, roles, value)


def _role_map(config: TableConfig, roles: dict[str, int]) -> list[sql.Composable]:
    mapping = _helper(config, "tenant_roles")
    return [
        sql.SQL("CREATE TABLE {} (role_name name PRIMARY KEY, tenant_id int NOT NULL)").format(
            mapping),
        *(sql.SQL("INSERT INTO {} VALUES ({}, {})").format(
            mapping, sql.Literal(role), sql.Literal(tenant)) for role, tenant in roles.items()),
        sql.SQL("GRANT SELECT ON {} TO {}").format(
            mapping, sql.SQL(", ").join(sql.Identifier(r) for r in roles)),
    ]


def _role_map_function(config: TableConfig, roles: dict[str, int]) -> list[sql.Composable]:
    function = _helper(config, "role_tenant")
    return [
        *_role_map(config, roles),
        sql.SQL("CREATE FUNCTION {}() RETURNS int LANGUAGE sql STABLE "
                "AS $$ SELECT tenant_id FROM {} WHERE role_name = current_user $$").format(
            function, _helper(config, "tenant_roles")),
        *_raw_policy(config, roles, sql.SQL("{}()").format(function)),
    ]


def _role_map_subselect(config: TableConfig, roles: dict[str, int]) -> list[sql.Composable]:
    value = sql.SQL("(SELECT m.tenant_id FROM {} AS m WHERE m.role_name = current_user)").format(
        _helper(config, "tenant_roles"))
    return [*_role_map(config, roles), *_raw_policy(config, roles, value)]


PATTERNS = [
    Pattern("setting", _setting_policy, uses_setting=True, recommended=True),
    Pattern("role constant", _role_policies, uses_setting=False, recommended=True),
    Pattern("role-map function", _role_map_function, uses_setting=False),
    Pattern("setting, no btree", _setting_policy, uses_setting=True, btree=False),
    Pattern("setting in sub-SELECT", _subselect_setting, uses_setting=True),
    Pattern("role-map sub-SELECT", _role_map_subselect, uses_setting=False),
]
PATTERN_SQL = {
    "setting": "tenant_id = CAST(nullif(current_setting('app.tenant_id', true), '') AS int4)",
    "role constant": "TO app_a USING (tenant_id = 1); TO app_b USING (tenant_id = 2)",
    "role-map function": "tenant_id = role_tenant()  -- STABLE SQL fn: SELECT tenant_id FROM "
                         "tenant_roles WHERE role_name = current_user",
    "setting, no btree": "as 'setting', without the btree on tenant_id",
    "setting in sub-SELECT": "tenant_id = (SELECT CAST(nullif(current_setting("
                             "'app.tenant_id', true), '') AS int4))",
    "role-map sub-SELECT": "tenant_id = (SELECT tenant_id FROM tenant_roles "
                           "WHERE role_name = current_user)",
}


def apply_pattern(conn: psycopg.Connection[Any], config: TableConfig, pattern: Pattern,
                  roles: dict[str, int]) -> None:
    """Drop every policy and helper of an earlier pattern, then create this one's."""
    with conn.transaction():
        policies = conn.execute(
            "SELECT policyname FROM pg_policies WHERE schemaname = %s AND tablename = %s",
            (config.schema, config.name)).fetchall()
        for (policy,) in policies:
            conn.execute(sql.SQL("DROP POLICY {} ON {}").format(
                sql.Identifier(policy), config.table))
        conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(
            _helper(config, "role_tenant")))
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_helper(config, "tenant_roles")))
        for statement in pattern.ddl(config, roles):
            conn.execute(cast(sql.Composed, statement))
        if pattern.btree:
            conn.execute(tenant_index_ddl(config))
        else:
            conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(
                config.qualified(f"{config.name}_tenant_id_idx")))
    conn.execute(sql.SQL("ANALYZE {}").format(config.table))


# --- running as a role -----------------------------------------------------------------

AUTO_EXPLAIN = [
    "LOAD 'auto_explain'", "SET auto_explain.log_min_duration = 0",
    "SET auto_explain.log_nested_statements = on", "SET auto_explain.log_analyze = on",
    "SET auto_explain.log_buffers = on", "SET auto_explain.log_format = json",
    "SET client_min_messages = log",
]


def role_connection(dsn: str, role: str, *, auto_explain: bool = False,
                    settings: tuple[tuple[str, str], ...] = ()) -> psycopg.Connection[Any]:
    """A connection acting as ``role`` (``SET ROLE``, as PostgREST does), types registered;
    ``settings`` are set for the session first."""
    conn = psycopg.connect(dsn, autocommit=True)
    configure_connection(conn)
    if auto_explain:
        for statement in AUTO_EXPLAIN:
            conn.execute(statement)  # set before SET ROLE: they need a superuser
    for name, value in settings:
        conn.execute("SELECT set_config(%s, %s, false)", (name, value))
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    return conn


@contextmanager
def as_tenant(conn: psycopg.Connection[Any], tenant: int | None) -> Iterator[None]:
    """A transaction with the tenant setting set (None: a role-bound pattern, no setting)."""
    with conn.transaction():
        if tenant is not None:
            set_tenant(conn, tenant)
        yield


@contextmanager
def captured_plans(conn: psycopg.Connection[Any]) -> Iterator[list[Any]]:
    """auto_explain's JSON plans of the adaptive statements run meanwhile on ``conn``."""
    plans: list[Any] = []

    def keep(diagnostic: psycopg.errors.Diagnostic) -> None:
        message = diagnostic.message_primary or ""
        if "WITH candidates" in message and "\n" in message:
            plan = json.loads(message.split("\n", 1)[1])
            if "WITH candidates" in plan.get("Query Text", ""):
                plans.append([plan])

    conn.add_notice_handler(keep)
    try:
        yield plans
    finally:
        conn.remove_notice_handler(keep)


def sql_function(conn: psycopg.Connection[Any], config: TableConfig, query: Any, *, k: int = 10,
                 filter: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """The adopted table's SQL function, called as PostgREST's RPC would."""
    statement = sql.SQL("SELECT * FROM {}(%s, %s, NULL, %s::jsonb)").format(
        config.qualified(config.search_function_name))
    return conn.execute(statement, (query, k, json.dumps(filter or {}))).fetchall()


# --- reading plans ---------------------------------------------------------------------

@dataclass(frozen=True)
class FirstStage:
    """The scan that found the candidates: what it read, and how many rows it expected/saw."""

    kind: str  # "hnsw", "btree", "seq scan", "empty" (a one-time filter stopped it)
    index: str | None
    estimated_rows: float
    rows_read: float  # rows the scan returned plus rows its filter removed

    def describe(self) -> str:
        if self.kind == "hnsw":
            return "HNSW index scan"
        if self.kind == "btree":
            return "btree + exact sort"
        return self.kind


def _own_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    # A node and its children, but not its InitPlans (a policy's sub-SELECT is one).
    yield node
    for child in node.get("Plans", []):
        if child.get("Parent Relationship") not in ("InitPlan", "SubPlan"):
            yield from _own_nodes(child)


def first_stage(plan: Any) -> FirstStage:
    """The candidate scan of an ``EXPLAIN (FORMAT JSON)`` plan of the adaptive statement."""
    for node in plan_tree(plan):
        if node.get("Subplan Name") != "CTE candidates":
            continue
        for scan in _own_nodes(node):
            kind = scan.get("Node Type")
            if kind not in ("Index Scan", "Index Only Scan", "Bitmap Heap Scan", "Seq Scan"):
                continue
            index = scan.get("Index Name")
            if kind == "Bitmap Heap Scan":
                index = next((n.get("Index Name") for n in plan_tree(scan)
                              if n.get("Node Type") == "Bitmap Index Scan"), None)
            if kind == "Seq Scan":
                label = "seq scan"
            elif index is not None and "hnsw" in index:
                label = "hnsw"
            else:
                label = "btree"
            loops = float(scan.get("Actual Loops", 1) or 1)
            read = (float(scan.get("Actual Rows", 0)) + float(scan.get("Rows Removed by Filter", 0))
                    + float(scan.get("Rows Removed by Index Recheck", 0))) * loops
            if scan.get("Actual Loops") == 0:
                label = "empty"
            return FirstStage(label, index, float(scan.get("Plan Rows", 0)), read)
    raise ValueError("no candidate scan in this plan")


def shared_buffers(plan: Any) -> int:
    """Shared buffers hit and read by the whole statement (its top node)."""
    top = next(plan_tree(plan))
    return int(top.get("Shared Hit Blocks", 0)) + int(top.get("Shared Read Blocks", 0))


def seq_scanned_tables(plan: Any) -> list[str]:
    """Relations the plan reads with a sequential scan (that ran, in an analyzed plan:
    the exact scan that stands in for a short walk is planned but runs only then)."""
    return [str(n.get("Relation Name")) for n in plan_tree(plan)
            if n.get("Node Type") == "Seq Scan" and n.get("Actual Loops", 1) != 0]


# --- the benchmark ---------------------------------------------------------------------

FRONT_ENDS = ("psycopg", "psycopg tenant=", "ORM", "SQL function")


@dataclass
class Cell:
    pattern: str
    tenant: str
    front_end: str
    stage: FirstStage | None
    ms: float
    buffers: float
    recall: float
    rows_min: int
    rows_max: int
    leaks: int
    note: str = ""


def orm_model(config: TableConfig) -> tuple[Any, Any] | None:
    """A plain declarative model of the table and ``mrl_pg.sqlalchemy`` (None without
    SQLAlchemy)."""
    try:
        from pgvector.sqlalchemy import VECTOR
        from sqlalchemy import BigInteger, Integer, Text
        from sqlalchemy.orm import DeclarativeBase, mapped_column

        from mrl_pg import sqlalchemy as orm
    except ImportError:
        return None

    class Base(DeclarativeBase):
        pass

    # The user's own model of the table: no mrl_pg mixin, the search takes its column.
    item = type("Item", (Base,), {
        "__tablename__": TABLE,
        "__table_args__": {"schema": config.schema},
        "id": mapped_column(BigInteger, primary_key=True),
        "tenant_id": mapped_column(Integer),
        "title": mapped_column(Text),
        "embedding": mapped_column(VECTOR(config.full_dim)),
    })
    return item, orm


def orm_engine(dsn: str, role: str, *, auto_explain: bool = False) -> Any:
    """An engine whose connections act as ``role`` (and log plans with auto_explain)."""
    from sqlalchemy import event

    from mrl_pg import create_engine

    engine = create_engine(dsn)

    @event.listens_for(engine, "connect")
    def _as_role(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cur:
            for statement in AUTO_EXPLAIN if auto_explain else []:
                cur.execute(statement)
            cur.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        dbapi_connection.commit()

    return engine


class Bench:
    def __init__(self, dsn: str, config: TableConfig, queries: npt.NDArray[np.float32],
                 roles: dict[str, int], *, k: int = 10, explained: int = 5) -> None:
        self.dsn, self.config, self.queries, self.roles = dsn, config, queries, roles
        self.k, self.explained = k, explained
        self.truth: dict[int, list[set[Any]]] = {}
        self.orm = orm_model(config)

    def ground_truth(self, tenant: int) -> list[set[Any]]:
        if tenant not in self.truth:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                configure_connection(conn)
                self.truth[tenant] = [
                    {r.id for r in mrl_psycopg.exact_search(conn, self.config, q, k=self.k,
                                                       where={"tenant_id": tenant})}
                    for q in self.queries]
        return self.truth[tenant]

    def _cell(self, pattern: Pattern, label: str, front_end: str, tenant: int,
              run: Callable[[Any], list[tuple[Any, int]]], plans: list[Any]) -> Cell:
        truth = self.ground_truth(tenant)
        run(self.queries[0])  # warm-up
        times, recalls, counts, leaks = [], [], [], 0
        for q, expected in zip(self.queries, truth, strict=True):
            start = time.perf_counter()
            found = run(q)
            times.append(time.perf_counter() - start)
            counts.append(len(found))
            leaks += sum(1 for _, t in found if t != tenant)
            if expected:
                recalls.append(len({key for key, _ in found} & expected) / len(expected))
        stage = first_stage(plans[0]) if plans else None
        buffers = statistics.median(shared_buffers(p) for p in plans) if plans else float("nan")
        return Cell(pattern.name, label, front_end, stage, statistics.median(times) * 1000,
                    buffers, statistics.mean(recalls) if recalls else 1.0, min(counts),
                    max(counts), leaks)

    def run(self, pattern: Pattern, role: str, label: str,
            front_ends: tuple[str, ...] = FRONT_ENDS, sql_filter: bool = False, *,
            tenant: int | None = None, settings: tuple[tuple[str, str], ...] = ()
            ) -> list[Cell]:
        """Cells of one pattern and role (``tenant``: another one than the role's, for a
        setting pattern; ``settings``: session settings of the role's connections)."""
        tenant = self.roles[role] if tenant is None else tenant
        setting = tenant if pattern.uses_setting else None
        config, k, cells = self.config, self.k, []
        sample = self.queries[: self.explained]
        with role_connection(self.dsn, role, settings=settings) as conn, \
                role_connection(self.dsn, role, auto_explain=True, settings=settings) as traced:
            for front_end in front_ends:
                kw: dict[str, Any] = {"tenant": tenant} if front_end == "psycopg tenant=" else {}
                if front_end.startswith("psycopg"):
                    plans = []
                    for q in sample:
                        with as_tenant(conn, setting):
                            plans.append(mrl_psycopg.explain(conn, config, q, k=k, analyze=True,
                                                        as_json=True, **kw))

                    def psycopg_run(q: Any, kw: dict[str, Any] = kw) -> list[tuple[Any, int]]:
                        with as_tenant(conn, setting):
                            return [(r.id, r.tenant_id)
                                    for r in mrl_psycopg.search(conn, config, q, k=k, **kw)]

                    cells.append(self._cell(pattern, label, front_end, tenant, psycopg_run,
                                            plans))
                elif front_end == "SQL function":
                    filters = [None, {"tenant_id": tenant}] if sql_filter else [None]
                    for filter in filters:
                        with captured_plans(traced) as plans:
                            for q in sample:
                                with as_tenant(traced, setting):
                                    sql_function(traced, config, q, k=k, filter=filter)

                        def function_run(q: Any, filter: Any = filter) -> list[tuple[Any, int]]:
                            with as_tenant(conn, setting):
                                return [(r[0], r[1]) for r in sql_function(
                                    conn, config, q, k=k, filter=filter)]

                        name = "SQL function" if filter is None else "SQL function filter="
                        cells.append(self._cell(pattern, label, name, tenant, function_run,
                                                plans))
                elif front_end == "ORM":
                    cells.append(self._orm_cell(pattern, role, label, tenant, setting, sample))
        return cells

    def _orm_cell(self, pattern: Pattern, role: str, label: str, tenant: int,
                  setting: int | None, sample: Any) -> Cell:
        if self.orm is None:
            return Cell(pattern.name, label, "ORM", None, float("nan"), float("nan"), float("nan"),
                        0, 0, 0, "SQLAlchemy not installed")
        from sqlalchemy import text
        from sqlalchemy.orm import Session

        item, orm = self.orm
        engine, traced = orm_engine(self.dsn, role), orm_engine(self.dsn, role,
                                                                   auto_explain=True)
        tenant_sql = text("SELECT set_config(:name, :value, true)")

        def search(session: Any, q: Any) -> list[tuple[Any, int]]:
            if setting is not None:
                session.execute(tenant_sql, {"name": DEFAULT_TENANT_SETTING,
                                             "value": str(setting)})
            return [(row.id, row.tenant_id) for row, _ in orm.search(
                session, item.embedding, q, k=self.k)]

        try:
            with Session(traced) as session:
                driver = session.connection().connection.driver_connection
                if not isinstance(driver, psycopg.Connection):
                    raise RuntimeError("the ORM engine is not on psycopg")
                with captured_plans(driver) as plans:
                    for q in sample:
                        search(session, q)
                        session.commit()
            with Session(engine) as session:
                def orm_run(q: Any) -> list[tuple[Any, int]]:
                    try:
                        return search(session, q)
                    finally:
                        session.commit()

                return self._cell(pattern, label, "ORM", tenant, orm_run, plans)
        except (TypeError, AttributeError) as exc:  # an ORM without the column route
            return Cell(pattern.name, label, "ORM", None, float("nan"), float("nan"),
                        float("nan"), 0, 0, 0, f"n/a: {exc}")
        finally:
            engine.dispose()
            traced.dispose()


def format_cells(cells: list[Cell]) -> list[str]:
    header = (f"{'pattern':22} {'tenant':13} {'front end':21} {'candidate scan':19} "
              f"{'est.rows':>8} {'read':>7} {'ms':>7} {'buffers':>8} {'recall':>6} "
              f"{'rows':>5} {'leaks':>5}")
    lines = [header, "-" * len(header)]
    for c in cells:
        if c.stage is None:
            lines.append(f"{c.pattern:22} {c.tenant:13} {c.front_end:21} {c.note}")
            continue
        rows = f"{c.rows_min}" if c.rows_min == c.rows_max else f"{c.rows_min}-{c.rows_max}"
        lines.append(
            f"{c.pattern:22} {c.tenant:13} {c.front_end:21} {c.stage.describe():19} "
            f"{c.stage.estimated_rows:8.0f} {c.stage.rows_read:7.0f} {c.ms:7.1f} "
            f"{c.buffers:8.0f} {c.recall:6.3f} {rows:>5} {c.leaks:5d}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--prefix-dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--dsn", default=None,
                        help="server (default: MRL_PG_DSN, DATABASE_URL or embedded); "
                             "a database mrl_pg_rls_bench is created there and dropped")
    parser.add_argument("--keep", action="store_true", help="keep the database and roles")
    args = parser.parse_args()
    from mrl_pg.server import resolve_dsn

    server = args.dsn or resolve_dsn(embedded=True)
    database = "mrl_pg_rls_bench"
    suffix = uuid.uuid4().hex[:6]
    role_a, role_b = f"mrl_rls_app_a_{suffix}", f"mrl_rls_app_b_{suffix}"
    roles = {role_a: LARGE, role_b: SMALL}
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(database)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    dsn = make_conninfo(server, dbname=database)
    started = time.perf_counter()
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            configure_connection(conn)
            config = create_items(conn, args.rows, args.dim, args.prefix_dim)
            create_roles(conn, config, list(roles))
            versions = conn.execute(
                "SELECT current_setting('server_version'), "
                "(SELECT extversion FROM pg_extension WHERE extname = 'vector')").fetchone()
            sizes: dict[int, int] = dict(conn.execute(
                "SELECT tenant_id, count(*) FROM items WHERE tenant_id IN (%s, %s) "
                "GROUP BY 1", (LARGE, SMALL)).fetchall())
        built = time.perf_counter() - started
        print(f"$ python -m mrl_pg.bench.rls --rows {args.rows} --dim {args.dim} "
              f"--prefix-dim {args.prefix_dim} --queries {args.queries}")
        print(f"PostgreSQL {versions[0] if versions else '?'}, pgvector "
              f"{versions[1] if versions else '?'}; {args.rows:,} rows, vector({args.dim}), "
              f"prefix {args.prefix_dim}; built and adopted in {built:.0f} s")
        print(f"large tenant {LARGE}: {sizes.get(LARGE, 0):,} rows (role app_a), small tenant "
              f"{SMALL}: {sizes.get(SMALL, 0):,} rows (role app_b); k=10, oversample 8 "
              f"(pool 80), {args.queries} queries per cell, median ms; buffers per query "
              "(median of 5 EXPLAIN ANALYZE BUFFERS); recall@10 against exact search in the "
              "tenant; 'read' = rows the candidate scan returned or filtered out")
        print()
        for pattern in PATTERNS:
            print(f"{pattern.name}: {PATTERN_SQL[pattern.name]}")
        print(flush=True)
        queries = make_queries(args.queries, args.dim, seed=SEED)  # the corpus's mixture
        bench = Bench(dsn, config, queries, roles)
        all_cells: list[Cell] = []
        print("\n".join(format_cells([])), flush=True)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for pattern in PATTERNS:
                apply_pattern(conn, config, pattern, roles)
                for role, label in ((role_a, "large (70%)"), (role_b, "small (0.1%)")):
                    cells = bench.run(pattern, role, label, sql_filter=pattern.name == "setting")
                    print("\n".join(format_cells(cells)[2:]), flush=True)
                    all_cells += cells
            print()
            print("The tiny tenant (5 rows, fewer than k) as app_b, psycopg: with the btree, and "
                  "walked through HNSW (no btree, enable_seqscan off: what a misjudging planner "
                  "does), where the iterative scan stops after hnsw.max_scan_tuples")
            tiny = []
            for pattern, settings in ((PATTERNS[0], ()),
                                      (PATTERNS[3], (("enable_seqscan", "off"),))):
                apply_pattern(conn, config, pattern, roles)
                tiny += bench.run(pattern, role_b, "tiny (5 rows)", ("psycopg",), tenant=TINY,
                                  settings=settings)
            tiny[-1].pattern = "no btree, seqscan off"
            print("\n".join(format_cells(tiny)[2:]), flush=True)
            all_cells += tiny
        leaks = sum(c.leaks for c in all_cells)
        print()
        print(f"rows of another tenant returned, all cells: {leaks}; "
              f"total {time.perf_counter() - started:.0f} s")
        if leaks:
            sys.exit(1)
    finally:
        if not args.keep:
            with psycopg.connect(server, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(database)))
                drop_roles(admin, list(roles))


if __name__ == "__main__":
    main()
