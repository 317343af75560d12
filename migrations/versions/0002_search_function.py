"""mrl_search(query_embedding, match_count, oversample, filter) over mrl_documents.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

from mrl_pg.alembic import create_search_function, drop_search_function
from mrl_pg.config import TableConfig

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_search_function(TableConfig())


def downgrade() -> None:
    drop_search_function(TableConfig())
