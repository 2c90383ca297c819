"""Job statuses, item states and job kinds are named once (tagger.states), yet stored,
printed and serialized as the same plain words as before they had names."""

from __future__ import annotations

import csv
import io
import json

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from tagger.db import Item
from tagger.deliveries import start_delivery
from tagger.jobs import create_job, hand_over, mark_started, record_outcomes
from tagger.states import ACTIVE_STATUSES, STALLED, ItemState, JobKind, JobStatus
from tests.test_imports import PACKAGE, import_graph

ALL_MEMBERS = [*JobStatus, *ItemState, *JobKind]


def test_the_words_are_the_ones_stored_and_shown():
    """The values are exactly the words the database and `tagger jobs` have always held."""
    assert [s.value for s in JobStatus] == ["queued", "running", "finished"]
    assert [s.value for s in ItemState] == ["pending", "tagged", "failed", "moved"]
    assert [k.value for k in JobKind] == ["import", "run", "retag", "shadow"]
    assert ACTIVE_STATUSES == ("queued", "running")
    assert STALLED == "stalled" and STALLED not in ACTIVE_STATUSES


@pytest.mark.parametrize("member", ALL_MEMBERS, ids=str)
def test_a_member_prints_and_serializes_as_its_plain_word(member):
    """str(), format(), %-formatting, JSON and CSV all give the bare word."""
    word = member.value
    assert type(word) is str
    assert str(member) == f"{member}" == f"{member:>0}" == format(member) == word
    assert "%s" % member == word  # noqa: UP031 - how logging formats its arguments
    assert f"{member:>9}" == f"{word:>9}"
    assert json.dumps({"status": member}) == json.dumps({"status": word})
    out = io.StringIO()
    csv.writer(out).writerow([member])
    assert out.getvalue().strip() == word
    # A plain str read back from the database compares (and hashes) equal to the member.
    assert member == word and word == member and {word: 1}[member] == 1


def test_the_states_module_imports_nothing_from_tagger():
    """Every module may import it, so it must import none of them."""
    assert import_graph(PACKAGE)["tagger.states"] == set()


def _raw(sessions: sessionmaker[Session], sql: str) -> list[tuple]:
    # Raw SQL, no ORM: the words as the columns hold them.
    with sessions() as s:
        return [tuple(row) for row in s.execute(sa.text(sql))]


def test_the_columns_store_the_plain_words(sessions):
    """Every write path (ORM insert, bulk insert, UPDATE ... SET, sa.case) stores the bare
    word, never an enum name or repr, on both databases."""
    ids = ["a", "b", "c", "d"]
    with sessions.begin() as s:
        s.add_all([Item(item_id=i, image_uri=f"/x/{i}.jpg") for i in ids])
        s.flush()
        old = create_job(session=s, kind=JobKind.IMPORT, source="t", item_ids=ids, batch_size=4)
        empty = create_job(session=s, kind=JobKind.RUN, source="t", item_ids=[], batch_size=4)
        old_id, empty_id = old.id, empty.id
    assert _raw(sessions, "SELECT id, kind, status FROM jobs ORDER BY id") == [
        (old_id, "import", "queued"),
        (empty_id, "run", "finished"),
    ]
    # A delivery writes the pending rows (an upsert); the first one only.
    for _ in range(2):
        with sessions.begin() as s:
            start_delivery(session=s, job_id=old_id, item_ids=ids)
    assert _raw(sessions, "SELECT DISTINCT state, attempts FROM job_items") == [("pending", 2)]

    with sessions.begin() as s:
        mark_started(session=s, job_id=old_id)
    assert _raw(sessions, f"SELECT status FROM jobs WHERE id = {old_id}") == [("running",)]

    with sessions.begin() as s:
        record_outcomes(session=s, job_id=old_id, tagged=["a"], failed={"b": "corrupt_image"})
        new = create_job(
            session=s, kind=JobKind.RETAG, source="t", item_ids=["c", "d"], batch_size=4
        )
        new_id = new.id
        hand_over(session=s, item_ids=["c", "d"], to_job_id=new_id)
    items = "SELECT job_id, item_id, state FROM job_items ORDER BY job_id, item_id"
    assert _raw(sessions, items) == [
        (old_id, "a", "tagged"),
        (old_id, "b", "failed"),
        (old_id, "c", "moved"),
        (old_id, "d", "moved"),
    ]
    jobs = "SELECT id, kind, status FROM jobs ORDER BY id"
    # hand_over's sa.case closed the old job.
    assert _raw(sessions, jobs)[0] == (old_id, "import", "finished")
    assert _raw(sessions, jobs)[2] == (new_id, "retag", "queued")

    # record_outcomes' sa.case: running while items are left, then finished.
    with sessions.begin() as s:
        record_outcomes(session=s, job_id=new_id, tagged=["c"], failed={})
    assert _raw(sessions, jobs)[2] == (new_id, "retag", "running")
    with sessions.begin() as s:
        record_outcomes(session=s, job_id=new_id, tagged=[], failed={"d": "corrupt_image"})
    rows = _raw(sessions, jobs)
    assert rows == [
        (old_id, "import", "finished"),
        (empty_id, "run", "finished"),
        (new_id, "retag", "finished"),
    ]
    assert all(type(v) is str for row in rows for v in row[1:])
