"""Label review: a verdict and retirement on each label, and the history of human changes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("explanations", sa.Column("verdict", sa.String(length=16), nullable=True))
    retired_at = sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True)
    op.add_column("explanations", retired_at)
    op.create_table(
        "label_events",
        sa.Column("id", Id, nullable=False),
        sa.Column("feature_id", Id, nullable=False),
        sa.Column("explanation_id", Id, nullable=False),
        sa.Column("author", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("before", sa.Text(), nullable=True),
        sa.Column("after", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["feature_id"], ["features.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["explanation_id"], ["explanations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_label_events_feature", "label_events", ["feature_id"])
    op.create_index("ix_label_events_created", "label_events", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_label_events_created", table_name="label_events")
    op.drop_index("ix_label_events_feature", table_name="label_events")
    op.drop_table("label_events")
    # Plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35), as in 0002.
    op.drop_column("explanations", "retired_at")
    op.drop_column("explanations", "verdict")
