"""The host's own table, then adopted: prefix index built concurrently, search function."""

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import VECTOR

from mrl_pg.alembic import adopt_table, release_table

revision = "h002"
down_revision = "h001"


def upgrade() -> None:
    op.create_table(
        "host_articles",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("embedding", VECTOR(64)),
    )
    op.execute(
        "INSERT INTO host_articles (id, title, embedding) "
        "SELECT i, 'article ' || i, ('[' || array_to_string(ARRAY(SELECT "
        "sin(i * 7 + d) FROM generate_series(1, 64) d), ',') || ']')::vector "
        "FROM generate_series(1, 200) i"
    )
    adopt_table("host_articles", embedding="embedding", prefix_dim=16)


def downgrade() -> None:
    release_table("host_articles")
    op.drop_table("host_articles")
