"""Package discovery: everything under mrl_pg/, plus two top-level folders shipped inside it.

``migrations/`` becomes ``mrl_pg.migrations`` (Alembic's script location) and ``sql/``
becomes ``mrl_pg.sql`` (``install.sql`` for psql users). The metadata is in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["mrl_pg", "mrl_pg.*"]),
        "mrl_pg.migrations",
        "mrl_pg.migrations.versions",
        "mrl_pg.sql",
    ],
    package_dir={
        "mrl_pg.migrations": "migrations",
        "mrl_pg.migrations.versions": "migrations/versions",
        "mrl_pg.sql": "sql",
    },
    package_data={"mrl_pg.sql": ["*.sql"]},
)
