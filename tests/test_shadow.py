"""Shadow jobs and comparisons (tagger.shadow) on the real databases: a candidate's tags
are stored but never shown, its failures stay in its job's ledger, the sweep ignores its
jobs, the report's figures, and `tagger model activate`'s rule on both sides."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tagger.current import refresh_current_tags
from tagger.db import CurrentTagRow, Failure, Item, Job, JobItem, ModelComparison, Tag, utcnow
from tagger.exceptions import MissingImage, NotAnImage, UnknownModelVersion
from tagger.jobs import create_job, failure_counts
from tagger.labels import set_label
from tagger.ledger import item_states, pending_ids
from tagger.registry import activate_model_version
from tagger.scoring import Prediction
from tagger.settings import Settings
from tagger.shadow import (
    ActivationRefused,
    ComparisonError,
    check_activation,
    compare_job,
    latest_comparison,
    plan_shadow_job,
    sample_tagged,
    save_comparison,
)
from tagger.states import JobKind, JobStatus
from tagger.sweep import plan_sweep
from tagger.tags import save_batch
from tests.factories import add_model_version

ITEMS = [f"i{k}" for k in range(6)]


def _pred(product: str, gender: str = "WOMEN") -> Prediction:
    return Prediction(gender, 0.9, product, 0.8, {"product": {product: 0.8}}, 0.5)


def _save(session, version, tags: dict[str, str], *, job_id=None, failures=None) -> None:
    save_batch(
        session=session,
        job_id=job_id,
        model_version=version,
        predictions={i: _pred(p) for i, p in tags.items()},
        failures=failures or {},
    )


def _catalogue(sessions) -> None:
    """v1 active and tagging i0-i3 (Dresses); v2 and v3 registered, never active;
    i4 and i5 untagged."""
    with sessions.begin() as s:
        add_model_version(s, "v1", activate=True)
        add_model_version(s, "v2")
        add_model_version(s, "v3")
        s.add_all([Item(item_id=i, image_uri=f"/x/{i}.jpg") for i in ITEMS])
        s.flush()
        _save(s, "v1", {i: "Dresses" for i in ITEMS[:4]})


def _shown(session) -> dict[str, str]:
    rows = session.execute(sa.select(CurrentTagRow.item_id, CurrentTagRow.model_version))
    return dict(rows.all())


def _shadow(sessions, candidate="v2", **kwargs) -> int:
    with sessions.begin() as s:
        return plan_shadow_job(session=s, candidate=candidate, batch_size=2, **kwargs).job_id


def test_shadow_tags_are_stored_under_the_candidate_and_never_current(sessions):
    """A shadow job's tags land in `tags` under the candidate, leave every current row and
    untagged flag as they were, stay hidden when another version's activation chooses
    again (newest-tag rule), and show as they are once the candidate is activated."""
    _catalogue(sessions)
    with sessions.begin() as s:
        set_label(session=s, item_id="i4", by="ana", product_type="Pants")
    job_id = _shadow(sessions, sample=10)
    with sessions.begin() as s:
        members = pending_ids(session=s, job_id=job_id)
        assert members == ["i0", "i1", "i2", "i3", "i4"]  # the tagged ones, and the labelled
        before = _shown(s)
        _save(s, "v2", {i: "Pants" for i in members}, job_id=job_id)
    with sessions() as s:
        assert _shown(s) == before == {i: "v1" for i in ITEMS[:4]}
        assert s.get(Item, "i4").untagged and s.get(Item, "i5").untagged
        assert s.scalar(sa.select(sa.func.count()).where(Tag.model_version == "v2")) == 5
        job = s.get(Job, job_id)
        assert (job.kind, job.model_version, job.status, job.done) == (
            "shadow",
            "v2",
            "finished",
            5,
        )
    for swap_above in (10**9, 0):  # v3 (no tags) activated: every choice made again
        with sessions.begin() as s:
            activate_model_version(session=s, version="v3")
            if s.get_bind().dialect.name == "postgresql":
                refresh_current_tags(session=s, swap_above=swap_above)
        with sessions() as s:
            assert _shown(s) == before and s.get(Item, "i4").untagged
    with sessions.begin() as s:
        activate_model_version(session=s, version="v2")
    with sessions() as s:
        assert _shown(s) == {i: "v2" for i in ITEMS[:5]} and not s.get(Item, "i4").untagged
        fresh = s.scalars(sa.select(CurrentTagRow.fresh)).all()
        assert all(fresh)  # the shadow tags are the active version's now: nothing to re-tag


def test_shadow_failures_stay_in_the_jobs_ledger(sessions):
    """A shadow job's failed items are failed, with their reasons, in its ledger and
    counters only: no failures row is written, none is cleared by a shadow tag, and the
    failures' attempts and times (the sweep's retry schedule) are as they were."""
    _catalogue(sessions)
    with sessions.begin() as s:
        imported = create_job(
            session=s, kind=JobKind.IMPORT, source="t", item_ids=["i4"], batch_size=1
        )
        _save(s, "v1", {}, job_id=imported.id, failures={"i4": NotAnImage("html")})
        set_label(session=s, item_id="i4", by="ana", gender="MEN")
    with sessions() as s:
        failure_before = s.execute(sa.select(Failure.__table__)).all()
    job_id = _shadow(sessions, sample=10)
    with sessions.begin() as s:
        # the candidate tags the failing i4 and fails on i0
        _save(s, "v2", {"i4": "Pants"}, job_id=job_id, failures={"i0": MissingImage("gone")})
    with sessions() as s:
        assert s.execute(sa.select(Failure.__table__)).all() == failure_before
        states = item_states(session=s, job_id=job_id)
        assert (states["i0"], states["i4"]) == ("failed", "tagged")
        assert failure_counts(session=s, job_id=job_id) == {"missing_image": 1}
        job = s.get(Job, job_id)
        assert (job.done, job.failed) == (1, 1)
        assert s.get(Item, "i4").untagged and "i4" not in _shown(s)


def test_sweep_neither_waits_for_nor_takes_over_a_shadow_jobs_items(sessions):
    """Items pending in a live shadow job are still queued by the sweep (they need the
    active version's tag), and a stalled shadow job is not handed over or closed."""
    _catalogue(sessions)
    with sessions.begin() as s:
        set_label(session=s, item_id="i4", by="ana", gender="MEN")
        set_label(session=s, item_id="i5", by="ana", gender="MEN")
    live, stalled = _shadow(sessions, sample=1), _shadow(sessions, candidate="v3", sample=1)
    with sessions.begin() as s:
        job = s.get(Job, stalled)
        job.status, job.updated_at = JobStatus.RUNNING, utcnow() - timedelta(days=1)
    with sessions.begin() as s:
        plan = plan_sweep(session=s, settings=Settings(stall_after=3600))
        queued = sorted(i for batch in plan.batches for i in batch)
    assert queued == ["i4", "i5"] and plan.moved == 0
    with sessions() as s:
        for job_id in (live, stalled):
            job = s.get(Job, job_id)
            assert (job.moved, job.status) == (0, "running" if job_id == stalled else "queued")
            assert s.scalar(sa.select(sa.func.count()).where(JobItem.job_id == job_id)) == 0


def test_sample_is_random_tagged_items_plus_every_labelled_one(sessions):
    """The sample is n items showing the active version's tag, plus every labelled item;
    --job takes that job's items; a shadow job of the candidate is reused, not copied."""
    _catalogue(sessions)
    with sessions.begin() as s:
        for i in ("i4", "i5"):
            set_label(session=s, item_id=i, by="ana", product_type="Pants")
        seen = {frozenset(sample_tagged(session=s, version="v1", n=2)) for _ in range(30)}
    assert all(len(ids) == 2 and ids <= set(ITEMS[:4]) for ids in seen) and len(seen) > 1
    with sessions.begin() as s:
        plan = plan_shadow_job(session=s, candidate="v2", batch_size=2, sample=2)
        assert (plan.items, plan.labelled, plan.baseline, plan.reused) == (4, 2, "v1", False)
        members = set(pending_ids(session=s, job_id=plan.job_id))
        assert {"i4", "i5"} <= members and len(members & set(ITEMS[:4])) == 2
        source = create_job(
            session=s, kind=JobKind.IMPORT, source="t", item_ids=["i1", "gone"], batch_size=2
        )
    with sessions.begin() as s:
        from_job = plan_shadow_job(session=s, candidate="v3", batch_size=2, from_job=source.id)
        assert pending_ids(session=s, job_id=from_job.job_id) == ["i1", "i4", "i5"]
        again = plan_shadow_job(session=s, candidate="v2", batch_size=9, from_job=plan.job_id)
        assert (again.job_id, again.reused, again.items) == (plan.job_id, True, 4)
        assert s.scalar(sa.select(sa.func.count()).select_from(Job)) == 3  # none added


def test_labelled_items_join_up_to_the_limit_as_a_random_sample(sessions):
    """Every labelled item joins a comparison by default; with a limit, that many of them,
    a different random choice from one comparison to the next, and 0 adds none."""
    _catalogue(sessions)
    extra = [f"l{k:02d}" for k in range(12)]
    with sessions.begin() as s:
        s.add_all([Item(item_id=i, image_uri=f"/x/{i}.jpg") for i in extra])
        s.flush()
        for i in extra:
            set_label(session=s, item_id=i, by="ana", product_type="Pants")
    chosen = set()
    with sessions.begin() as s:
        everything = plan_shadow_job(session=s, candidate="v2", batch_size=4, sample=2)
        assert (everything.items, everything.labelled) == (14, 12)
        for _ in range(8):
            plan = plan_shadow_job(session=s, candidate="v2", batch_size=4, sample=2, labelled=5)
            members = set(pending_ids(session=s, job_id=plan.job_id))
            assert (plan.items, plan.labelled) == (7, 5) and len(members & set(extra)) == 5
            chosen.add(frozenset(members & set(extra)))
        none = plan_shadow_job(session=s, candidate="v2", batch_size=4, sample=2, labelled=0)
        assert (none.items, none.labelled) == (2, 0)
    assert len(chosen) > 1  # 8 draws of 5 from 12 are all alike with odds of about 1e-20


def test_sample_reads_a_tablesample_of_a_large_table_and_falls_back(db, session_factory):
    """On Postgres a table far larger than the sample is read through TABLESAMPLE (the
    sample is still n distinct tagged items); when that finds too few, the whole table."""
    ids = [f"n{k:04d}" for k in range(3000)]
    with session_factory.begin() as s:
        add_model_version(s, "v1", activate=True)
        add_model_version(s, "v2", activate=True)  # v1 was active before
        s.add_all([Item(item_id=i, image_uri="/x.jpg") for i in ids])
        s.flush()
        _save(s, "v2", {i: "Pants" for i in ids[:2990]})
        _save(s, "v1", {i: "Pants" for i in ids[2990:]})  # 10 show v1's tag
    with db.begin() as conn:
        conn.execute(sa.text("ANALYZE current_tag_rows"))
    statements: list[str] = []

    def spy(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    sa.event.listen(db, "before_cursor_execute", spy)
    try:
        with session_factory() as s:
            sample = sample_tagged(session=s, version="v2", n=20)
            assert len(set(sample)) == 20 and set(sample) <= set(ids[:2990])
            assert "TABLESAMPLE" in statements[-1]
            statements.clear()
            few = sample_tagged(session=s, version="v1", n=11)  # only 10 exist
            assert sorted(few) == ids[2990:]
            assert "TABLESAMPLE" in statements[-2] and "TABLESAMPLE" not in statements[-1]
    finally:
        sa.event.remove(db, "before_cursor_execute", spy)


def _labelled_pair(sessions, *, candidate_right: bool) -> int:
    """v1 and v2 tags by hand on i0-i3, and labels on i0-i2 (products) and i3 (gender):
    v1 gets 2 of 3 products right; v2 all 3, or none (``candidate_right``). Returns the
    shadow job."""
    _catalogue(sessions)
    truth = {"i0": "Dresses", "i1": "Dresses", "i2": "Pants"}
    with sessions.begin() as s:
        for i, product in truth.items():
            set_label(session=s, item_id=i, by="ana", product_type=product)
        set_label(session=s, item_id="i3", by="ana", gender="WOMEN")
    job_id = _shadow(sessions, sample=4)
    with sessions.begin() as s:
        members = pending_ids(session=s, job_id=job_id)
        assert members == ITEMS[:4]
        wrong = {"Dresses": "Pants", "Pants": "Dresses"}
        tags = {i: (p if candidate_right else wrong[p]) for i, p in truth.items()}
        _save(s, "v2", {**tags, "i3": "Pants"}, job_id=job_id)
    return job_id


def test_report_figures_on_a_hand_made_pair_of_tag_sets(sessions):
    """The report of a finished shadow job: agreement per head and class, the confusion,
    both versions' accuracy on the labelled items; stored and read back as the latest."""
    job_id = _labelled_pair(sessions, candidate_right=True)
    with sessions.begin() as s:
        report = compare_job(session=s, job_id=job_id)
        saved = save_comparison(session=s, job_id=job_id, report=report)
    assert report["items"] == {"sampled": 4, "compared": 4, "candidate_failed": 0, "labelled": 4}
    assert report["heads"]["gender"]["agreement"] == 1.0
    assert report["heads"]["product"]["agree"] == 2  # v1 says Dresses everywhere
    assert report["confusion"]["product"] == {
        "rows": ["Dresses", "Pants"],
        "columns": ["Dresses", "Pants"],
        "counts": [[2, 2], [0, 0]],
    }
    human = report["human"]
    assert (human["product"]["n"], human["gender"]["n"]) == (3, 1)
    assert human["product"]["baseline"]["correct"] == 2
    assert human["product"]["candidate"]["correct"] == 3
    with sessions() as s:
        latest = latest_comparison(session=s, candidate="v2", baseline="v1")
        assert latest.id == saved.id and latest.report == report and latest.job_id == job_id
    with sessions.begin() as s, pytest.raises(ComparisonError, match="not a shadow job"):
        other = create_job(session=s, kind=JobKind.IMPORT, source="t", item_ids=[], batch_size=1)
        compare_job(session=s, job_id=other.id)


def test_activation_rule_without_the_cli(sessions):
    """First version: no comparison needed; a never-compared candidate is refused, a
    rollback is not; --force passes the refusal and says so; unknown versions are named."""
    with sessions.begin() as s:
        add_model_version(s, "v1")
        add_model_version(s, "v2")
        assert not check_activation(session=s, version="v1").refused
        activate_model_version(session=s, version="v1")
        with pytest.raises(ActivationRefused, match="no comparison against the active version"):
            check_activation(session=s, version="v2")
        forced = check_activation(session=s, version="v2", force=True)
        assert forced.refused and forced.forced
        activate_model_version(session=s, version="v2")
        rollback = check_activation(session=s, version="v1")
        assert not rollback.refused and "rollback" in rollback.reason
        with pytest.raises(UnknownModelVersion):
            check_activation(session=s, version="nope")


@pytest.fixture
def env(settings_env) -> dict[str, str]:
    return dict(os.environ)


def test_activate_refuses_a_candidate_worse_on_human_labels_unless_forced(
    session_factory, env, tagger_cli, tmp_path
):
    """`model compare --job` reports a finished shadow job; `model activate` of a candidate
    worse on labels prints the headline and refuses (exit 1, one error line, nothing
    changed); --force activates it and says why it was refused."""
    job_id = _labelled_pair(session_factory, candidate_right=False)
    done = tagger_cli(env, "model", "compare", "v2", "--job", str(job_id), "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "agreement gender 100.0%, product 25.0%" in done.stderr
    assert (tmp_path / "compare-v2-vs-v1.png").stat().st_size > 1000
    refused = tagger_cli(env, "model", "activate", "v2")
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert lines[0].startswith("comparison 1 (") and "product v1 66.7% / v2 0.0% (3)" in lines[0]
    assert lines[1] == (
        "error: v2 is worse than the active version v1 on human labels (product: 0 of 3 "
        "labelled items right against 2); pass --force to activate it anyway"
    )
    with session_factory() as s:
        assert set(_shown(s).values()) == {"v1"}
    forced = tagger_cli(env, "model", "activate", "v2", "--force")
    assert forced.returncode == 0 and forced.stdout == "v2 (active)\n"
    assert "activating v2 anyway (--force): v2 is worse" in forced.stderr


def test_activate_passes_a_candidate_better_on_human_labels(
    session_factory, env, tagger_cli, tmp_path
):
    """A candidate no worse on labels is activated on its comparison alone, which the
    command prints; a JSON report carries the same figures."""
    job_id = _labelled_pair(session_factory, candidate_right=True)
    done = tagger_cli(
        env, "model", "compare", "v2", "--job", str(job_id), "--out", str(tmp_path),
        "--format", "json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["comparison"] == 1 and report["human"]["product"]["candidate"]["correct"] == 3
    assert report["heatmap"].endswith("compare-v2-vs-v1.png")
    ok = tagger_cli(env, "model", "activate", "v2")
    assert ok.returncode == 0, ok.stderr
    assert "v1 66.7% / v2 100.0% (3)" in ok.stderr and ok.stdout == "v2 (active)\n"
    with session_factory() as s:
        assert set(_shown(s).values()) == {"v2"}
        assert s.scalar(sa.select(sa.func.count()).select_from(ModelComparison)) == 1
    # and back: a rollback needs no comparison
    back = tagger_cli(env, "model", "activate", "v1")
    assert back.returncode == 0 and "v1 was active before: a rollback" in back.stderr


def test_no_wait_queues_the_shadow_job_and_job_id_reports_it_later(
    session_factory, env, tagger_cli, redis_db, tmp_path
):
    """`--no-wait` publishes the shadow job's batches (the job id on stdout, nothing
    reported); once its items are tagged, `--job ID` reports it without queueing it again
    and a second comparison is stored beside the first."""
    from tests.services import redis_client

    _catalogue(session_factory)
    queued = tagger_cli(env, "model", "compare", "v2", "--sample", "3", "--no-wait",
                        "--batch-size", "2")  # fmt: skip
    assert queued.returncode == 0, queued.stderr
    job_id = int(queued.stdout)
    assert f"`tagger model compare v2 --job {job_id}` reports" in queued.stderr
    client = redis_client(redis_db)
    messages = [json.loads(m) for m in client.lrange("tagger", 0, -1)]
    assert len(messages) == 2 and {m["headers"]["task"] for m in messages} == {"tagger.tag_batch"}
    with session_factory.begin() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(ModelComparison)) == 0
        members = pending_ids(session=s, job_id=job_id)
        _save(s, "v2", {i: "Dresses" for i in members}, job_id=job_id)  # the worker's part
    for expected in (1, 2):
        done = tagger_cli(
            env, "model", "compare", "v2", "--job", str(job_id), "--out", str(tmp_path)
        )
        assert done.returncode == 0, done.stderr
        assert f"comparison {expected}: v2 against v1 on 3 items" in done.stderr
    assert client.llen("tagger") == 2  # nothing queued again
    client.close()
    with session_factory() as s:
        assert latest_comparison(session=s, candidate="v2", baseline="v1").id == 2
    usage = tagger_cli(env, "model", "compare", "v2", "--job", "1", "--sample", "3")
    assert usage.returncode == 2 and "give --sample or --job, not both" in usage.stderr
    active = tagger_cli(env, "model", "compare", "v1")
    assert active.returncode == 1 and "v1 is the active version" in active.stderr


def test_register_activate_of_a_later_version_follows_the_rule(db, env, tagger_cli, artifact):
    """`register --activate`: the first version is activated; a later one, never
    compared, is registered but refused (exit 1) unless --force."""
    first = tagger_cli(env, "model", "register", artifact, "--version", "a1", "--activate")
    assert first.returncode == 0 and first.stdout == "a1 (active)\n", first.stderr
    again = tagger_cli(env, "model", "register", artifact, "--version", "a1", "--activate")
    assert again.returncode == 0, again.stderr
    later = tagger_cli(env, "model", "register", artifact, "--version", "a2", "--activate")
    assert later.returncode == 1
    assert later.stderr.strip() == (
        "error: a2 is registered but not active: a2 has no comparison against the active "
        "version a1: run `tagger model compare a2` first; pass --force to activate it anyway"
    )
    listed = tagger_cli(env, "model", "list", "--format", "csv")
    assert "a2," in listed.stdout
    forced = tagger_cli(
        env, "model", "register", artifact, "--version", "a2", "--activate", "--force"
    )
    assert forced.returncode == 0 and forced.stdout == "a2 (active)\n"


@pytest.mark.slow
def test_compare_in_the_embedded_mode_tags_in_process(settings_env, tagger_cli, artifact, tmp_path):
    """On SQLite (`tagger run`'s database) `model compare` tags the sample in this process,
    with no broker: the same model under two names agrees on every item, the report is
    JSON and stored, the heat map written, and the current tags stay the active's."""
    from tests.factories import jpeg_bytes, write_csv

    env = {**os.environ, "TAGGER_DATABASE_URL": f"sqlite:///{tmp_path / 'e.db'}"}
    rows = []
    for k in range(12):
        path = tmp_path / f"img{k}.jpg"
        path.write_bytes(jpeg_bytes(seed=k))
        rows.append({"item_id": f"e{k:02d}", "image_uri": str(path), "title": "a dress"})
    catalogue = write_csv(tmp_path / "catalogue.csv", rows)
    run = tagger_cli(env, "run", str(catalogue), "--model", artifact, "--format", "json")
    assert run.returncode == 0, run.stderr
    active = json.loads(run.stdout)[0]["model_version"]
    reg = tagger_cli(env, "model", "register", artifact, "--version", "cand")
    assert reg.returncode == 0, reg.stderr
    done = tagger_cli(
        env, "model", "compare", "cand", "--sample", "5", "--batch-size", "2",
        "--out", str(tmp_path / "out"), "--format", "json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["baseline"], report["candidate"]) == (active, "cand")
    assert report["items"] == {"sampled": 5, "compared": 5, "candidate_failed": 0, "labelled": 0}
    assert report["heads"]["gender"]["agreement"] == report["heads"]["product"]["agreement"] == 1
    assert Path(report["heatmap"]).stat().st_size > 1000
    shown = tagger_cli(env, "tags", "--format", "json")
    assert {r["model_version"] for r in json.loads(shown.stdout)} == {active}
    activated = tagger_cli(env, "model", "activate", "cand")  # compared; no labels
    assert activated.returncode == 0 and "comparison 1 (" in activated.stderr
