"""The default table mrl_documents: vector(1536), generated halfvec(512) prefix, HNSW + GIN.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

from mrl_pg.alembic import create_mrl_table, drop_mrl_table
from mrl_pg.config import TableConfig

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_mrl_table(TableConfig(), with_search_function=False)


def downgrade() -> None:
    drop_mrl_table(TableConfig(), with_search_function=False)
