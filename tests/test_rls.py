"""Row-level security on the tenant column: isolation through every front end, and plans.

One adopted table of 20,000 rows x 512 dimensions (TOASTed vectors, as at scale): a
large tenant (70%), a small one (20 rows), a tiny one (5 rows, fewer than k) and 100
others. Three roles, one per tenant, search as PostgREST would (``SET ROLE``). The
recommended policy forms (:mod:`mrl_pg.schema.rls`) are checked one after the other: a
transaction-local setting, and a constant per role. At this size the planner already
chooses as at 100,000 rows (``mrl_pg/bench/rls.py``, ``docs/rls-100k.txt``), with its own
statistics after ANALYZE and no planner setting changed; the degrading forms below
show that the plan tests can fail.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

from mrl_pg import TableConfig
from mrl_pg import psycopg as mrl_psycopg
from mrl_pg.bench.rls import (
    LARGE,
    PATTERNS,
    SMALL,
    TINY,
    Pattern,
    apply_pattern,
    as_tenant,
    captured_plans,
    create_items,
    create_roles,
    first_stage,
    role_connection,
    seq_scanned_tables,
    sql_function,
    tenant_column,
)
from mrl_pg.bench.synthetic import make_queries
from mrl_pg.db import configure_connection
from mrl_pg.errors import InvalidConfigError
from mrl_pg.schema.rls import role_policy_ddl, set_tenant, tenant_index_ddl, tenant_policy_ddl

ROWS, DIM, PREFIX = 20_000, 512, 128
SIZES = {LARGE: 14_000, SMALL: 20, TINY: 5}
K = 10

RECOMMENDED = {p.name: p for p in PATTERNS if p.recommended}
BY_NAME = {p.name: p for p in PATTERNS}


@dataclass(frozen=True)
class RlsTable:
    dsn: str
    config: TableConfig
    roles: dict[str, int]  # role -> its tenant
    queries: Any
    other_rows: dict[int, Any]  # tenant -> the embedding of one of its rows

    def role(self, tenant: int) -> str:
        return next(r for r, t in self.roles.items() if t == tenant)


@pytest.fixture(scope="module")
def rls_table(database_dsn: str) -> Iterator[RlsTable]:
    schema = f"rls_{uuid.uuid4().hex[:8]}"
    suffix = uuid.uuid4().hex[:6]
    roles = {f"rls_large_{suffix}": LARGE, f"rls_small_{suffix}": SMALL,
             f"rls_tiny_{suffix}": TINY}
    tenants = tenant_column(ROWS, small_rows=SIZES[SMALL], tiny_rows=SIZES[TINY], seed=3)
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        configure_connection(conn)
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        config = create_items(conn, ROWS, DIM, PREFIX, seed=3, schema=schema, tenants=tenants)
        create_roles(conn, config, list(roles))
        others = {}
        for tenant in (LARGE, SMALL, TINY):
            row = conn.execute(sql.SQL("SELECT embedding FROM {} WHERE tenant_id = %s LIMIT 1")
                               .format(config.table), (tenant,)).fetchone()
            assert row is not None
            others[tenant] = row[0]
    try:
        yield RlsTable(database_dsn, config, roles, make_queries(5, DIM, seed=3), others)
    finally:
        with psycopg.connect(database_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
            for role in roles:
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _apply(table: RlsTable, pattern: Pattern) -> None:
    with psycopg.connect(table.dsn, autocommit=True) as conn:
        apply_pattern(conn, table.config, pattern, table.roles)


@pytest.fixture(params=sorted(RECOMMENDED))
def recommended(request: pytest.FixtureRequest, rls_table: RlsTable) -> Pattern:
    pattern = RECOMMENDED[request.param]
    _apply(rls_table, pattern)
    return pattern


def _setting(pattern: Pattern, tenant: int) -> int | None:
    return tenant if pattern.uses_setting else None


def _psycopg_plan(table: RlsTable, pattern: Pattern, who: int, **kw: Any) -> Any:
    """The plan of ``mrl_psycopg.search`` as the role of tenant ``who``."""
    with role_connection(table.dsn, table.role(who)) as conn, \
            as_tenant(conn, _setting(pattern, who)):
        return mrl_psycopg.explain(conn, table.config, table.queries[0], k=K, analyze=True,
                              as_json=True, **kw)


def _function_plan(table: RlsTable, pattern: Pattern, tenant: int) -> Any:
    with role_connection(table.dsn, table.role(tenant), auto_explain=True) as conn:
        with captured_plans(conn) as plans, as_tenant(conn, _setting(pattern, tenant)):
            rows = sql_function(conn, table.config, table.queries[0], k=K)
    assert len(rows) == min(K, SIZES[tenant]) and len(plans) == 1
    return plans[0]


def _orm() -> Any:
    from mrl_pg import sqlalchemy as orm

    if "VectorColumn" not in vars(orm):
        pytest.skip("mrl_pg.sqlalchemy.search does not take a model's column yet")
    return orm


# --- the generated DDL -------------------------------------------------------------------

def test_generated_policy_compares_the_tenant_with_a_setting_and_no_sub_select():
    config = TableConfig("items", full_dim=768, prefix_dim=256, tenant_column="tenant_id")
    enable, drop, create = (s.as_string(None) for s in tenant_policy_ddl(config, roles=["app"]))
    assert enable == 'ALTER TABLE "items" ENABLE ROW LEVEL SECURITY'
    assert drop == 'DROP POLICY IF EXISTS "items_tenant_isolation" ON "items"'
    condition = ("\"tenant_id\" = CAST(nullif(current_setting('app.tenant_id', true), '') "
                 'AS "pg_catalog"."text")')
    assert create == ('CREATE POLICY "items_tenant_isolation" ON "items" AS PERMISSIVE FOR ALL '
                      f'TO "app" USING ({condition}) WITH CHECK ({condition})')
    assert "SELECT" not in create.upper().replace("ROW LEVEL", "")
    role = role_policy_ddl(config, "acme", "acme-7")[-1].as_string(None)
    constant = """"tenant_id" = CAST('acme-7' AS "pg_catalog"."text")"""
    assert role.endswith(f'TO "acme" USING ({constant}) WITH CHECK ({constant})')
    assert tenant_index_ddl(config, concurrently=True).as_string(None) == (
        'CREATE INDEX CONCURRENTLY IF NOT EXISTS "items_tenant_id_idx" ON "items" ("tenant_id")')


def test_policy_ddl_refuses_a_table_without_tenant_column_and_bad_names():
    plain = TableConfig("items", full_dim=768, prefix_dim=256)
    with pytest.raises(InvalidConfigError, match="has no tenant column"):
        tenant_policy_ddl(plain)
    config = TableConfig("items", full_dim=768, prefix_dim=256, tenant_column="tenant_id")
    with pytest.raises(InvalidConfigError, match="dotted name"):
        tenant_policy_ddl(config, setting="tenant")
    with pytest.raises(ValueError, match="longer than 63 bytes"):
        role_policy_ddl(config, "r" * 64, 1)
    with pytest.raises(InvalidConfigError, match="sequence of role names"):
        tenant_policy_ddl(config, roles="app")
    with pytest.raises(InvalidConfigError, match="must not be None"):
        role_policy_ddl(config, "app", None)


def test_set_tenant_outside_a_transaction_is_refused_and_inside_ends_with_it(rls_table):
    with psycopg.connect(rls_table.dsn, autocommit=True) as conn:
        with pytest.raises(InvalidConfigError, match="inside `with conn.transaction"):
            set_tenant(conn, LARGE)
        with conn.transaction():
            set_tenant(conn, LARGE)
            assert conn.execute("SELECT current_setting('app.tenant_id')").fetchone() == ("1",)
        assert conn.execute("SELECT current_setting('app.tenant_id', true)").fetchone() == ("",)


# --- isolation ---------------------------------------------------------------------------

def _tenants_seen(rows: list[Any]) -> set[int]:
    return {r.tenant_id if hasattr(r, "tenant_id") else r[1] for r in rows}


def test_no_role_sees_another_tenants_row_through_any_front_end(rls_table, recommended):
    table, config = rls_table, rls_table.config
    insert = sql.SQL("INSERT INTO {} (tenant_id, title, embedding) VALUES (%s, 'x', %s)").format(
        config.table)
    for role, own in table.roles.items():
        others = [t for t in table.other_rows if t != own]
        vectors = [table.queries[0], *(table.other_rows[t] for t in others)]
        with role_connection(table.dsn, role) as conn:
            setting = _setting(recommended, own)
            with as_tenant(conn, setting):
                count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(config.table))
                assert count.fetchone() == (SIZES[own],)
            for vector in vectors:
                with as_tenant(conn, setting):
                    found = [mrl_psycopg.search(conn, config, vector, k=K),
                             mrl_psycopg.exact_search(conn, config, vector, k=K),
                             sql_function(conn, config, vector, k=K)]
                assert [_tenants_seen(rows) for rows in found] == [{own}] * 3, role
                assert [len(rows) for rows in found] == [min(K, SIZES[own])] * 3
            for other in others:
                with as_tenant(conn, setting):
                    named = [mrl_psycopg.search(conn, config, vectors[0], k=K, tenant=other),
                             mrl_psycopg.search(conn, config, vectors[0], k=K,
                                           where={"tenant_id": [own, other]}),
                             mrl_psycopg.exact_search(conn, config, vectors[0], k=K, tenant=other),
                             sql_function(conn, config, vectors[0], k=K,
                                          filter={"tenant_id": other})]
                assert [_tenants_seen(rows) for rows in named] == [set(), {own}, set(), set()]
                with pytest.raises(psycopg.errors.InsufficientPrivilege,
                                   match="violates row-level security"), \
                        as_tenant(conn, setting):
                    conn.execute(insert, (other, table.other_rows[other]))
            with conn.transaction(force_rollback=True):
                if setting is not None:
                    set_tenant(conn, setting)
                conn.execute(insert, (own, table.other_rows[own]))  # its own tenant: allowed


def test_a_role_without_its_tenant_setting_sees_nothing(rls_table):
    _apply(rls_table, RECOMMENDED["setting"])
    with role_connection(rls_table.dsn, rls_table.role(LARGE)) as conn:
        assert mrl_psycopg.search(conn, rls_table.config, rls_table.queries[0], k=K) == []
        assert sql_function(conn, rls_table.config, rls_table.queries[0], k=K) == []


def test_a_role_bound_tenant_ignores_any_setting_the_role_makes(rls_table):
    _apply(rls_table, RECOMMENDED["role constant"])
    with role_connection(rls_table.dsn, rls_table.role(SMALL)) as conn, \
            as_tenant(conn, LARGE):
        rows = mrl_psycopg.search(conn, rls_table.config, rls_table.other_rows[LARGE], k=K)
        assert _tenants_seen(rows) == {SMALL}


def test_no_role_sees_another_tenants_row_through_the_orm(rls_table, recommended):
    orm = _orm()
    from sqlalchemy import text
    from sqlalchemy.orm import Session

    from mrl_pg.bench.rls import orm_engine, orm_model

    model = orm_model(rls_table.config)
    assert model is not None
    item = model[0]
    for role, own in rls_table.roles.items():
        engine = orm_engine(rls_table.dsn, role)
        try:
            with Session(engine) as session:
                if recommended.uses_setting:
                    session.execute(text("SELECT set_config('app.tenant_id', :t, true)"),
                                    {"t": str(own)})
                for other in (t for t in rls_table.other_rows if t != own):
                    vector = rls_table.other_rows[other]
                    rows = orm.search(session, item.embedding, vector, k=K)
                    exact = orm.exact_search(session, item.embedding, vector, k=K)
                    assert {r.tenant_id for r, _ in rows + exact} == {own}
                    assert len(rows) == len(exact) == min(K, SIZES[own])
                    named = orm.search(session, item.embedding, vector, k=K,
                                       where=[item.tenant_id == other])
                    assert named == []
        finally:
            engine.dispose()


def test_one_orm_session_switching_tenants_keeps_each_tenants_plan(rls_table):
    """psycopg prepares a statement run five times on a connection; PostgreSQL would then
    keep one generic plan, made for whichever tenant was current, for all tenants. The
    search's ``plan_cache_mode = force_custom_plan`` plans each call for its tenant."""
    orm = _orm()
    from sqlalchemy import text
    from sqlalchemy.orm import Session

    from mrl_pg.bench.rls import orm_engine, orm_model

    _apply(rls_table, RECOMMENDED["setting"])
    model = orm_model(rls_table.config)
    assert model is not None
    item = model[0]
    engine = orm_engine(rls_table.dsn, rls_table.role(LARGE), auto_explain=True)
    seen = []
    try:
        with Session(engine) as session:
            driver = session.connection().connection.driver_connection
            with captured_plans(driver) as plans:
                for tenant in [SMALL, LARGE] * 7:
                    session.execute(text("SELECT set_config('app.tenant_id', :t, true)"),
                                    {"t": str(tenant)})
                    rows = orm.search(session, item.embedding, rls_table.queries[2], k=K,
                                      oversample=8, ef_search=160)
                    seen.append((tenant, {r.tenant_id for r, _ in rows}))
                    session.commit()
    finally:
        engine.dispose()
    assert seen == [(t, {t}) for t in [SMALL, LARGE] * 7]
    assert [first_stage(p).kind for p in plans] == ["btree", "hnsw"] * 7


# --- plans -------------------------------------------------------------------------------

def test_large_tenant_walks_the_hnsw_index_and_never_seq_scans(rls_table, recommended):
    for plan in (_psycopg_plan(rls_table, recommended, LARGE),
                 _function_plan(rls_table, recommended, LARGE)):
        stage = first_stage(plan)
        assert (stage.kind, stage.index) == ("hnsw", rls_table.config.hnsw_index_name)
        assert stage.rows_read < 1000  # the pool of 80 and what the policy filtered out
        assert rls_table.config.name not in seq_scanned_tables(plan)


def test_small_tenants_read_the_tenant_btree_and_get_k_rows_or_all_of_theirs(
        rls_table, recommended):
    for tenant in (SMALL, TINY):
        for plan in (_psycopg_plan(rls_table, recommended, tenant),
                     _function_plan(rls_table, recommended, tenant)):
            stage = first_stage(plan)
            assert (stage.kind, stage.index) == ("btree", "items_tenant_id_idx")
            assert stage.rows_read == SIZES[tenant]
            assert rls_table.config.name not in seq_scanned_tables(plan)
        with role_connection(rls_table.dsn, rls_table.role(tenant)) as conn, \
                as_tenant(conn, _setting(recommended, tenant)):
            rows = mrl_psycopg.search(conn, rls_table.config, rls_table.queries[1], k=K)
        assert len(rows) == min(K, SIZES[tenant]) and _tenants_seen(rows) == {tenant}


# --- the forms that degrade, at this size too ---------------------------------------------

def test_a_sub_select_in_the_policy_makes_the_large_tenant_read_all_its_rows(rls_table):
    """The planner cannot see an InitPlan's value: it plans the large tenant as an average
    one (1/n_distinct) and reads all 14,000 of its rows instead of walking the index.
    Passing ``tenant=`` puts a constant beside the policy and brings the index back."""
    pattern = BY_NAME["setting in sub-SELECT"]
    _apply(rls_table, pattern)
    stage = first_stage(_psycopg_plan(rls_table, pattern, LARGE))
    assert (stage.kind, stage.rows_read) == ("btree", SIZES[LARGE])
    assert first_stage(_function_plan(rls_table, pattern, LARGE)).rows_read == SIZES[LARGE]
    assert first_stage(_psycopg_plan(rls_table, pattern, LARGE, tenant=LARGE)).kind == "hnsw"


def test_without_the_tenant_btree_a_small_tenant_walks_most_of_the_table(rls_table):
    """With no B-tree to read a small tenant's rows, the walk has to pass over most of the
    table to fill the pool (and, came it back short of k, the exact scan would stand in):
    still the tenant's rows, but the B-tree is what makes it cheap."""
    pattern = BY_NAME["setting, no btree"]
    _apply(rls_table, pattern)
    plan = _psycopg_plan(rls_table, pattern, SMALL)
    assert first_stage(plan).kind == "hnsw"
    assert first_stage(plan).rows_read > 10 * SIZES[SMALL]
    with role_connection(rls_table.dsn, rls_table.role(SMALL)) as conn, \
            as_tenant(conn, _setting(pattern, SMALL)):
        rows = mrl_psycopg.search(conn, rls_table.config, rls_table.queries[1], k=K)
    assert len(rows) == min(K, SIZES[SMALL]) and _tenants_seen(rows) == {SMALL}


def test_sql_function_filter_naming_the_own_tenant_keeps_the_hnsw_walk(rls_table):
    """The function's filter reaches the planner as ``tenant_id = <constant>`` (one
    condition per named column), so a filter naming the large tenant still walks HNSW."""
    pattern = RECOMMENDED["setting"]
    _apply(rls_table, pattern)
    with role_connection(rls_table.dsn, rls_table.role(LARGE), auto_explain=True) as conn:
        with captured_plans(conn) as plans, as_tenant(conn, LARGE):
            sql_function(conn, rls_table.config, rls_table.queries[0], k=K,
                         filter={"tenant_id": LARGE})
    assert first_stage(plans[0]).kind == "hnsw"


def test_an_immutable_tenant_function_leaks_rows_through_a_cached_plan(rls_table):
    """Why the policy's expression must stay STABLE: an IMMUTABLE one is folded into the
    plan, and a prepared statement's cached plan keeps the first tenant's value."""
    config, role = rls_table.config, rls_table.role(LARGE)
    function = config.qualified("rls_immutable_tenant")
    with psycopg.connect(rls_table.dsn, autocommit=True) as conn:
        apply_pattern(conn, config, RECOMMENDED["setting"], rls_table.roles)
        conn.execute(sql.SQL(
            "CREATE FUNCTION {}() RETURNS int LANGUAGE sql IMMUTABLE AS "
            "$$ SELECT nullif(current_setting('app.tenant_id', true), '')::int $$").format(
            function))
        conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {}() TO {}").format(
            function, sql.Identifier(role)))
        conn.execute(sql.SQL("DROP POLICY items_tenant_isolation ON {}").format(config.table))
        conn.execute(sql.SQL("CREATE POLICY leaky ON {} TO {} USING (tenant_id = {}())").format(
            config.table, sql.Identifier(role), function))
    try:
        with role_connection(rls_table.dsn, role) as conn:
            conn.execute(sql.SQL("PREPARE counted AS SELECT count(*) FROM {}").format(
                config.table))
            conn.execute("SET app.tenant_id = '1'")
            assert conn.execute("EXECUTE counted").fetchone() == (SIZES[LARGE],)
            conn.execute("SET app.tenant_id = '2'")
            assert conn.execute("EXECUTE counted").fetchone() == (SIZES[LARGE],)  # not 20
    finally:
        with psycopg.connect(rls_table.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP POLICY leaky ON {}").format(config.table))
            conn.execute(sql.SQL("DROP FUNCTION {}()").format(function))


def test_the_setting_policy_re_plans_for_each_tenant_in_one_session(rls_table):
    """The STABLE form, in the same prepared statement: each tenant sees its own rows."""
    _apply(rls_table, RECOMMENDED["setting"])
    with role_connection(rls_table.dsn, rls_table.role(LARGE)) as conn:
        conn.execute(sql.SQL("PREPARE counted AS SELECT count(*) FROM {}").format(
            rls_table.config.table))
        counts = []
        for tenant in (LARGE, SMALL, TINY, LARGE):
            conn.execute("SELECT set_config('app.tenant_id', %s, false)", (str(tenant),))
            row = conn.execute("EXECUTE counted").fetchone()
            counts.append(row[0] if row else None)
    assert counts == [SIZES[LARGE], SIZES[SMALL], SIZES[TINY], SIZES[LARGE]]


def test_tenant_sizes_are_what_the_plans_above_assume(rls_table):
    assert np.bincount(tenant_column(ROWS, small_rows=SIZES[SMALL], tiny_rows=SIZES[TINY],
                                     seed=3))[[LARGE, SMALL, TINY]].tolist() == [
        SIZES[LARGE], SIZES[SMALL], SIZES[TINY]]
