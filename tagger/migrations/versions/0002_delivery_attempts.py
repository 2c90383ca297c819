"""delivery attempts per job item, and jobs handing their items over

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

- ``job_items.attempts``: deliveries of the item's batch that started;
- ``job_items.deaths``: deliveries that never finished (the worker process died or was
  cut off by the time limit), counted when the next delivery finds the previous one's
  ``started_at`` still set. Postgres is the ledger: the count survives worker deaths;
- ``job_items.started_at``: set while a delivery is in flight, cleared when it ends;
- ``jobs.moved``: items a newer job took over (state ``moved``), so a job whose pending
  items were handed on can be closed with ``done + failed + moved = total``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("job_items") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("deaths", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("started_at", TS))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("moved", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("moved")
    with op.batch_alter_table("job_items") as batch:
        batch.drop_column("started_at")
        batch.drop_column("deaths")
        batch.drop_column("attempts")
