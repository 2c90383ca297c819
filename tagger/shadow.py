"""Shadow roll-outs (`tagger model compare`): a candidate version tags a sample of the
catalogue through the ordinary workers, as a ``shadow`` job whose tags are stored under the
candidate and never shown (tagger.tags.save_batch, tagger.current); the two versions' tags
on those items are then compared (tagger.compare) and the report kept in
``model_comparisons``, which `tagger model activate` reads (:func:`check_activation`).

Keyword-only data access handed the session, like the other data modules; queueing the
job's batches is tagger.enqueue's (Celery) or tagger.embedded's (in this process).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tagger.compare import PairCount, build_report, worse_on_labels
from tagger.db import ModelComparison, is_postgres, utcnow
from tagger.exceptions import NoActiveModel, TaggerError
from tagger.jobs import get_job, open_job
from tagger.ledger import ids_param, ids_source, member_id, members_sql, write_batches
from tagger.registry import get_active_model_version, get_model_version
from tagger.states import JobKind

#: Items a comparison samples when neither a size nor a job is given.
DEFAULT_SAMPLE = 1_000
#: Labelled items that join a comparison at most (a random sample of them when there
#: are more): enough to tell two versions' accuracy apart by a few tenths of a percent,
#: while a catalogue with hundreds of thousands of corrections does not tag them all for
#: every candidate.
DEFAULT_LABELLED = 10_000
#: TABLESAMPLE reads this many times the rows wanted (whole pages at random), then picks
#: the sample among them: about one item per page read, so items that sit together (ids
#: imported together, likely alike) do not come in clumps, at a few hundred pages' cost.
OVERSAMPLE = 50


class ComparisonError(TaggerError):
    """A comparison that cannot be made (the candidate is active, nothing to compare...)."""


class ActivationRefused(TaggerError):
    """`tagger model activate` (or `register --activate`) of a version that has no
    comparison against the active one, or is worse on human labels; ``check`` says why."""

    def __init__(self, message: str, *, check: ActivationCheck):
        super().__init__(message)
        self.check = check


@dataclass(frozen=True)
class ShadowPlan:
    """A shadow job: its id, the two versions, its items (and how many are labelled)."""

    job_id: int
    candidate: str
    baseline: str
    items: int
    labelled: int
    batch_size: int
    #: an existing shadow job of the candidate (``--job``): nothing new was queued
    reused: bool = False


def plan_shadow_job(
    *,
    session: Session,
    candidate: str,
    batch_size: int,
    sample: int | None = None,
    from_job: int | None = None,
    labelled: int | None = None,
) -> ShadowPlan:
    """Create a shadow job of ``candidate`` (in the caller's transaction; publish after the
    commit) over a random sample of ``sample`` items the active version has tagged, or over
    the items of job ``from_job``, and the labelled items either way (the ground truth):
    every one, or a random ``labelled`` of them (default DEFAULT_LABELLED) when there are
    more.
    ``from_job`` naming a shadow job of the candidate itself creates nothing: that job is
    the comparison's (`--no-wait`, then `--job ID` to report)."""
    get_model_version(session=session, version=candidate)  # UnknownModelVersion
    active = get_active_model_version(session=session)
    if active is None:
        raise NoActiveModel("no active model version: there is nothing to compare against")
    if active.version == candidate:
        raise ComparisonError(f"{candidate} is the active version: compare a candidate with it")
    if from_job is not None:
        source_job = get_job(session=session, job_id=from_job)
        if source_job.kind == JobKind.SHADOW and source_job.model_version == candidate:
            return ShadowPlan(
                job_id=source_job.id,
                candidate=candidate,
                baseline=active.version,
                items=source_job.total,
                labelled=_labelled_members(session, source_job.id),
                batch_size=source_job.batch_size,
                reused=True,
            )
        chosen = f"SELECT {member_id(session)} AS item_id FROM {members_sql(session)} "
        chosen += "WHERE b.job_id = :from_job"
        params: dict[str, object] = {"from_job": from_job}
        source = f"compare {candidate}: the items of job {from_job}"
    else:
        n = sample or DEFAULT_SAMPLE
        ids = sample_tagged(session=session, version=active.version, n=n)
        chosen, params = ids_source(session, "sample"), {"sample": ids_param(session, ids)}
        source = f"compare {candidate}: a sample of {n}"
    job = open_job(
        session=session,
        kind=JobKind.SHADOW,
        source=source,
        batch_size=batch_size,
        model_version=candidate,
    )
    # Items that still exist (a job's members may have gone since), each once. random()
    # is Postgres's and SQLite's both; sorting the labels' ids is cheap beside tagging.
    ids_sql = (
        f"SELECT item_id FROM items WHERE item_id IN ({chosen}) UNION SELECT item_id FROM "
        "(SELECT item_id FROM labels ORDER BY random() LIMIT :labelled) AS labelled"
    )
    params["labelled"] = DEFAULT_LABELLED if labelled is None else labelled
    _, items = write_batches(
        session=session, job_id=job.id, ids_sql=ids_sql, batch_size=batch_size, params=params
    )
    if not items:
        where = f"job {from_job} has none left" if from_job else "the active version tagged none"
        raise ComparisonError(f"no items to compare {candidate} on: {where}")
    job.total = items
    session.flush()
    return ShadowPlan(
        job_id=job.id,
        candidate=candidate,
        baseline=active.version,
        items=items,
        labelled=_labelled_members(session, job.id),
        batch_size=batch_size,
    )


def sample_tagged(*, session: Session, version: str, n: int) -> list[str]:
    """Up to ``n`` random items showing a tag of ``version``. On Postgres a TABLESAMPLE of
    the current rows reads a fraction of their pages (OVERSAMPLE x n rows' worth: some 700
    pages for 1,000 items, however large the table) instead of ordering the whole table by
    random(); when that finds too few (few items show ``version``, or the statistics are
    stale) the whole table is read once, keeping only ``n`` rows in memory (a top-n sort)."""
    pick = "WHERE model_version = :version ORDER BY random() LIMIT :n"
    params = {"version": version, "n": n}
    if is_postgres(session):
        rows = session.scalar(
            sa.text("SELECT reltuples FROM pg_class WHERE oid = 'current_tag_rows'::regclass")
        )
        share = 100.0 * n * OVERSAMPLE / rows if rows and rows > 0 else 100.0
        if share < 100.0:
            sql = f"SELECT item_id FROM current_tag_rows TABLESAMPLE SYSTEM (:share) {pick}"
            ids = list(session.scalars(sa.text(sql), {**params, "share": share}))
            if len(ids) == n:
                return ids
    return list(session.scalars(sa.text(f"SELECT item_id FROM current_tag_rows {pick}"), params))


def _labelled_members(session: Session, job_id: int) -> int:
    sql = (
        f"SELECT count(*) FROM {members_sql(session)} JOIN labels l "
        f"ON l.item_id = {member_id(session)} WHERE b.job_id = :job"
    )
    return int(session.scalar(sa.text(sql), {"job": job_id}) or 0)


# Both versions' tags and the label of each item of the job, counted per combination: the
# comparison's whole input, however many items the job has.
_PAIRS = """
SELECT tb.gender, tb.product_type, tc.gender, tc.product_type, l.gender, l.product_type,
       count(*)
FROM (SELECT {member} AS item_id FROM {members} WHERE b.job_id = :job) s
JOIN tags tb ON tb.item_id = s.item_id AND tb.model_version = :baseline
JOIN tags tc ON tc.item_id = s.item_id AND tc.model_version = :candidate
LEFT JOIN labels l ON l.item_id = s.item_id
GROUP BY 1, 2, 3, 4, 5, 6
"""


def pair_counts(*, session: Session, job_id: int, baseline: str, candidate: str) -> list[PairCount]:
    """The job's items both versions tagged, counted per (baseline tag, candidate tag,
    label) combination."""
    sql = _PAIRS.format(member=member_id(session), members=members_sql(session))
    rows = session.execute(
        sa.text(sql), {"job": job_id, "baseline": baseline, "candidate": candidate}
    )
    return [PairCount((bg, bp), (cg, cp), (lg, lp), int(n)) for bg, bp, cg, cp, lg, lp, n in rows]


def compare_job(*, session: Session, job_id: int) -> dict[str, Any]:
    """The report of a finished shadow job: its candidate against the active version."""
    job = get_job(session=session, job_id=job_id)
    if job.kind != JobKind.SHADOW or not job.model_version:
        raise ComparisonError(f"job {job_id} is a {job.kind} job, not a shadow job")
    active = get_active_model_version(session=session)
    if active is None:
        raise NoActiveModel("no active model version: there is nothing to compare against")
    if active.version == job.model_version:
        raise ComparisonError(f"{job.model_version} is active now: there is nothing to compare")
    counts = pair_counts(
        session=session, job_id=job_id, baseline=active.version, candidate=job.model_version
    )
    classes = {"gender": list(active.gender_labels), "product": list(active.product_labels)}
    return build_report(
        counts,
        baseline=active.version,
        candidate=job.model_version,
        classes=classes,
        sampled=job.total,
        failed=job.failed,
    )


def save_comparison(
    *, session: Session, job_id: int | None, report: dict[str, Any]
) -> ModelComparison:
    row = ModelComparison(
        candidate=report["candidate"],
        baseline=report["baseline"],
        job_id=job_id,
        created_at=utcnow(),
        report=report,
    )
    session.add(row)
    session.flush()
    return row


def latest_comparison(*, session: Session, candidate: str, baseline: str) -> ModelComparison | None:
    return session.scalars(
        sa.select(ModelComparison)
        .where(ModelComparison.candidate == candidate, ModelComparison.baseline == baseline)
        .order_by(ModelComparison.created_at.desc(), ModelComparison.id.desc())
        .limit(1)
    ).first()


@dataclass(frozen=True)
class ActivationCheck:
    """What `tagger model activate VERSION` found: the active version, the latest
    comparison of VERSION against it, and the one-line reason it may or may not go ahead."""

    version: str
    active: str | None
    comparison: ModelComparison | None
    reason: str
    refused: bool
    #: refused, but --force: activated anyway
    forced: bool = False


def check_activation(*, session: Session, version: str, force: bool = False) -> ActivationCheck:
    """May ``version`` replace the active version? Yes when nothing is active (the first
    model), when it is active already, when it was active before (a rollback, which must
    stay as fast as the roll-out it undoes) and no comparison says it is worse, or when its
    latest comparison against the active version shows it no worse on human labels (on
    each head: at least as many labelled items right). Otherwise ActivationRefused, unless
    ``force``. UnknownModelVersion for an unregistered version."""
    target = get_model_version(session=session, version=version)
    active = get_active_model_version(session=session)
    if active is None:
        return ActivationCheck(
            version, None, None, "no version is active: the first needs no comparison", False
        )
    if active.version == version:
        return ActivationCheck(version, version, None, f"{version} is active already", False)
    found = latest_comparison(session=session, candidate=version, baseline=active.version)
    check = ActivationCheck(version, active.version, found, "", refused=False)
    worse = worse_on_labels(found.report) if found is not None else []
    if worse:
        check = replace(
            check,
            refused=True,
            reason=f"{version} is worse than the active version {active.version} on human "
            f"labels ({'; '.join(worse)})",
        )
    elif found is not None:
        check = replace(check, reason=f"compared with {active.version}: no worse on human labels")
    elif target.activated_at is not None:
        check = replace(check, reason=f"{version} was active before: a rollback")
    else:
        check = replace(
            check,
            refused=True,
            reason=f"{version} has no comparison against the active version {active.version}: "
            f"run `tagger model compare {version}` first",
        )
    if check.refused and not force:
        raise ActivationRefused(f"{check.reason}; pass --force to activate it anyway", check=check)
    return replace(check, forced=check.refused)
