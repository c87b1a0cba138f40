"""Usage rows and daily totals count seconds of generated video (``video_seconds``).

Revision ID: 0010
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None

_TYPES = {"usage": sa.Integer, "usage_daily": sa.BigInteger}  # daily sums grow large


def upgrade() -> None:
    for table, kind in _TYPES.items():
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("video_seconds", kind, nullable=False, server_default="0"))


def downgrade() -> None:
    for table in _TYPES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("video_seconds")
