"""The default table mrl_documents: vector(1536), generated halfvec(512) prefix, HNSW + GIN.

Released: the SQL below is this revision as it was released, frozen. It must
never change (tests/test_migrations.py holds its digest); later changes go
into new revisions.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = [
    'CREATE EXTENSION IF NOT EXISTS "vector"',
    '''CREATE TABLE "mrl_documents" (
    id bigint GENERATED ALWAYS AS IDENTITY,
    external_id text,
    content text,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    "embedding" vector(1536) NOT NULL,
    "embedding_prefix" halfvec(512) GENERATED ALWAYS AS (l2_normalize(subvector("embedding", 1, 512))::halfvec(512)) STORED,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT "mrl_documents_pkey" PRIMARY KEY (id),
    CONSTRAINT "mrl_documents_external_id_key" UNIQUE (external_id),
    CONSTRAINT "mrl_documents_embedding_nonzero" CHECK (vector_norm("embedding") > 0),
    CONSTRAINT "mrl_documents_embedding_prefix_nonzero" CHECK (vector_norm(subvector("embedding", 1, 512)) > 0),
    CONSTRAINT "mrl_documents_metadata_object" CHECK (jsonb_typeof(metadata) = 'object')
) WITH (toast_tuple_target = 8160)''',
    'CREATE INDEX "mrl_documents_embedding_prefix_hnsw" ON "mrl_documents" USING hnsw ("embedding_prefix" halfvec_cosine_ops) WITH (m = 16, ef_construction = 64)',
    'CREATE INDEX "mrl_documents_metadata_gin" ON "mrl_documents" USING gin (metadata jsonb_path_ops)',
]

DOWNGRADE = [
    'DROP TABLE "mrl_documents"',
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(sa.text(statement))


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(sa.text(statement))
