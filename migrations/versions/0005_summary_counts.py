"""SAE summaries keep the sum of shown scores and the count of features whose labelling failed,
so that label review shifts them and the dashboard reads them without scanning the SAE.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from app.db.labels import refresh_summary

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    connection = op.get_bind()
    for (sae_id,) in connection.execute(sa.text("SELECT id FROM saes")).all():
        refresh_summary(connection, sae_id)


def downgrade() -> None:
    pass  # the two extra summary keys are harmless to revision 0004
