"""Accounts: users, each API key owned by one, the author of a shared steering session; and when
each feature list last changed.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", Id, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    # Nothing could make a key before accounts existed; a stray row would have no owner.
    op.execute("DELETE FROM api_keys")
    with op.batch_alter_table("api_keys") as batch_op:  # nothing refers to api_keys: safe rebuild
        batch_op.add_column(sa.Column("user_id", Id, nullable=False))
        batch_op.create_foreign_key(
            "fk_api_keys_user_id_users", "users", ["user_id"], ["id"], ondelete="CASCADE"
        )
    op.add_column("steering_sessions", sa.Column("author", sa.String(length=100), nullable=True))
    # SQLite adds a NOT NULL column only with a constant default; rows then take created_at.
    updated_at = sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, server_default="1970-01-01"
    )
    op.add_column("feature_lists", updated_at)
    op.execute("UPDATE feature_lists SET updated_at = created_at")


def downgrade() -> None:
    op.drop_column("feature_lists", "updated_at")
    op.drop_column("steering_sessions", "author")
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.drop_constraint("fk_api_keys_user_id_users", type_="foreignkey")
        batch_op.drop_column("user_id")
    op.drop_table("users")
