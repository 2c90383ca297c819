"""current_tag_rows loses its (product_type, item_id) index

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

An activation rebuilds every index of ``current_tag_rows`` (tagger.current); at 10 M items
the (product_type, item_id) index took 30-40 s of it, nearly every sort comparison falling
through the 48 product types to a collated text comparison of item ids. What it served,
`tagger tags --product-type X` pages in item-id order, walks the primary key instead with
the type as a filter: 19-47 ms for a page of 1,000 at 10 M items; a rare type is read
through the (product_type, product_score) index and sorted.
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TABLE = "current_tag_rows"


def upgrade() -> None:
    op.drop_index(f"ix_{TABLE}_product_item", table_name=TABLE)


def downgrade() -> None:
    op.create_index(f"ix_{TABLE}_product_item", TABLE, ["product_type", "item_id"])
