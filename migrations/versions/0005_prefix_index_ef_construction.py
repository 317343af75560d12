"""The prefix HNSW index is built with ef_construction 128 (pgvector's default is 64).

A graph built at 64 on clustered data left whole clusters out of reach of some
queries; at 128 the default search setting found them (BENCHMARKS.md). The
option only steers how the graph grows, so this revision changes the recorded
option in place (a brief lock on the index, no rebuild): rows inserted from now
on are linked with the larger list. To rebuild the existing graph with it, run
``mrl-pg index build --concurrently`` (readers and writers go on).

Released: the SQL below is this revision as it was released, frozen. It must
never change (tests/test_migrations.py holds its digest); later changes go
into new revisions.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = [
    'ALTER INDEX IF EXISTS "mrl_documents_embedding_prefix_hnsw" SET (ef_construction = 128)',
]

DOWNGRADE = [
    'ALTER INDEX IF EXISTS "mrl_documents_embedding_prefix_hnsw" SET (ef_construction = 64)',
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(sa.text(statement))


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(sa.text(statement))
