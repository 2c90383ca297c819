"""the ledger's cascades done per statement on Postgres, not checked per row

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30

``job_items`` gains a row per item of every job: a million rows for a sweep or an import
of a million items. Its two foreign keys made Postgres check each new row on its own (an
index probe and a row lock on ``items`` and ``jobs`` per row): 22 s of a million-row
``INSERT ... SELECT`` measured here, against 4 s without them. The rows are written only by
tagger, from ``items`` and the job it has just created, so the keys guarded nothing those
statements could break; what they did that matters is the cascade when an item or a job is
deleted. On Postgres the keys are replaced by two statement-level triggers that do that
cascade with one set-based DELETE per statement (transition tables). SQLite (embedded,
small) keeps the keys.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

CASCADES = {
    # trigger on -> (ledger column, referenced column)
    "items": ("item_id", "item_id"),
    "jobs": ("job_id", "id"),
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_constraint("job_items_item_id_fkey", "job_items", type_="foreignkey")
    op.drop_constraint("job_items_job_id_fkey", "job_items", type_="foreignkey")
    for table, (column, ref) in CASCADES.items():
        op.execute(
            f"""
CREATE FUNCTION tagger_{table}_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM job_items j USING gone WHERE j.{column} = gone.{ref};
    RETURN NULL;
END $$"""
        )
        op.execute(
            f"""
CREATE TRIGGER tagger_{table}_deleted AFTER DELETE ON {table}
REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
EXECUTE FUNCTION tagger_{table}_deleted()"""
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in CASCADES:
        op.execute(f"DROP TRIGGER tagger_{table}_deleted ON {table}")
        op.execute(f"DROP FUNCTION tagger_{table}_deleted()")
    op.create_foreign_key(
        "job_items_job_id_fkey", "job_items", "jobs", ["job_id"], ["id"], ondelete="CASCADE"
    )
    op.create_foreign_key(
        "job_items_item_id_fkey",
        "job_items",
        "items",
        ["item_id"],
        ["item_id"],
        ondelete="CASCADE",
    )
