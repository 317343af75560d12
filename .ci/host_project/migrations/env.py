"""The host's env.py: its own engine, mrl_pg's objects left out of autogenerate."""

from alembic import context

import mrl_pg
import mrl_pg.migrate

engine = mrl_pg.create_engine()  # MRL_PG_DSN, set by check_host.py
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=None,
        include_name=mrl_pg.migrate.include_name,
        include_object=mrl_pg.migrate.include_object,
    )
    with context.begin_transaction():
        context.run_migrations()
