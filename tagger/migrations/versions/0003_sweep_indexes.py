"""an index on the ledger's pending rows, for set-based sweep planning at catalogue scale

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

``ix_job_items_pending`` on ``job_items (job_id, item_id) WHERE state = 'pending'``: the
pending rows are a sliver of a ledger that gains a row per item per job, and the sweep
reads only them: the items busy in live jobs (an anti-join against every candidate),
the stalled jobs' items it hands over, and a job's batches read back in keyset pages.
Without it each of those is a scan of the whole ledger (on 10 M items, with one
catalogue-wide job in the ledger, the busy check alone read all 10 M rows).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_job_items_pending",
        "job_items",
        ["job_id", "item_id"],
        postgresql_where=sa.text("state = 'pending'"),
        sqlite_where=sa.text("state = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_job_items_pending", table_name="job_items")
