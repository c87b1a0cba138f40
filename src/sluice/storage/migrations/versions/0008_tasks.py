"""Asynchronous tasks (Midjourney, Suno, video): one row per task, leased by the replica
polling it. Self-contained: it touches no other table (docs/tasks.md).

Revision ID: 0008
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("mode", sa.String(16), nullable=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("upstream_id", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("progress", sa.Integer, nullable=False, server_default="0"),
        sa.Column("request", sa.Text, nullable=False, server_default="{}"),
        sa.Column("result", sa.Text, nullable=False, server_default="{}"),
        sa.Column("fail_reason", sa.Text, nullable=True),
        sa.Column("reserved_micro", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("cost_micro", sa.BigInteger, nullable=True),
        sa.Column("units", sa.Integer, nullable=False, server_default="1"),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float, nullable=True),
        sa.Column("finished_at", sa.Float, nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.Float, nullable=True),
        sa.Column("next_poll_at", sa.Float, nullable=True),
        sa.Column("callback_url", sa.Text, nullable=True),
        sa.Column("callback_secret", sa.String(64), nullable=False, server_default=""),
        sa.Column("notified", sa.String(16), nullable=False, server_default=""),
        sa.Column("deleted_at", sa.Float, nullable=True),
    )
    op.create_index("ix_tasks_key_created", "tasks", ["key_id", "created_at"])
    op.create_index("ix_tasks_due", "tasks", ["finished_at", "next_poll_at"])


def downgrade() -> None:
    op.drop_index("ix_tasks_due", table_name="tasks")
    op.drop_index("ix_tasks_key_created", table_name="tasks")
    op.drop_table("tasks")
