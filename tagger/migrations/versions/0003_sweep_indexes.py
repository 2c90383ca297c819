"""indexes for set-based sweep planning on a 10 M-item catalogue

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

- ``ix_job_items_pending`` on ``job_items (job_id, item_id) WHERE state = 'pending'``: the
  pending rows are a sliver of a ledger that gains a row per item per job, and the sweep
  reads only them: the items busy in live jobs (an anti-join), the stalled jobs' items it
  hands over, and a job's batches read back in keyset pages. Without it each of those is
  a scan of the whole ledger.
- ``ix_tags_version_item`` on ``tags (model_version, item_id) INCLUDE (tagged_at)``
  replaces ``ix_tags_model_version (model_version)``: the sweep's "no tag from the active
  version, or one older than the image" is an index-only scan of one version's entries
  in item-id order, merged with the items, never a read of the tags' wide rows (every
  class score). It serves whatever the old index did (same leading column). SQLite has
  no INCLUDE: there it is ``(model_version, item_id)``. Measured on 10 M items: the
  sweep's INSERT ... SELECT (never parallel in Postgres 15) reads the active version's
  9 M entries from it index-only in 2.9 s, no heap fetch.
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
    op.create_index(
        "ix_tags_version_item",
        "tags",
        ["model_version", "item_id"],
        postgresql_include=["tagged_at"],
    )
    op.drop_index("ix_tags_model_version", table_name="tags")


def downgrade() -> None:
    op.create_index("ix_tags_model_version", "tags", ["model_version"])
    op.drop_index("ix_tags_version_item", table_name="tags")
    op.drop_index("ix_job_items_pending", table_name="job_items")
