"""a job's members kept as its batches (job_batches), per-item rows only once delivered

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

An import or a sweep of a million items wrote a million pending ``job_items`` rows (heap and
three indexes: 8-13 s measured at 10 M items) before publishing anything, and the ledger grew
by a row per item per job. ``job_batches`` holds what the job queued, one row per batch with
its item ids (15,625 rows for a million items); a ``job_items`` row is written when an
item's batch is first delivered or the item is settled. An item of a job with no
``job_items`` row is pending and was never delivered.

The upgrade writes every existing job's members as batches (item-id order, the job's batch
size) and drops the pending rows that were never delivered: they say nothing the batches do
not. The downgrade writes them back.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_NUMBERED = """
SELECT ji.job_id, ji.item_id, j.batch_size,
       row_number() OVER (PARTITION BY ji.job_id ORDER BY ji.item_id) AS rn
FROM job_items ji JOIN jobs j ON j.id = ji.job_id
"""


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    ids = postgresql.ARRAY(sa.Text()) if postgres else sa.JSON()
    op.create_table(
        "job_batches",
        sa.Column(
            "job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("item_ids", ids, nullable=False),
    )
    agg = "array_agg(item_id ORDER BY item_id)" if postgres else "json_group_array(item_id)"
    op.execute(
        f"""
        INSERT INTO job_batches (job_id, seq, item_ids)
        SELECT job_id, (rn - 1) / batch_size, {agg}
        FROM ({_NUMBERED} ORDER BY ji.job_id, ji.item_id) numbered
        GROUP BY job_id, (rn - 1) / batch_size
        """
    )
    op.execute(
        "DELETE FROM job_items WHERE state = 'pending' AND attempts = 0 AND started_at IS NULL"
    )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    members = (
        "SELECT b.job_id, m.item_id FROM job_batches b CROSS JOIN LATERAL unnest(b.item_ids) "
        "AS m(item_id)"
        if postgres
        else "SELECT b.job_id, m.value AS item_id FROM job_batches b, json_each(b.item_ids) m"
    )
    op.execute(
        f"""
        INSERT INTO job_items (job_id, item_id, state, updated_at, attempts, deaths)
        SELECT m.job_id, m.item_id, 'pending', CURRENT_TIMESTAMP, 0, 0 FROM ({members}) m
        WHERE NOT EXISTS (
            SELECT 1 FROM job_items ji WHERE ji.job_id = m.job_id AND ji.item_id = m.item_id
        )
        """
    )
    op.drop_table("job_batches")
