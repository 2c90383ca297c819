"""`tagger run`: the embedded mode. Same import and batch code as the service, but on
SQLite (or any database) with local images, tagging in this process with no broker.
Returns what it did; the CLI prints the tags and the summary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from tagger.db import upgrade
from tagger.importer import import_items
from tagger.pending import count_pending, stream_batches
from tagger.pipeline import BatchTagger
from tagger.registry import activate_model_version, register_artifact
from tagger.settings import Settings
from tagger.shadow import ShadowPlan, check_activation, plan_shadow_job
from tagger.sources import load_items
from tagger.states import JobKind
from tagger.tags import TagQuery, query_tags

if TYPE_CHECKING:
    from tagger.progress import OnProgress


@dataclass(frozen=True)
class RunOutcome:
    job_id: int
    source: str  # what was read: the catalogue file or folder
    item_ids: tuple[str, ...]  # every item of the catalogue, tagged now or before
    to_tag: int  # the job's total: items that needed a tag from the active model
    skipped: int  # items already tagged by the active model with the same image
    failures: dict[str, str]  # item id -> "reason: message"
    rows: list[dict[str, Any]]  # the current tags of ``item_ids``

    @property
    def tagged(self) -> int:
        """Items tagged by this run."""
        return self.to_tag - len(self.failures)

    @property
    def failed(self) -> int:
        return len(self.failures)


def run_embedded(
    *,
    settings: Settings,
    sessions: sessionmaker[Session],
    file: Path,
    model_uri: str | None,
    batch_size: int,
    on_batch: OnProgress | None = None,
    force: bool = False,
) -> RunOutcome:
    """Import ``file`` and tag every batch in this process; returns the job and its tags.

    ``on_batch`` hears ("tagging job N", items done, items to tag) before the first batch
    and after each one.
    """
    upgrade(settings.database_url)  # idempotent; a fresh SQLite file gets its schema here
    items, source = load_items(settings, file=file)
    with sessions.begin() as session:
        if model_uri:
            version = register_artifact(
                session=session, settings=settings, uri=model_uri, version=None, activate=False
            ).version
            # The same rule as `tagger model activate`: the first model, the active one or
            # a rollback go ahead; a new model replacing another needs a comparison (or
            # force). Refused, nothing of this run is kept.
            check_activation(session=session, version=version, force=force)
            activate_model_version(session=session, version=version)
        plan = import_items(
            session=session, items=items, source=source, batch_size=batch_size, kind=JobKind.RUN
        )
        job_id, to_tag, skipped = plan.job.id, plan.job.total, plan.job.skipped
    tagger = BatchTagger(settings, sessions)
    failures: dict[str, str] = {}
    description, done = f"tagging job {job_id}", 0
    if on_batch is not None:
        on_batch(description, done, to_tag)
    for batch in plan.batches:
        outcome = tagger.run(job_id, batch, final=True)
        failures.update({i: f"{e.reason}: {e}" for i, e in outcome.failed.items()})
        done += len(batch)
        if on_batch is not None:
            on_batch(description, done, to_tag)
    item_ids = tuple(i.item_id for i in items)
    with sessions() as session:
        rows = query_tags(session=session, query=TagQuery(item_ids=item_ids))
    return RunOutcome(
        job_id=job_id,
        source=source,
        item_ids=item_ids,
        to_tag=to_tag,
        skipped=skipped,
        failures=failures,
        rows=rows,
    )


def compare_in_process(
    *,
    settings: Settings,
    sessions: sessionmaker[Session],
    candidate: str,
    batch_size: int,
    sample: int | None = None,
    from_job: int | None = None,
    labelled: int | None = None,
    on_batch: OnProgress | None = None,
) -> ShadowPlan:
    """`tagger model compare` without workers (the embedded mode, or ``--in-process``):
    plan the shadow job as the service does, commit it, and tag its pending items here,
    a batch at a time, with the same batch code as a worker. ``on_batch`` hears ("tagging
    shadow job N", items done, items) before the first batch and after each one."""
    with sessions.begin() as session:
        plan = plan_shadow_job(
            session=session,
            candidate=candidate,
            batch_size=batch_size,
            sample=sample,
            from_job=from_job,
            labelled=labelled,
        )
        pending = count_pending(session=session, job_id=plan.job_id)
    tagger = BatchTagger(settings, sessions)
    description, done = f"tagging shadow job {plan.job_id}", plan.items - pending
    if on_batch is not None:
        on_batch(description, done, plan.items)
    # Each page of the ledger is read in a short session of its own, between batches.
    for batch in stream_batches(
        sessions, job_id=plan.job_id, batch_size=plan.batch_size, pending_only=True
    ):
        tagger.run(plan.job_id, batch, final=True)
        done += len(batch)
        if on_batch is not None:
            on_batch(description, done, plan.items)
    return plan
