"""Feature maps: each feature's position on its SAE's UMAP of decoder directions, and how the
map was drawn.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE ... ADD COLUMN: a batch rebuild of `features` would drop the table, and
    # with foreign keys on that cascades into every example (as 0002's downgrade notes).
    op.add_column("features", sa.Column("map_x", sa.Float(), nullable=True))
    op.add_column("features", sa.Column("map_y", sa.Float(), nullable=True))
    op.add_column("saes", sa.Column("map_layout", sa.JSON(), nullable=False, server_default="{}"))


def downgrade() -> None:
    op.drop_column("saes", "map_layout")
    op.drop_column("features", "map_y")
    op.drop_column("features", "map_x")
