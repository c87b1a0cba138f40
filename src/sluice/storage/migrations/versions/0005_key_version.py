"""Key changes are numbered (``key_changes``), so servers without Redis see a CLI change at once.

Each key create, update or delete adds one row, in the same transaction, with the next version;
servers poll for versions above the last one they saw and drop those keys from their caches
(``sluice.key_watch``). Self-contained: it touches no other table.

Revision ID: 0005
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "key_changes",
        sa.Column("version", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("spend_reset", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("changed_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("key_changes")
