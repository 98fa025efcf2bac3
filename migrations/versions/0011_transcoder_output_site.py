"""Transcoders: the site an SAE's decoder writes when it differs from the one it reads.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("saes", sa.Column("site_out", sa.String(100), nullable=True))


def downgrade() -> None:
    # In place, as 0010: a batch rebuild of `saes` would cascade into every feature.
    op.drop_column("saes", "site_out")
