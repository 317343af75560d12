"""Names and dimensions are validated before any SQL exists."""

from __future__ import annotations

import pytest

from mrl_pg import TableConfig
from mrl_pg.errors import InvalidConfigError, InvalidIdentifierError, MrlPgError
from mrl_pg.schema.install import create_ddl
from mrl_pg.schema.tables import render


@pytest.mark.parametrize(
    "name",
    [
        '"; drop table x; --',
        "docs; DROP TABLE users",
        "Docs",  # would need quoting to keep its case
        "my docs",
        "1docs",
        "docs-2",
        "dócs",
        "",
        "select",  # reserved word
        "user",
        "a" * 39,  # derived index and constraint names would pass 63 bytes
    ],
)
def test_hostile_or_quoting_table_names_are_refused(name):
    with pytest.raises(InvalidIdentifierError) as excinfo:
        TableConfig(name)
    assert isinstance(excinfo.value, ValueError)
    assert repr(name)[:20].strip("'") in str(excinfo.value) or name == ""


def test_hostile_schema_names_are_refused():
    with pytest.raises(InvalidIdentifierError, match="schema name"):
        TableConfig("docs", schema='public"; drop')


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"full_dim": 0}, "full_dim 0 is out of range"),
        ({"full_dim": 16001}, "full_dim 16001 is out of range"),
        ({"full_dim": 8000, "prefix_dim": 4001}, "prefix_dim 4001 is out of range"),
        ({"full_dim": 512, "prefix_dim": 512}, "must be smaller than full_dim 512"),
        ({"full_dim": 256, "prefix_dim": 512}, "must be smaller than full_dim 256"),
        ({"full_dim": "1536"}, "must be an integer"),
        ({"full_dim": True}, "must be an integer"),
        ({"hnsw_m": 1}, "hnsw_m 1 is out of range"),
        ({"hnsw_m": 40, "hnsw_ef_construction": 64}, "at least 2 \\* hnsw_m"),
    ],
)
def test_impossible_dimensions_are_refused_with_the_value_named(kwargs, message):
    with pytest.raises(InvalidConfigError, match=message):
        TableConfig("docs", **kwargs)


def test_every_mrl_pg_error_shares_one_base():
    with pytest.raises(MrlPgError):
        TableConfig("docs", full_dim=-1)


def test_longest_allowed_name_keeps_every_derived_name_within_63_bytes():
    config = TableConfig("a" * 38, full_dim=16000, prefix_dim=4000)
    names = [
        config.hnsw_index_name, config.metadata_index_name, config.nonzero_check_name,
        config.prefix_nonzero_check_name, config.metadata_check_name,
        config.external_id_key_name, config.pkey_name, config.search_function_name,
    ]
    assert max(len(n) for n in names) <= 63
    assert len(set(names)) == len(names)


def test_ddl_contains_no_percent_signs_or_bind_markers():
    """Alembic runs the DDL as text(); '%' or ':name' would be taken for parameters."""
    import re

    for statement in create_ddl(TableConfig("docs", full_dim=3072, prefix_dim=256, schema="s")):
        text = render(statement)
        assert "%" not in text
        assert not re.search(r"(?<![:\w]):\w", text)


def test_custom_tables_get_their_own_search_function_name():
    assert TableConfig().search_function_name == "mrl_search"
    assert TableConfig("docs").search_function_name == "mrl_search_docs"
