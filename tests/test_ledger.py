"""A job's members are its batches; an item is pending until a settled ledger row says
otherwise, on Postgres and on SQLite alike."""

from __future__ import annotations

import sqlalchemy as sa

from tagger.db import Item, Job, JobBatch, JobItem, make_engine, make_session_factory, upgrade
from tagger.deliveries import start_delivery
from tagger.jobs import create_job, hand_over_job, open_job, record_outcomes
from tagger.ledger import (
    add_batches,
    batch_pages,
    item_states,
    pending_ids,
    rebatch,
    write_batches,
)
from tagger.pending import count_pending, pending_batches
from tagger.states import JobKind


def _items(sessions, n: int, prefix: str = "i") -> list[str]:
    ids = [f"{prefix}{k:03d}" for k in range(n)]
    with sessions.begin() as s:
        s.add_all([Item(item_id=i, image_uri=f"/x/{i}.jpg") for i in ids])
    return ids


def test_set_based_write_cuts_batches_in_id_order(sessions):
    """write_batches numbers the selected ids in item-id order and cuts batches of the
    size asked, the last one short; it returns (batches, items)."""
    ids = _items(sessions, 10)
    with sessions.begin() as s:
        job = open_job(session=s, kind=JobKind.IMPORT, source="t", batch_size=4)
        written = write_batches(
            session=s,
            job_id=job.id,
            ids_sql="SELECT item_id FROM items WHERE item_id <> :skip",
            params={"skip": "i005"},
            batch_size=4,
        )
        job_id = job.id
    assert written == (3, 9)
    with sessions() as s:
        rows = s.execute(
            sa.select(JobBatch.seq, JobBatch.item_ids).where(JobBatch.job_id == job_id)
        ).all()
    expected = [i for i in ids if i != "i005"]
    assert [(seq, list(b)) for seq, b in sorted(rows)] == [
        (0, expected[:4]),
        (1, expected[4:8]),
        (2, expected[8:]),
    ]


def test_a_job_writes_no_item_rows_until_delivery(sessions):
    """A new job of 10 items is 3 batch rows and no job_items rows; a delivery writes
    rows for its batch only."""
    ids = _items(sessions, 10)
    with sessions.begin() as s:
        job_id = create_job(
            session=s, kind=JobKind.IMPORT, source="t", item_ids=ids, batch_size=4
        ).id
    with sessions() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(JobItem)) == 0
        assert s.scalar(sa.select(sa.func.count()).select_from(JobBatch)) == 3
    with sessions.begin() as s:
        assert start_delivery(session=s, job_id=job_id, item_ids=ids[:4]) == dict.fromkeys(
            ids[:4], 0
        )
    with sessions() as s:
        assert sorted(s.scalars(sa.select(JobItem.item_id))) == ids[:4]
        assert item_states(session=s, job_id=job_id) == dict.fromkeys(ids, "pending")


def test_resume_reads_only_pending_items_packed_in_full_batches(sessions):
    """Settled items (tagged, failed) drop out of the read-back; the rest are packed into
    full batches, in the order queued, whatever the page size."""
    ids = _items(sessions, 10)
    with sessions.begin() as s:
        job_id = create_job(
            session=s, kind=JobKind.IMPORT, source="t", item_ids=ids, batch_size=4
        ).id
        record_outcomes(
            session=s, job_id=job_id, tagged=["i001", "i002"], failed={"i008": "corrupt_image"}
        )
    left = [i for i in ids if i not in ("i001", "i002", "i008")]
    with sessions() as s:
        assert list(pending_batches(session=s, job_id=job_id, batch_size=4)) == [
            left[:4],
            left[4:],
        ]
        for page in (1, 2, 5):
            pages = batch_pages(session=s, job_id=job_id, pending_only=True, page=page)
            assert [i for b in rebatch(pages, 3) for i in b] == left
        assert pending_ids(session=s, job_id=job_id) == left
        assert count_pending(session=s, job_id=job_id) == len(left)


def test_a_batch_of_settled_items_drops_out_of_the_read_back(sessions):
    """A batch whose items are all settled yields nothing, and reading goes on past it."""
    ids = _items(sessions, 6)
    with sessions.begin() as s:
        job_id = create_job(
            session=s, kind=JobKind.IMPORT, source="t", item_ids=ids, batch_size=2
        ).id
        record_outcomes(session=s, job_id=job_id, tagged=ids[:4], failed={})
    with sessions() as s:
        pages = list(batch_pages(session=s, job_id=job_id, pending_only=True, page=1))
    assert pages == [[], [], [ids[4:]]]


def test_hand_over_writes_moved_rows_for_never_delivered_items(sessions):
    """A newer job taking items an older live job never delivered marks them moved there
    (rows written now), leaves its settled ones alone, and counts them once."""
    ids = _items(sessions, 4)
    with sessions.begin() as s:
        old = create_job(session=s, kind=JobKind.IMPORT, source="t", item_ids=ids, batch_size=4)
        record_outcomes(session=s, job_id=old.id, tagged=["i000"], failed={})
        new = create_job(
            session=s, kind=JobKind.RETAG, source="t", item_ids=["i000", "i001"], batch_size=4
        )
        assert hand_over_job(session=s, to_job_id=new.id) == {old.id: 1}
        assert hand_over_job(session=s, to_job_id=new.id) == {}
        old_id = old.id
    with sessions() as s:
        assert item_states(session=s, job_id=old_id) == {
            "i000": "tagged",
            "i001": "moved",
            "i002": "pending",
            "i003": "pending",
        }
        job = s.get(Job, old_id)
        assert (job.done, job.moved, job.status) == (1, 1, "running")


def test_add_batches_continues_the_numbering(sessions):
    """A second call with first_seq appends batches after the first ones."""
    ids = _items(sessions, 5)
    with sessions.begin() as s:
        job = open_job(session=s, kind=JobKind.RETAG, source="t", batch_size=2)
        add_batches(session=s, job_id=job.id, item_ids=ids[:3], batch_size=2)
        add_batches(session=s, job_id=job.id, item_ids=ids[3:], batch_size=2, first_seq=2)
        job_id = job.id
    with sessions() as s:
        pages = list(batch_pages(session=s, job_id=job_id, pending_only=False))
    assert pages == [[ids[:2], ids[2:3], ids[3:]]]


def _migrate_ledger(url: str) -> None:
    upgrade(url, "0006")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO items (item_id, image_uri) VALUES "
                "('a', '/a'), ('b', '/b'), ('c', '/c')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO jobs (id, kind, status, total, done, failed, skipped, moved, "
                "batch_size, created_at, updated_at) VALUES "
                "(7, 'import', 'running', 3, 1, 0, 0, 0, 2, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO job_items (job_id, item_id, state, updated_at, attempts, deaths, "
                "started_at) VALUES "
                "(7, 'a', 'tagged', CURRENT_TIMESTAMP, 1, 0, NULL), "
                "(7, 'b', 'pending', CURRENT_TIMESTAMP, 2, 1, CURRENT_TIMESTAMP), "
                "(7, 'c', 'pending', CURRENT_TIMESTAMP, 0, 0, NULL)"
            )
        )
    upgrade(url)
    sessions = make_session_factory(engine)
    with sessions() as s:
        assert item_states(session=s, job_id=7) == {"a": "tagged", "b": "pending", "c": "pending"}
        # The never-delivered row went; the delivered one keeps its counts.
        rows = s.execute(sa.select(JobItem.item_id, JobItem.attempts, JobItem.deaths)).all()
        assert sorted(rows) == [("a", 1, 0), ("b", 2, 1)]
        assert list(pending_batches(session=s, job_id=7, batch_size=2)) == [["b", "c"]]
    engine.dispose()


def test_migration_0007_writes_existing_jobs_as_batches_on_postgres():
    """Upgrading a 0006 database with a running job keeps every member and state."""
    from tests.services import postgres_database

    with postgres_database() as url:
        _migrate_ledger(url)


def test_migration_0007_writes_existing_jobs_as_batches_on_sqlite(tmp_path):
    """The same on the embedded database."""
    _migrate_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
