"""current tags kept in a table: ``current_tag_rows`` behind the ``current_tags`` view

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30

- ``current_tag_rows``: one row per tagged item, the tag it shows (the active version's,
  else its newest) with that tag's label and score columns, indexed for the README's
  queries. tagger keeps it true on every tag write, activation and prune
  (``tagger.current``).
- ``current_tags`` keeps its columns and meaning; it now reads that table (plus the tag's
  ``scores``) instead of ranking every tag row per query.
- On Postgres the ``tags`` primary key carries the label and score columns (``INCLUDE``),
  so choosing every item's current tag again (activation) reads that index alone, not the
  wide rows with their ``scores``.
- The tags indexes on labels and scores served the old view; the table's own serve the
  queries now.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
TABLE = "current_tag_rows"
INCLUDED = "gender, gender_score, product_type, product_score, tagged_at"
COLUMNS = f"item_id, model_version, {INCLUDED}"

NEW_VIEW = f"""
CREATE VIEW current_tags AS
SELECT c.item_id, c.model_version, mv.is_active AS is_active_model, c.gender, c.gender_score,
       c.product_type, c.product_score, t.scores, c.tagged_at
FROM {TABLE} c
LEFT JOIN model_versions mv ON mv.version = c.model_version
LEFT JOIN tags t ON t.item_id = c.item_id AND t.model_version = c.model_version
"""

# The view as it was in 0001 (for downgrade).
OLD_VIEW = """
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
    # Written out here rather than imported from tagger.current: a migration must not
    # change when the code does.
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute("ALTER TABLE tags DROP CONSTRAINT tags_pkey")
        op.execute(
            f"ALTER TABLE tags ADD CONSTRAINT tags_pkey PRIMARY KEY (item_id, model_version) "
            f"INCLUDE ({INCLUDED})"
        )
    op.create_table(
        TABLE,
        sa.Column("item_id", sa.String(255), primary_key=True),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("gender", sa.String(64), nullable=False),
        sa.Column("gender_score", sa.Float, nullable=False),
        sa.Column("product_type", sa.String(64), nullable=False),
        sa.Column("product_score", sa.Float, nullable=False),
        sa.Column("tagged_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["item_id"], ["items.item_id"], name=f"fk_{TABLE}_item", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["item_id", "model_version"],
            ["tags.item_id", "tags.model_version"],
            name=f"fk_{TABLE}_tag",
        ),
        sa.PrimaryKeyConstraint("item_id", name=f"{TABLE}_pkey"),
    )
    op.create_index(f"ix_{TABLE}_product_score", TABLE, ["product_type", "product_score"])
    op.create_index(f"ix_{TABLE}_product_item", TABLE, ["product_type", "item_id"])
    op.create_index(f"ix_{TABLE}_tagged_at", TABLE, ["tagged_at"])
    op.execute(
        f"""INSERT INTO {TABLE} ({COLUMNS})
        SELECT {COLUMNS} FROM current_tags"""
    )
    op.execute("DROP VIEW current_tags")
    op.execute(NEW_VIEW)
    op.drop_index("ix_tags_product_type_score", table_name="tags")
    op.drop_index("ix_tags_gender", table_name="tags")


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.execute("DROP VIEW current_tags")
    op.drop_table(TABLE)
    if postgres:
        op.execute("ALTER TABLE tags DROP CONSTRAINT tags_pkey")
        op.execute("ALTER TABLE tags ADD CONSTRAINT tags_pkey PRIMARY KEY (item_id, model_version)")
    op.create_index("ix_tags_gender", "tags", ["gender", "gender_score"])
    op.create_index("ix_tags_product_type_score", "tags", ["product_type", "product_score"])
    op.execute(OLD_VIEW)
