"""Ledger retention: old finished jobs lose their per-item ledger rows, in chunks, and
nothing else; `tagger jobs prune`, how a pruned job reads afterwards, and the nightly
task that runs it after the sweep."""

from __future__ import annotations

import json
import os
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tagger.db import Failure, Item, Job, JobItem, utcnow
from tagger.jobs import create_job, record_outcomes
from tagger.ledger import item_states
from tagger.retention import delete_ledger_chunk, ledger_pruned, prune_ledgers
from tagger.states import JobKind
from tests import services
from tests.factories import add_model_version

DAY = timedelta(days=1)


def _job(session_factory, prefix: str, n: int, *, finished_days_ago: float | None) -> int:
    """A job over n new items; finished (all tagged but the last, failed) that many days
    ago, or left queued when None."""
    ids = [f"{prefix}{k:03d}" for k in range(n)]
    with session_factory.begin() as s:
        s.add_all([Item(item_id=i, image_uri=f"/x/{i}.jpg") for i in ids])
        s.flush()
        job_id = create_job(
            session=s, kind=JobKind.IMPORT, source="t", item_ids=ids, batch_size=4
        ).id
        if finished_days_ago is not None:
            record_outcomes(
                session=s,
                job_id=job_id,
                tagged=ids[:-1],
                failed=dict.fromkeys(ids[-1:], "corrupt_image"),
            )
            s.add(Failure(item_id=ids[-1], job_id=job_id, reason="missing_image", message="x"))
            at = utcnow() - finished_days_ago * DAY
            s.execute(sa.update(Job).where(Job.id == job_id).values(finished_at=at))
    return job_id


def _rows(session_factory, job_id: int) -> int:
    """The job's items the ledger still knows (members of its batches, with their state)."""
    with session_factory() as s:
        return len(item_states(session=s, job_id=job_id))


def _counters(session_factory, job_id: int) -> tuple:
    with session_factory() as s:
        j = s.get(Job, job_id)
        return j.status, j.total, j.done, j.failed, j.moved


def test_old_finished_jobs_lose_only_their_ledger_rows(session_factory):
    """A job finished 20 days ago loses every job_items row; its counters and failures stay."""
    old = _job(session_factory, "o", 25, finished_days_ago=20)
    counters = _counters(session_factory, old)
    done = prune_ledgers(sessions=session_factory, older_than_days=14)
    assert (done.jobs, done.rows) == (1, 25)
    assert _rows(session_factory, old) == 0
    assert _counters(session_factory, old) == counters == ("finished", 25, 24, 1, 0)
    with session_factory() as s:
        assert s.scalars(sa.select(Failure.item_id)).all() == ["o024"]
        assert ledger_pruned(session=s, job=s.get(Job, old))


def test_running_queued_and_recent_jobs_are_untouched(session_factory):
    """Queued, running (even if old) and recently finished jobs keep every ledger row."""
    queued = _job(session_factory, "q", 5, finished_days_ago=None)
    running = _job(session_factory, "r", 5, finished_days_ago=None)
    recent = _job(session_factory, "n", 5, finished_days_ago=3)
    with session_factory.begin() as s:
        record_outcomes(session=s, job_id=running, tagged=["r000"], failed={})
        s.execute(
            sa.update(Job)
            .where(Job.id.in_([queued, running]))
            .values(created_at=utcnow() - 90 * DAY)
        )
    done = prune_ledgers(sessions=session_factory, older_than_days=14)
    assert (done.jobs, done.rows) == (0, 0)
    assert [_rows(session_factory, j) for j in (queued, running, recent)] == [5, 5, 5]
    with session_factory() as s:
        assert not any(ledger_pruned(session=s, job=s.get(Job, j)) for j in (queued, recent))


def test_prune_is_idempotent(session_factory):
    """A second prune finds nothing left and changes nothing."""
    old = _job(session_factory, "o", 6, finished_days_ago=30)
    first = prune_ledgers(sessions=session_factory, older_than_days=14)
    counters = _counters(session_factory, old)
    second = prune_ledgers(sessions=session_factory, older_than_days=14)
    assert (first.jobs, first.rows, second.jobs, second.rows) == (1, 6, 0, 0)
    assert _counters(session_factory, old) == counters


@pytest.mark.parametrize(("n", "chunk"), [(23, 5), (20, 5), (3, 5), (1, 1)])
def test_chunked_deletion_covers_every_row(session_factory, n, chunk):
    """Chunks of any size, a multiple of the row count or not, delete every row."""
    old = _job(session_factory, "c", n, finished_days_ago=30)
    done = prune_ledgers(sessions=session_factory, older_than_days=14, chunk=chunk)
    assert (done.jobs, done.rows, _rows(session_factory, old)) == (1, n, 0)


def test_one_chunk_deletes_at_most_its_size_in_item_order(session_factory):
    """delete_ledger_chunk takes the next `chunk` rows after the last one it deleted."""
    old = _job(session_factory, "k", 12, finished_days_ago=30)
    with session_factory.begin() as s:
        assert delete_ledger_chunk(session=s, job_id=old, after=None, chunk=5) == (5, "k004")
        assert delete_ledger_chunk(session=s, job_id=old, after="k004", chunk=5) == (5, "k009")
        assert delete_ledger_chunk(session=s, job_id=old, after="k009", chunk=5) == (2, None)
    with session_factory() as s:
        assert s.scalar(sa.select(sa.func.count()).where(JobItem.job_id == old)) == 0


def test_dry_run_counts_and_deletes_nothing(session_factory):
    """--dry-run reports the jobs and rows a prune would delete and leaves them."""
    old = _job(session_factory, "o", 7, finished_days_ago=30)
    done = prune_ledgers(sessions=session_factory, older_than_days=14, dry_run=True)
    assert (done.jobs, done.rows, done.dry_run) == (1, 7, True)
    assert _rows(session_factory, old) == 7


def test_an_empty_finished_job_does_not_read_as_pruned(session_factory):
    """A job that never had items has no ledger rows and is not 'pruned'."""
    with session_factory.begin() as s:
        job = create_job(session=s, kind=JobKind.RUN, source="t", item_ids=[], batch_size=4)
        assert not ledger_pruned(session=s, job=job)


@pytest.fixture
def env(settings_env) -> dict[str, str]:
    return dict(os.environ)


def test_cli_prune_and_a_pruned_job_afterwards(db, env, tagger_cli, session_factory):
    """`jobs prune` prints what it pruned; `jobs ID` keeps the counters and says the ledger
    was pruned; `tags --job ID` is a one-line error instead of an empty result."""
    old = _job(session_factory, "o", 8, finished_days_ago=20)
    recent = _job(session_factory, "n", 4, finished_days_ago=2)
    dry = tagger_cli(env, "jobs", "prune", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would prune the ledger of 1 job finished over 14 days ago: 8 job_items rows" in (
        dry.stderr
    )
    assert _rows(session_factory, old) == 8
    done = tagger_cli(env, "jobs", "prune")
    assert done.returncode == 0, done.stderr
    assert "pruned the ledger of 1 job finished over 14 days ago: 8 job_items rows" in done.stderr
    again = tagger_cli(env, "jobs", "prune", "--older-than", "1")
    assert "pruned the ledger of 1 job finished over 1 days ago: 4 job_items rows" in again.stderr
    assert _rows(session_factory, recent) == 0

    shown = tagger_cli(env, "jobs", str(old), "--format", "json")
    assert shown.returncode == 0, shown.stderr
    (row,) = json.loads(shown.stdout)
    assert (row["total"], row["done"], row["failed"], row["status"]) == (8, 7, 1, "finished")
    assert row["failures"] == "(ledger pruned)"
    assert f"job {old}: its per-item ledger was pruned" in shown.stderr

    refused = tagger_cli(env, "tags", "--job", str(old))
    assert refused.returncode == 1 and refused.stdout == ""
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and f"job {old}: its per-item ledger was pruned" in lines[0]


def test_cli_prune_with_retention_zero_keeps_everything(db, env, tagger_cli, session_factory):
    """TAGGER_LEDGER_RETENTION_DAYS=0 makes a bare `jobs prune` delete nothing and say why;
    the prune options outside `jobs prune` are a usage error."""
    old = _job(session_factory, "o", 3, finished_days_ago=400)
    kept = tagger_cli({**env, "TAGGER_LEDGER_RETENTION_DAYS": "0"}, "jobs", "prune")
    assert kept.returncode == 0 and "keep forever" in kept.stderr
    assert _rows(session_factory, old) == 3
    misuse = tagger_cli(env, "jobs", "--dry-run")
    assert misuse.returncode == 2 and "go with `tagger jobs prune`" in misuse.stderr


def _queued_tasks(redis_db: int, queue: str) -> list[str]:
    # The queue is a Redis list that kombu LPUSHes onto: reversed, it is in sending order.
    client = services.redis_client(redis_db)
    try:
        raw = reversed(client.lrange(queue, 0, -1))
        return [json.loads(message)["headers"]["task"] for message in raw]
    finally:
        client.close()


def test_nightly_sweep_queues_the_prune_which_prunes(settings_env, session_factory, redis_db):
    """The beat's sweep task queues its job's batch, then the prune task; that task run
    deletes the old job's ledger. With retention 0 the sweep queues no prune."""
    from tagger.celery_app import create_app
    from tagger.messages import SWEEP, TAG_BATCH
    from tagger.tasks import PRUNE_LEDGER

    old = _job(session_factory, "o", 4, finished_days_ago=20)
    with session_factory.begin() as s:
        add_model_version(s, "v1", activate=True)  # nothing tagged by v1: all 4 are stale
    app = create_app(settings_env)
    app.tasks[SWEEP].apply(kwargs={"source": "beat", "limit": 100})
    assert _queued_tasks(redis_db, settings_env.queue) == [TAG_BATCH, PRUNE_LEDGER]
    assert _rows(session_factory, old) == 4
    result = app.tasks[PRUNE_LEDGER].apply()
    assert result.get() == {"jobs": 1, "rows": 4}
    assert _rows(session_factory, old) == 0

    services.redis_client(redis_db).flushdb()
    keep = create_app(settings_env.model_copy(update={"ledger_retention_days": 0}))
    keep.tasks[SWEEP].apply(kwargs={"source": "beat", "limit": 100})
    assert PRUNE_LEDGER not in _queued_tasks(redis_db, settings_env.queue)
