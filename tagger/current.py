"""Each item's current tag, kept in a table rather than computed per query.

``current_tag_rows`` holds one row per tagged item: which version's tag it shows (the active
version's tag where the item has one, else its newest) and that tag's label and score
columns, so the ``current_tags`` view (this table, plus the tag's full ``scores``) filters,
sorts and counts through ordinary indexes. Computing the choice per query (a window over
every tag row) cost seconds per million items on every query.

Only tags of versions that are or have been active count: a version never activated (a
candidate whose shadow tags `tagger model compare` wrote, tagger.shadow) is never shown, not
even as an item's newest tag, and an item whose only tags are such is still ``untagged``.
Once it is activated its tags count like any other's (its shadow tags then show at once).

Three writers keep it true, each in the caller's transaction:
- ``save_batch`` (``note_new_tags``): a new tag becomes current when it is from the active
  version, or when the item shows no active tag and the new one is at least as new
  (a shadow job's batch calls neither: tagger.tags.save_batch);
- activation and rollback (``refresh_current_tags``): every item's choice is made again;
- pruning never deletes a current tag (``tags.prune_tags`` ranks like this module).

On a large Postgres catalogue ``refresh_current_tags`` builds the next table beside the live
one and swaps it in at commit (readers see the old rows or the new ones, never a mixture;
tag writers wait for the commit), because updating millions of rows in place maintains every
index row by row: about 30 µs a row measured, minutes at 10 M items, where a bulk build and
fresh indexes take a fraction of that.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tagger.batching import chunked

TABLE = "current_tag_rows"
COLUMNS = "item_id, model_version, gender, gender_score, product_type, product_score, tagged_at"
#: After ``fresh``, in the table's column order: the tag's margin (nullable) and whether
#: the row shows a person's label (tagger.labels).
EXTRA = "product_margin, human"
#: Postgres catalogues with more items than this are refreshed by building and swapping.
SWAP_ABOVE = 50_000
#: The secondary indexes (name suffix, columns, predicate); the swap rebuilds them
#: under these names.
INDEXES = (
    # Filters and counts by product type; `tagger tags --product-type X` pages in item-id
    # order walk the primary key instead (19-47 ms a page of 1,000 at 10 M items), since a
    # (product_type, item_id) index cost 30-40 s of every activation to build.
    ("product_score", "product_type, product_score", ""),
    ("tagged_at", "tagged_at", ""),
    # what the sweep queues: the items whose tag shown is not fresh (few, between roll-outs)
    ("stale", "item_id", " WHERE NOT fresh"),
    # `tagger tags --source human`: the labelled items (few)
    ("human", "item_id", " WHERE human"),
    # the review queue: needs_review rows, lowest margin first, paged by (margin, item id)
    ("margin", "product_margin, item_id", ""),
)
ACTIVE = "(SELECT version FROM model_versions WHERE is_active)"
#: The versions whose tags may be shown: active now or before (activation sets
#: ``activated_at``, and nothing clears it).
SHOWN_VERSIONS = "SELECT version FROM model_versions WHERE is_active OR activated_at IS NOT NULL"
#: The table's foreign keys (name, definition), as migration 0004 creates them; the swap
#: adds them to the next table under these names.
FOREIGN_KEYS = (
    (f"fk_{TABLE}_item", "FOREIGN KEY (item_id) REFERENCES items (item_id) ON DELETE CASCADE"),
    # No cascade: deleting a tag that is still shown is a bug, and fails loudly.
    (
        f"fk_{TABLE}_tag",
        "FOREIGN KEY (item_id, model_version) REFERENCES tags (item_id, model_version)",
    ),
)

# The view: the table plus the tag's ``scores`` and whether it needs review (its confidence
# under its version's threshold for its class: tagger.review). Every join is a left join on
# a unique key, so a query that does not read ``scores``, ``is_active_model`` or
# ``needs_review`` never touches those tables (Postgres removes the join): a count by
# product type reads only the narrow table. A field a person labelled scores 1.0, above
# any threshold, so a labelled field never needs review.
VIEW_SQL = f"""
CREATE VIEW current_tags AS
SELECT c.item_id, c.model_version, mv.is_active AS is_active_model, c.gender, c.gender_score,
       c.product_type, c.product_score, t.scores, c.tagged_at, c.product_margin,
       CASE WHEN c.human THEN 'human' ELSE c.model_version END AS source,
       COALESCE(c.product_margin < rp.threshold, FALSE)
           OR COALESCE(c.gender_score < rg.threshold, FALSE) AS needs_review
FROM {TABLE} c
LEFT JOIN model_versions mv ON mv.version = c.model_version
LEFT JOIN tags t ON t.item_id = c.item_id AND t.model_version = c.model_version
LEFT JOIN review_thresholds rp ON rp.model_version = c.model_version
    AND rp.head = 'product' AND rp.label = c.product_type
LEFT JOIN review_thresholds rg ON rg.model_version = c.model_version
    AND rg.head = 'gender' AND rg.label = c.gender
"""

# The choice for every item at once, exactly as the old window view ranked tags: the
# active version first, then the newest tag, then the highest version name; among the
# tags of versions that are or were active (SHOWN_VERSIONS).
_RANK = (
    f"CASE WHEN t.model_version = COALESCE({ACTIVE}, '') THEN 0 ELSE 1 END, "
    "t.tagged_at DESC, t.model_version DESC"
)
# On Postgres the versions are an array computed once (an InitPlan) and each tag is
# filtered against it as the one sorted pass over the tags primary key reads it: a join
# with model_versions could be planned as a hash join, whose output is unordered, and
# then sort every tag of the catalogue.
_CHOOSE_PG = f"""
SELECT DISTINCT ON (t.item_id) t.item_id, t.model_version, t.gender, t.gender_score,
       t.product_type, t.product_score, t.tagged_at, t.product_margin
FROM tags t WHERE t.model_version = ANY (ARRAY({SHOWN_VERSIONS}))
ORDER BY t.item_id, {_RANK}
"""
_CHOOSE_PORTABLE = f"""
SELECT {COLUMNS}, product_margin FROM (
    SELECT t.item_id, t.model_version, t.gender, t.gender_score, t.product_type,
           t.product_score, t.tagged_at, t.product_margin,
           ROW_NUMBER() OVER (PARTITION BY t.item_id ORDER BY {_RANK}) AS rank
    FROM tags t WHERE t.model_version IN ({SHOWN_VERSIONS})
) ranked WHERE rank = 1
"""
# Fresh: the active version's tag, not older than the item's last change (a newer image or
# title). Only fresh rows are skipped by the sweep.
_FRESH = f"(c.model_version = COALESCE({ACTIVE}, '') AND c.tagged_at >= i.updated_at)"
# What a row shows: the tag ``c``, with a person's label ``l`` (if any) over it; a field
# the label sets scores 1.0. Column by column in the table's order.
_SHOWN = """c.item_id, c.model_version,
       COALESCE(l.gender, c.gender) AS gender,
       CASE WHEN l.gender IS NULL THEN c.gender_score ELSE 1.0 END AS gender_score,
       COALESCE(l.product_type, c.product_type) AS product_type,
       CASE WHEN l.product_type IS NULL THEN c.product_score ELSE 1.0 END AS product_score,
       c.tagged_at, {fresh} AS fresh,
       CASE WHEN l.product_type IS NULL THEN c.product_margin ELSE 1.0 END AS product_margin,
       l.item_id IS NOT NULL AS human"""
_WITH_FRESH = f"""
SELECT {_SHOWN}
FROM ({{choose}}) c JOIN items i ON i.item_id = c.item_id
LEFT JOIN labels l ON l.item_id = c.item_id
"""
# An item with a current row has a tag: where the flag says otherwise (tags written with
# SQL and then activated), the sweep would queue it twice over.
_HEAL_UNTAGGED = f"""
UPDATE items SET untagged = FALSE
WHERE untagged AND EXISTS (SELECT 1 FROM {TABLE} c WHERE c.item_id = items.item_id)
"""

# A new tag replaces the item's current one when it is the same tag rewritten, or from the
# active version, or when the item shows no active tag and the new one ranks first among
# the rest (newer, or as new with a higher version name). A version never active writes
# nothing here (and leaves its items untagged), as the choice above leaves its tags out.
_NOTE_NEW = f"""
INSERT INTO {TABLE} ({COLUMNS}, fresh, {EXTRA})
SELECT {_SHOWN.format(fresh=_FRESH)}
FROM tags c JOIN items i ON i.item_id = c.item_id
LEFT JOIN labels l ON l.item_id = c.item_id
WHERE c.model_version = :version AND c.item_id IN ({{ids}})
  AND c.model_version IN ({SHOWN_VERSIONS})
ON CONFLICT (item_id) DO UPDATE SET
    model_version = excluded.model_version, gender = excluded.gender,
    gender_score = excluded.gender_score, product_type = excluded.product_type,
    product_score = excluded.product_score, tagged_at = excluded.tagged_at,
    fresh = excluded.fresh, product_margin = excluded.product_margin, human = excluded.human
WHERE excluded.model_version = {TABLE}.model_version
   OR excluded.model_version = COALESCE({ACTIVE}, '')
   OR ({TABLE}.model_version <> COALESCE({ACTIVE}, '')
       AND (excluded.tagged_at > {TABLE}.tagged_at
            OR (excluded.tagged_at = {TABLE}.tagged_at
                AND excluded.model_version > {TABLE}.model_version)))
"""
_NOTE_TAGGED = f"""
UPDATE items SET untagged = FALSE WHERE untagged AND item_id IN ({{ids}})
  AND :version IN ({SHOWN_VERSIONS})
"""


def note_new_tags(*, session: Session, model_version: str, item_ids: Sequence[str]) -> None:
    """Make the just-written tags of ``model_version`` current where they should be.
    ``item_ids`` sorted, so concurrent batches lock rows in the same order."""
    for chunk in chunked(sorted(item_ids), 1000):
        names = [f"i{n}" for n in range(len(chunk))]
        ids = ", ".join(f":{n}" for n in names)
        params = dict(zip(names, chunk, strict=True))
        session.execute(sa.text(_NOTE_NEW.format(ids=ids)), {"version": model_version, **params})
        session.execute(sa.text(_NOTE_TAGGED.format(ids=ids)), {"version": model_version, **params})


def refresh_current_tags(*, session: Session, swap_above: int | None = None) -> int:
    """Choose every item's current tag again (after activation or rollback); returns the
    number of items that have one. In the caller's transaction: nothing shows until it
    commits, and a rollback leaves the old choice."""
    bind = session.get_bind()
    limit = SWAP_ABOVE if swap_above is None else swap_above
    if bind.dialect.name == "postgresql":
        # Tag writers wait from here to commit, so no batch lands in the old table after
        # the new one was read from ``tags``; readers carry on with the old rows meanwhile.
        session.execute(sa.text(f"LOCK TABLE {TABLE} IN SHARE MODE"))
        items = session.execute(sa.text(f"SELECT count(*) FROM {TABLE}")).scalar_one()
        if items > limit:
            count = _build_and_swap(session)
            session.execute(sa.text(_HEAL_UNTAGGED))
            return count
        choose = _CHOOSE_PG
    else:
        choose = _CHOOSE_PORTABLE
    # Small catalogues (and SQLite, whose writers are serialised anyway): in place.
    session.execute(sa.text(f"DELETE FROM {TABLE}"))
    count = session.execute(
        sa.text(f"INSERT INTO {TABLE} ({COLUMNS}, fresh, {EXTRA}) {_chosen(choose)}")
    )
    session.execute(sa.text(_HEAL_UNTAGGED))
    return count.rowcount


def _chosen(choose: str) -> str:
    return _WITH_FRESH.format(fresh=_FRESH, choose=choose)


def _build_and_swap(session: Session) -> int:
    nxt = f"{TABLE}_next"
    run = session.execute
    # Memory for the one big sort and the index builds of this transaction only.
    run(sa.text("SET LOCAL work_mem = '256MB'"))
    run(sa.text("SET LOCAL maintenance_work_mem = '1GB'"))
    # Compiling this one statement's expressions cost more than they saved.
    run(sa.text("SET LOCAL jit = off"))
    run(sa.text(f"DROP TABLE IF EXISTS {nxt}"))
    # CREATE TABLE AS may run its SELECT in parallel, an INSERT ... SELECT never does: 43 s
    # against 54 s at 10 M items. Its columns take the types of ``tags``' columns, which
    # are this table's; the NOT NULLs and the default are added after.
    count = run(sa.text(f"CREATE TABLE {nxt} AS {_chosen(_CHOOSE_PG)}")).rowcount
    flags = ("fresh", "human")
    not_null = ", ".join(f"ALTER COLUMN {c} SET NOT NULL" for c in (*COLUMNS.split(", "), *flags))
    defaults = ", ".join(f"ALTER COLUMN {c} SET DEFAULT FALSE" for c in flags)
    run(sa.text(f"ALTER TABLE {nxt} {not_null}, {defaults}"))
    run(sa.text(f"ALTER TABLE {nxt} ADD CONSTRAINT {nxt}_pkey PRIMARY KEY (item_id)"))
    for suffix, cols, where in INDEXES:
        run(sa.text(f"CREATE INDEX ix_{nxt}_{suffix} ON {nxt} ({cols}){where}"))
    # The foreign keys hold by construction (every row was read from ``tags``), so they are
    # added without a scan; they are enforced for every later write all the same.
    for name, ref in FOREIGN_KEYS:
        run(sa.text(f"ALTER TABLE {nxt} ADD CONSTRAINT {name}_next {ref} NOT VALID"))
    # Point the view at the new table before dropping the old one: CREATE OR REPLACE keeps
    # any view a user built on current_tags valid.
    run(sa.text(VIEW_SQL.replace("CREATE VIEW", "CREATE OR REPLACE VIEW").replace(TABLE, nxt)))
    run(sa.text(f"DROP TABLE {TABLE}"))
    run(sa.text(f"ALTER TABLE {nxt} RENAME TO {TABLE}"))
    run(sa.text(f"ALTER INDEX {nxt}_pkey RENAME TO {TABLE}_pkey"))
    for suffix, _, _ in INDEXES:
        run(sa.text(f"ALTER INDEX ix_{nxt}_{suffix} RENAME TO ix_{TABLE}_{suffix}"))
    for name, _ in FOREIGN_KEYS:
        run(sa.text(f"ALTER TABLE {TABLE} RENAME CONSTRAINT {name}_next TO {name}"))
    run(sa.text(f"ANALYZE {TABLE}"))
    return count


_APPLY_LABELS = f"""
UPDATE {TABLE} SET gender = s.gender, gender_score = s.gender_score,
    product_type = s.product_type, product_score = s.product_score,
    product_margin = s.product_margin, human = s.human
FROM (
    SELECT {_SHOWN.format(fresh="r.fresh")}
    FROM {TABLE} r
    JOIN tags c ON c.item_id = r.item_id AND c.model_version = r.model_version
    LEFT JOIN labels l ON l.item_id = r.item_id
    WHERE r.item_id IN ({{ids}})
) s
WHERE {TABLE}.item_id = s.item_id
"""


def apply_labels(*, session: Session, item_ids: Sequence[str]) -> None:
    """Show the items' labels (or, where a label was cleared, their model tags again) in
    their current rows, in the caller's transaction. An item with no tag yet has no row:
    its label shows once it is tagged (every writer above reads ``labels``)."""
    for chunk in chunked(sorted(set(item_ids)), 1000):
        names = [f"i{n}" for n in range(len(chunk))]
        ids = ", ".join(f":{n}" for n in names)
        session.execute(
            sa.text(_APPLY_LABELS.format(ids=ids)), dict(zip(names, chunk, strict=True))
        )
