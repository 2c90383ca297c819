"""review thresholds, the needs_review queue, shadow jobs and model comparisons

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01

``review_thresholds`` holds, per model version, head and class, the confidence below which
a tag needs a person's look (a product tag: its margin over the second-best type; a gender
tag: its score); registration fills it from the artifact (or a default) and people may set
one by hand. The view gains ``needs_review``, and ``current_tag_rows`` an index on the
margin so the review queue (lowest margin first) pages through an index, not a sort.

A ``shadow`` job tags items with a named, not necessarily active, version
(``jobs.model_version``) and never changes what current tags show; ``model_comparisons``
keeps what `tagger model compare` measured, which `tagger model activate` reads.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
VIEW = """
CREATE VIEW current_tags AS
SELECT c.item_id, c.model_version, mv.is_active AS is_active_model, c.gender, c.gender_score,
       c.product_type, c.product_score, t.scores, c.tagged_at, c.product_margin,
       CASE WHEN c.human THEN 'human' ELSE c.model_version END AS source{review}
FROM current_tag_rows c
LEFT JOIN model_versions mv ON mv.version = c.model_version
LEFT JOIN tags t ON t.item_id = c.item_id AND t.model_version = c.model_version{joins}
"""
REVIEW = """,
       COALESCE(c.product_margin < rp.threshold, FALSE)
           OR COALESCE(c.gender_score < rg.threshold, FALSE) AS needs_review"""
JOINS = """
LEFT JOIN review_thresholds rp ON rp.model_version = c.model_version
    AND rp.head = 'product' AND rp.label = c.product_type
LEFT JOIN review_thresholds rg ON rg.model_version = c.model_version
    AND rg.head = 'gender' AND rg.label = c.gender"""


def upgrade() -> None:
    op.create_table(
        "review_thresholds",
        sa.Column(
            "model_version",
            sa.String(64),
            sa.ForeignKey("model_versions.version", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("head", sa.String(16), primary_key=True),
        sa.Column("label", sa.String(64), primary_key=True),
        sa.Column("threshold", sa.Float, nullable=False),
        # artifact (fitted on the validation split), default (a setting), manual (a person)
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("set_by", sa.Text),
        sa.Column("set_at", TS, nullable=False),
        sa.CheckConstraint("head IN ('gender', 'product')", name="ck_review_thresholds_head"),
    )
    op.create_index("ix_current_tag_rows_margin", "current_tag_rows", ["product_margin", "item_id"])
    op.add_column("jobs", sa.Column("model_version", sa.String(64)))
    op.create_table(
        "model_comparisons",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("candidate", sa.String(64), nullable=False, index=True),
        sa.Column("baseline", sa.String(64), nullable=False),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="SET NULL")),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("report", sa.JSON, nullable=False),
    )
    op.execute("DROP VIEW current_tags")
    op.execute(VIEW.format(review=REVIEW, joins=JOINS))


def downgrade() -> None:
    op.execute("DROP VIEW current_tags")
    op.execute(VIEW.format(review="", joins=""))
    op.drop_table("model_comparisons")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("model_version")
    op.drop_index("ix_current_tag_rows_margin", table_name="current_tag_rows")
    op.drop_table("review_thresholds")
