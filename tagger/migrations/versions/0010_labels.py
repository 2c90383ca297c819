"""human labels: a label per item that current tags show over any model's tag

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

``labels`` holds a person's correction of an item (gender and/or product type, who, when,
a note); ``label_changes`` audits every change (before and after). ``current_tag_rows``
shows a labelled item's human values over its model tag (``human`` true; a field the
label sets scores 1.0) and the view gains ``source``: ``human`` or the model version. The
model's own tags stay in ``tags``, so re-tagging and roll-outs go on underneath a label.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
VIEW = """
CREATE VIEW current_tags AS
SELECT c.item_id, c.model_version, mv.is_active AS is_active_model, c.gender, c.gender_score,
       c.product_type, c.product_score, t.scores, c.tagged_at, c.product_margin{source}
FROM current_tag_rows c
LEFT JOIN model_versions mv ON mv.version = c.model_version
LEFT JOIN tags t ON t.item_id = c.item_id AND t.model_version = c.model_version
"""
SOURCE = ", CASE WHEN c.human THEN 'human' ELSE c.model_version END AS source"


def upgrade() -> None:
    op.create_table(
        "labels",
        sa.Column(
            "item_id",
            sa.String(255),
            sa.ForeignKey("items.item_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("gender", sa.String(64)),
        sa.Column("product_type", sa.String(64)),
        sa.Column("labelled_by", sa.Text, nullable=False),
        sa.Column("labelled_at", TS, nullable=False),
        sa.Column("note", sa.Text),
        sa.CheckConstraint(
            "gender IS NOT NULL OR product_type IS NOT NULL", name="ck_labels_some_field"
        ),
    )
    op.create_table(
        "label_changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        # No foreign key: the audit outlives the item.
        sa.Column("item_id", sa.String(255), nullable=False, index=True),
        sa.Column("changed_by", sa.Text, nullable=False),
        sa.Column("changed_at", TS, nullable=False),
        sa.Column("before", sa.JSON),
        sa.Column("after", sa.JSON),
    )
    op.add_column(
        "current_tag_rows",
        sa.Column("human", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index(
        "ix_current_tag_rows_human",
        "current_tag_rows",
        ["item_id"],
        postgresql_where=sa.text("human"),
        sqlite_where=sa.text("human"),
    )
    op.execute("DROP VIEW current_tags")
    op.execute(VIEW.format(source=SOURCE))


def downgrade() -> None:
    op.execute("DROP VIEW current_tags")
    op.execute(VIEW.format(source=""))
    op.drop_index("ix_current_tag_rows_human", table_name="current_tag_rows")
    with op.batch_alter_table("current_tag_rows") as batch:
        batch.drop_column("human")
    op.drop_table("label_changes")
    op.drop_table("labels")
