"""Each feature's shown label and headline score; per-SAE summaries for pages.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from app.db.labels import refresh_sae

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("features") as batch_op:
        batch_op.add_column(sa.Column("label", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("label_score", sa.Float(), nullable=True))
        batch_op.create_index(
            "ix_features_sae_label_score", ["sae_id", "label_score", "index"], unique=False
        )
    with op.batch_alter_table("saes") as batch_op:
        batch_op.add_column(sa.Column("summary", sa.JSON(), nullable=False, server_default="{}"))
    connection = op.get_bind()
    for (sae_id,) in connection.execute(sa.text("SELECT id FROM saes")).all():
        refresh_sae(connection, sae_id, reviewed=False)  # review columns come in 0004


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): a batch rebuild of `features` would
    # drop the table, and with foreign keys on that cascades into every example.
    op.drop_column("saes", "summary")
    op.drop_index("ix_features_sae_label_score", table_name="features")
    op.drop_column("features", "label_score")
    op.drop_column("features", "label")
