"""tags and current tags carry the margin between the top two product scores

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

``product_margin`` is the best product score minus the second best (the best itself for a
one-class head), as stored, so "the second-best product type is close" is a comparison of
one column, not of the JSON of every class. New tags get it from the worker (from the
calibrated scores when the artifact carries a calibration); existing tags are filled from
their ``scores`` here, and each item's current row from its tag. ``current_tags`` gains
the column at its end (a view can only grow at the end), so queries naming columns do not
change.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# The best minus the second best of a tag's product scores, rounded as the worker rounds.
_MARGIN_PG = """
(SELECT round(CASE WHEN count(*) = 1 THEN max(v) ELSE max(v) - min(v) END::numeric, 6)::float8
 FROM (SELECT value::float8 AS v FROM jsonb_each_text(tags.scores -> 'product')
       ORDER BY 1 DESC LIMIT 2) top)
"""
_MARGIN_SQLITE = """
(SELECT round(CASE WHEN count(*) = 1 THEN max(v) ELSE max(v) - min(v) END, 6)
 FROM (SELECT CAST(value AS REAL) AS v FROM json_each(tags.scores, '$.product')
       ORDER BY 1 DESC LIMIT 2) top)
"""

VIEW = """
CREATE OR REPLACE VIEW current_tags AS
SELECT c.item_id, c.model_version, mv.is_active AS is_active_model, c.gender, c.gender_score,
       c.product_type, c.product_score, t.scores, c.tagged_at{margin}
FROM current_tag_rows c
LEFT JOIN model_versions mv ON mv.version = c.model_version
LEFT JOIN tags t ON t.item_id = c.item_id AND t.model_version = c.model_version
"""


def _view(margin: bool) -> str:
    sql = VIEW.format(margin=", c.product_margin" if margin else "")
    if op.get_bind().dialect.name == "sqlite":  # no CREATE OR REPLACE VIEW
        op.execute("DROP VIEW current_tags")
        sql = sql.replace("CREATE OR REPLACE VIEW", "CREATE VIEW")
    return sql


_FILL_CURRENT = """
UPDATE current_tag_rows SET product_margin = t.product_margin FROM tags t
WHERE t.item_id = current_tag_rows.item_id AND t.model_version = current_tag_rows.model_version
  AND current_tag_rows.product_margin IS NULL {range}
"""
#: Item ids per backfill transaction on Postgres (TAGGER_MIGRATION_CHUNK overrides it).
CHUNK = 20_000


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        # IF NOT EXISTS: a backfill cut off part-way left the columns, and is carried on.
        for table in ("tags", "current_tag_rows"):
            op.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS product_margin float8")
    else:
        for table in ("tags", "current_tag_rows"):
            op.add_column(table, sa.Column("product_margin", sa.Float, nullable=True))
    op.execute(_view(margin=True))
    if not postgres:  # the embedded database is small: one statement each
        op.execute(f"UPDATE tags SET product_margin = {_MARGIN_SQLITE}")
        op.execute(_FILL_CURRENT.format(range=""))
        return
    # Committed first, then filled a range of item ids per transaction: in one transaction
    # the new column's lock would stop every worker's writes for the whole backfill (over
    # 17 minutes for 19 M tags). Rows already filled are skipped, so a cut-off run resumes.
    with op.get_context().autocommit_block():
        _backfill_in_chunks(op.get_bind(), int(os.environ.get("TAGGER_MIGRATION_CHUNK", CHUNK)))


def _backfill_in_chunks(conn: sa.Connection, chunk: int) -> None:
    after: str | None = None
    while True:
        # The id of the chunk-th tag row after ``after``: the chunk ends there.
        last = conn.execute(
            sa.text(
                "SELECT item_id FROM tags WHERE (CAST(:after AS text) IS NULL OR item_id > :after) "
                "ORDER BY item_id OFFSET :skip LIMIT 1"
            ),
            {"after": after, "skip": chunk - 1},
        ).scalar()
        bounds = {"after": after, "last": last}
        within = (
            "AND (CAST(:after AS text) IS NULL OR {t}.item_id > :after) "
            "AND (CAST(:last AS text) IS NULL OR {t}.item_id <= :last)"
        )
        conn.execute(
            sa.text(
                f"UPDATE tags SET product_margin = {_MARGIN_PG} "
                f"WHERE product_margin IS NULL {within.format(t='tags')}"
            ),
            bounds,
        )
        conn.execute(
            sa.text(_FILL_CURRENT.format(range=within.format(t="current_tag_rows"))), bounds
        )
        if last is None:
            return
        after = last


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP VIEW current_tags")
        op.execute(VIEW.format(margin="").replace("CREATE OR REPLACE VIEW", "CREATE VIEW"))
    else:
        op.execute(_view(margin=False))
    for table in ("current_tag_rows", "tags"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("product_margin")
