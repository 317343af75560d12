"""An MRL table of the host's own, created by mrl_pg's Alembic operation."""

from mrl_pg import TableConfig
from mrl_pg.alembic import create_mrl_table, drop_mrl_table

revision = "h001"
down_revision = None

DOCS = TableConfig("host_docs", full_dim=64, prefix_dim=16)


def upgrade() -> None:
    create_mrl_table(DOCS)


def downgrade() -> None:
    drop_mrl_table(DOCS)
