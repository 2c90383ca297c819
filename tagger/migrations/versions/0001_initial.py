"""initial schema: items, model versions, tags, jobs, job items, failures, current_tags view

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)

# One row per item: the tag from the active model version where the item has one, else
# its newest tag, so rolling out a model never blanks the catalogue. Window functions
# work on Postgres and SQLite >= 3.25 alike.
CURRENT_TAGS_VIEW = """
CREATE VIEW current_tags AS
SELECT item_id, model_version, is_active_model, gender, gender_score,
       product_type, product_score, scores, tagged_at
FROM (
    SELECT t.item_id, t.model_version, mv.is_active AS is_active_model,
           t.gender, t.gender_score, t.product_type, t.product_score, t.scores, t.tagged_at,
           ROW_NUMBER() OVER (
               PARTITION BY t.item_id
               ORDER BY CASE WHEN mv.is_active THEN 0 ELSE 1 END, t.tagged_at DESC,
                        t.model_version DESC
           ) AS rank
    FROM tags t
    JOIN model_versions mv ON mv.version = t.model_version
) ranked
WHERE rank = 1
"""


def upgrade() -> None:
    op.create_table(
        "items",
        sa.Column("item_id", sa.String(255), primary_key=True),
        sa.Column("image_uri", sa.Text, nullable=False),
        sa.Column("title", sa.Text),
        sa.Column("fingerprint", sa.String(128)),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
    )
    op.create_table(
        "model_versions",
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("artifact_uri", sa.Text, nullable=False),
        sa.Column("gender_labels", JSONType, nullable=False),
        sa.Column("product_labels", JSONType, nullable=False),
        sa.Column("image_size", sa.Integer, nullable=False),
        sa.Column("uses_text", sa.Boolean, nullable=False),
        sa.Column("metrics", JSONType),
        sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("activated_at", TS),
    )
    # "Exactly one active": a unique index over the rows where is_active is true.
    op.create_index(
        "uq_model_versions_one_active",
        "model_versions",
        ["is_active"],
        unique=True,
        postgresql_where=sa.text("is_active"),
        sqlite_where=sa.text("is_active"),
    )
    op.create_table(
        "tags",
        sa.Column(
            "item_id",
            sa.String(255),
            sa.ForeignKey("items.item_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "model_version",
            sa.String(64),
            sa.ForeignKey("model_versions.version"),
            primary_key=True,
        ),
        sa.Column("gender", sa.String(64), nullable=False),
        sa.Column("gender_score", sa.Float, nullable=False),
        sa.Column("product_type", sa.String(64), nullable=False),
        sa.Column("product_score", sa.Float, nullable=False),
        sa.Column("scores", JSONType, nullable=False),
        sa.Column("tagged_at", TS, nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_tags_product_type_score", "tags", ["product_type", "product_score"])
    op.create_index("ix_tags_gender", "tags", ["gender", "gender_score"])
    op.create_index("ix_tags_tagged_at", "tags", ["tagged_at"])
    op.create_index("ix_tags_model_version", "tags", ["model_version"])

    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source", sa.Text),
        sa.Column("status", sa.String(16), nullable=False, server_default="queued"),
        sa.Column("total", sa.Integer, nullable=False, server_default="0"),
        sa.Column("done", sa.Integer, nullable=False, server_default="0"),
        sa.Column("failed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("skipped", sa.Integer, nullable=False, server_default="0"),
        sa.Column("batch_size", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("started_at", TS),
        sa.Column("finished_at", TS),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_table(
        "job_items",
        sa.Column(
            "job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column(
            "item_id",
            sa.String(255),
            sa.ForeignKey("items.item_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("state", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_job_items_item_id", "job_items", ["item_id"])
    op.create_table(
        "failures",
        sa.Column(
            "item_id",
            sa.String(255),
            sa.ForeignKey("items.item_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="SET NULL")),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="1"),
        sa.Column("first_seen", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("last_seen", TS, nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_failures_reason", "failures", ["reason"])
    op.execute(CURRENT_TAGS_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS current_tags")
    for table in ("failures", "job_items", "jobs", "tags", "model_versions", "items"):
        op.drop_table(table)
