"""a failed job item keeps its own reason: job_items.reason

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01

``failures`` holds one row per item, the item's latest failure, and a shadow job writes
none; a job's failures by reason (`tagger jobs ID`) read through it showed another job's
reason, or none, for such items. The ledger's row now says why the item failed in this
job. A nullable column with no default: added without rewriting the table. Rows from
before it have no reason; the report falls back to ``failures`` for them, as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("job_items", sa.Column("reason", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job_items") as batch:
        batch.drop_column("reason")
