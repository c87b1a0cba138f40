"""Channels created at runtime (admin API, console), with their upstream key encrypted at rest;
a one-row version every server polls to learn of a change; usage indexes for the console's
filters (model, channel, status by time).

Revision ID: 0006
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runtime_channels",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("api_key_enc", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "runtime_channel_version",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.execute("INSERT INTO runtime_channel_version (id, version) VALUES (1, 0)")
    op.create_index("ix_usage_model_created", "usage", ["model", "created_at"])
    op.create_index("ix_usage_channel_created", "usage", ["channel", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_usage_channel_created", table_name="usage")
    op.drop_index("ix_usage_model_created", table_name="usage")
    op.drop_table("runtime_channel_version")
    op.drop_table("runtime_channels")
