"""A key's empty ``allowed_models`` now means no model; "every model" is written ``["*"]``.

Before this revision an empty list allowed every model, so an allow-list emptied by mistake
(an admin tool sending ``[]``, a CLI ``--models ''``) silently opened the key to everything.
Upgrade rewrites those keys to ``["*"]`` so each keeps exactly the access it had.

Downgrade turns ``["*"]`` back into ``[]`` (all, to the older code) and first turns ``[]``
(none, to this code) into ``[""]``: a glob only the empty name matches, which no request can
use, so a key that allowed no model does not start allowing every model after a downgrade.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_EMPTY = "[]"
_ALL = '["*"]'
_NONE_BEFORE_0003 = '[""]'


def upgrade() -> None:
    # REPLACE strips spaces so a hand-written "[ ]" counts as empty too (SQLite and PostgreSQL).
    op.execute(
        sa.text(
            "UPDATE api_keys SET allowed_models = :all WHERE allowed_models IS NULL "
            "OR REPLACE(allowed_models, ' ', '') IN ('', :empty)"
        ).bindparams(all=_ALL, empty=_EMPTY)
    )


def downgrade() -> None:
    op.execute(
        sa.text(
            "UPDATE api_keys SET allowed_models = :none WHERE REPLACE(allowed_models, ' ', '') "
            "= :empty"
        ).bindparams(none=_NONE_BEFORE_0003, empty=_EMPTY)
    )
    op.execute(
        sa.text(
            "UPDATE api_keys SET allowed_models = :empty WHERE allowed_models = :all"
        ).bindparams(empty=_EMPTY, all=_ALL)
    )
