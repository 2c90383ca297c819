"""A job's members: the batches it queued (``job_batches``, one row per batch) and, per
item, what became of it (``job_items``, written on delivery). An item of a job is pending
until it has a ``job_items`` row in a settled state (tagged, failed, moved).

Why batches: a planner that wrote a pending row per item spent 8-13 s per million items on
rows (and three indexes) that mostly said nothing but "queued"; a row per batch of 64 costs
a sixtieth of that, and the batches are what gets published anyway.

SQL here reads a batch's ids with ``unnest`` (Postgres, ``text[]``) or ``json_each``
(SQLite, a JSON array); everything else is the same statement on both.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tagger.batching import chunked
from tagger.db import JobBatch, JobItem, is_postgres
from tagger.states import ItemState

#: Batch rows per page when a job's batches are read back.
PAGE_BATCHES = 128
SETTLED = tuple(s.value for s in (ItemState.TAGGED, ItemState.FAILED, ItemState.MOVED))
_SETTLED_SQL = ", ".join(f"'{s}'" for s in SETTLED)


def members_sql(session: Session) -> str:
    """FROM-clause SQL of every job's members, aliased ``b`` (the batch row: job_id, seq)
    and ``m`` (the member; its id is :func:`member_id`)."""
    if is_postgres(session):
        return "job_batches b CROSS JOIN LATERAL unnest(b.item_ids) AS m(item_id)"
    return "job_batches b, json_each(b.item_ids) m"


def member_id(session: Session) -> str:
    return "m.item_id" if is_postgres(session) else "m.value"


def not_settled(session: Session, job: str) -> str:
    """SQL true when the member ``m`` of job ``job`` (an SQL expression) is still pending."""
    return (
        f"NOT EXISTS (SELECT 1 FROM job_items ji WHERE ji.job_id = {job} "
        f"AND ji.item_id = {member_id(session)} AND ji.state IN ({_SETTLED_SQL}))"
    )


def ids_param(session: Session, ids: Sequence[str]) -> object:
    """A list of ids as one bound parameter that :func:`ids_source` reads back."""
    return list(ids) if is_postgres(session) else json.dumps(list(ids))


def ids_source(session: Session, param: str) -> str:
    """SQL of a one-column (item_id) row source over the ids bound as ``:param``."""
    if is_postgres(session):
        return f"SELECT unnest(CAST(:{param} AS text[])) AS item_id"
    return f"SELECT value AS item_id FROM json_each(:{param})"


# --- writing --------------------------------------------------------------------------


def add_batches(
    *, session: Session, job_id: int, item_ids: Sequence[str], batch_size: int, first_seq: int = 0
) -> int:
    """Write ``item_ids`` (each once) as the job's batches, in the order given; returns the
    number of batches."""
    rows = [
        {"job_id": job_id, "seq": first_seq + n, "item_ids": list(batch)}
        for n, batch in enumerate(chunked(list(item_ids), batch_size))
    ]
    for chunk in chunked(rows, 500):
        session.execute(sa.insert(JobBatch), chunk)
    return len(rows)


def write_batches(
    *,
    session: Session,
    job_id: int,
    ids_sql: str,
    batch_size: int,
    params: dict[str, object] | None = None,
    first_seq: int = 0,
    in_id_order: bool = True,
) -> tuple[int, int]:
    """``INSERT INTO job_batches ... SELECT`` the item ids ``ids_sql`` selects (one column,
    ``item_id``, each id once) cut into batches of ``batch_size``, in item-id order (else in
    the order the rows come); returns (batches, items). Set-based: the ids never travel to
    Python."""
    order = "ORDER BY item_id" if in_id_order else ""
    agg = "array_agg(item_id ORDER BY rn)" if is_postgres(session) else "json_group_array(item_id)"
    size = "cardinality(item_ids)" if is_postgres(session) else "json_array_length(item_ids)"
    rows = session.execute(
        sa.text(
            f"""
            INSERT INTO job_batches (job_id, seq, item_ids)
            SELECT :ledger_job, :ledger_first + (rn - 1) / :ledger_size, {agg}
            FROM (SELECT item_id, row_number() OVER ({order}) AS rn FROM ({ids_sql}) ids) numbered
            WHERE true
            GROUP BY (rn - 1) / :ledger_size
            RETURNING {size}
            """
        ),
        {
            **(params or {}),
            "ledger_job": job_id,
            "ledger_first": first_seq,
            "ledger_size": batch_size,
        },
    ).all()
    return len(rows), sum(int(n) for (n,) in rows)


def next_seq(*, session: Session, job_id: int) -> int:
    last = session.scalar(sa.select(sa.func.max(JobBatch.seq)).where(JobBatch.job_id == job_id))
    return 0 if last is None else int(last) + 1


# --- reading --------------------------------------------------------------------------


def batch_pages(
    *, session: Session, job_id: int, pending_only: bool, page: int | None = None
) -> Iterator[list[list[str]]]:
    """The job's batches in order, ``page`` batch rows per query (default PAGE_BATCHES);
    with ``pending_only`` each batch keeps only its items still pending (and empty ones
    are dropped). Every page is read in ``session``."""
    return session_pages(
        lambda: nullcontext(session), job_id=job_id, pending_only=pending_only, page=page
    )


def session_pages(
    open_session: Callable[[], AbstractContextManager[Session]],
    *,
    job_id: int,
    pending_only: bool,
    page: int | None = None,
) -> Iterator[list[list[str]]]:
    """:func:`batch_pages`, each page read in a session ``open_session()`` opens (a short
    one per page: nothing held open between pages)."""
    page = page or PAGE_BATCHES
    after = -1
    while True:
        with open_session() as session:
            batches, after = read_page(
                session=session, job_id=job_id, after=after, page=page, pending_only=pending_only
            )
        if batches is None:
            return
        yield batches


def read_page(
    *, session: Session, job_id: int, after: int, page: int, pending_only: bool
) -> tuple[list[list[str]] | None, int]:
    """The job's next ``page`` batch rows after seq ``after``: (their batches, the last
    seq read), or (None, after) when none are left. A keyset range on the primary key."""
    rows = session.execute(
        sa.select(JobBatch.seq, JobBatch.item_ids)
        .where(JobBatch.job_id == job_id, JobBatch.seq > after)
        .order_by(JobBatch.seq)
        .limit(page)
    ).all()
    if not rows:
        return None, after
    batches = [list(ids) for _, ids in rows]
    if pending_only:
        done = settled_ids(session=session, job_id=job_id, item_ids=[i for b in batches for i in b])
        batches = [kept for b in batches if (kept := [i for i in b if i not in done])]
    return batches, int(rows[-1].seq)


def settled_ids(*, session: Session, job_id: int, item_ids: Sequence[str]) -> set[str]:
    """Which of ``item_ids`` the job has settled (tagged, failed or moved)."""
    sql = (
        f"SELECT ji.item_id FROM job_items ji WHERE ji.job_id = :job "
        f"AND ji.state IN ({_SETTLED_SQL}) AND ji.item_id IN ({ids_source(session, 'ids')})"
    )
    params = {"job": job_id, "ids": ids_param(session, item_ids)}
    return {str(i) for (i,) in session.execute(sa.text(sql), params)}


def rebatch(pages: Iterator[list[list[str]]], batch_size: int) -> Iterator[list[str]]:
    """Full batches of ``batch_size`` from partly settled ones (only the last is short)."""
    carry: list[str] = []
    for page in pages:
        for batch in page:
            carry.extend(batch)
            while len(carry) >= batch_size:
                yield carry[:batch_size]
                carry = carry[batch_size:]
    if carry:
        yield carry


def member_ids(*, session: Session, job_id: int) -> sa.TextClause:
    """SQL selecting the job's member ids (column ``item_id``), bound to ``job_id``."""
    return sa.text(
        f"SELECT {member_id(session)} AS item_id FROM {members_sql(session)} "
        "WHERE b.job_id = :members_job"
    ).bindparams(members_job=job_id)


def pending_ids(*, session: Session, job_id: int) -> list[str]:
    """Every pending item of the job, sorted (small jobs and tests)."""
    sql = (
        f"SELECT {member_id(session)} FROM {members_sql(session)} WHERE b.job_id = :job "
        f"AND {not_settled(session, ':job')} ORDER BY 1"
    )
    return [str(i) for (i,) in session.execute(sa.text(sql), {"job": job_id})]


def batch_count(*, session: Session, job_id: int) -> int:
    return int(
        session.scalar(
            sa.select(sa.func.count()).select_from(JobBatch).where(JobBatch.job_id == job_id)
        )
        or 0
    )


def item_states(*, session: Session, job_id: int) -> dict[str, str]:
    """Every member of the job with its state: its ledger row's, else pending."""
    states = {
        i: ItemState.PENDING.value
        for b in batch_pages(session=session, job_id=job_id, pending_only=False)
        for ids in b
        for i in ids
    }
    rows = session.execute(
        sa.select(JobItem.item_id, JobItem.state).where(JobItem.job_id == job_id)
    )
    states.update({item_id: str(state) for item_id, state in rows})
    return states


def has_members(*, session: Session, job_id: int) -> bool:
    return bool(session.scalar(sa.select(sa.exists().where(JobBatch.job_id == job_id))))
