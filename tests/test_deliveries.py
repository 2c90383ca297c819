"""Deliveries: each start of a batch is counted on its pending items, and a start that
finds the previous delivery still marked in flight counts that one as a death."""

from __future__ import annotations

from tagger.deliveries import end_delivery, start_delivery
from tagger.jobs import record_outcomes
from tests.factories import ledger_rows, make_job


def test_delivery_that_never_ended_counts_as_a_death(session_factory):
    """A start finds the previous delivery's in-flight mark still set: that one died."""
    job_id = make_job(session_factory)
    batch = ["i0", "i1", "i2"]
    for _ in range(2):  # two deliveries that never ended
        with session_factory.begin() as s:
            deaths = start_delivery(session=s, job_id=job_id, item_ids=batch)
    assert deaths == {"i0": 1, "i1": 1, "i2": 1}
    with session_factory.begin() as s:
        end_delivery(session=s, job_id=job_id, item_ids=batch)
        assert start_delivery(session=s, job_id=job_id, item_ids=batch) == deaths
    assert ledger_rows(session_factory, job_id)["i0"] == ("pending", 3, 1, True)


def test_delivery_counts_only_pendingledger_rows(session_factory):
    """Items already tagged or failed are not counted again when their batch comes back."""
    job_id = make_job(session_factory)
    with session_factory.begin() as s:
        record_outcomes(session=s, job_id=job_id, tagged=["i0"], failed={"i1": "corrupt_image"})
    with session_factory.begin() as s:
        deaths = start_delivery(session=s, job_id=job_id, item_ids=["i0", "i1", "i2"])
    assert deaths == {"i2": 0}
    items = ledger_rows(session_factory, job_id)
    assert (items["i0"][1], items["i1"][1], items["i2"][1]) == (0, 0, 1)
