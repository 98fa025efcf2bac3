"""The offline score once called "simulation" is stored as "keyword": it matches the label's words
against the tokens and never simulates anything, and the feature page now says so.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from app.db.labels import refresh_sae

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

explanations = sa.table("explanations", sa.column("id", sa.Integer), sa.column("scores", sa.JSON))
BATCH = 1000


def _rename(old: str, new: str) -> list[dict]:
    """Rename one key of every label's scores, keeping its place among the others."""
    connection = op.get_bind()
    stored = connection.execute(
        sa.select(explanations.c.id, explanations.c.scores).where(
            sa.cast(explanations.c.scores, sa.Text).like(f'%"{old}"%')
        )
    ).all()
    changed = [
        {"row": id_, "renamed": {new if k == old else k: v for k, v in scores.items()}}
        for id_, scores in stored
        if old in scores
    ]
    update = (
        explanations.update()
        .where(explanations.c.id == sa.bindparam("row"))
        .values(scores=sa.bindparam("renamed"))
    )
    for start in range(0, len(changed), BATCH):
        connection.execute(update, changed[start : start + BATCH])
    return changed


def upgrade() -> None:
    """Shown labels are chosen again: labels ranked by a name this code no longer knows (after a
    downgrade past 0002, say) would otherwise keep a stale choice."""
    if _rename("simulation", "keyword"):
        connection = op.get_bind()
        for (sae_id,) in connection.execute(sa.text("SELECT id FROM saes")).all():
            refresh_sae(connection, sae_id)


def downgrade() -> None:
    _rename("keyword", "simulation")  # the shown labels stay as the old code would choose them
