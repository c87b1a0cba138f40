"""Usage rows and daily totals count the metered units besides tokens.

``images``, ``audio_seconds``, ``characters`` (text-to-speech), ``search_units`` (rerank) and
``calls`` (requests or tasks billed per call) on ``usage`` and ``usage_daily``; existing rows
count zero of each, which is what they used.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UNITS = ("images", "audio_seconds", "characters", "search_units", "calls")
_TYPES = {"usage": sa.Integer, "usage_daily": sa.BigInteger}  # daily sums grow large


def upgrade() -> None:
    for table, kind in _TYPES.items():
        with op.batch_alter_table(table) as batch:
            for unit in UNITS:
                batch.add_column(sa.Column(unit, kind, nullable=False, server_default="0"))


def downgrade() -> None:
    for table in _TYPES:
        with op.batch_alter_table(table) as batch:
            for unit in reversed(UNITS):
                batch.drop_column(unit)
