"""Label embeddings for semantic search: one float16 MiniLM vector per label, with the text it
was computed from.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "label_embeddings",
        sa.Column("explanation_id", Id, nullable=False),
        sa.Column("embedder", sa.String(length=100), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["explanation_id"], ["explanations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("explanation_id"),
    )


def downgrade() -> None:
    op.drop_table("label_embeddings")
