"""Tagging one batch: load items → fetch images concurrently → decode → ONE model call →
write tags, failures and job counters in one transaction.

The Celery task and the embedded runner both use ``BatchTagger``; it holds what one
process needs (session factory, S3 client, the loaded model) and must be created after
the fork: TensorFlow, connection pools and boto3 clients do not survive ``fork()``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from tagger.batching import unique
from tagger.db import Item, ModelVersion
from tagger.deliveries import end_delivery, start_delivery
from tagger.exceptions import ItemError, NoActiveModel, WorkerCrash
from tagger.images import decode_many
from tagger.jobs import mark_started, shadow_version
from tagger.model_slots import ModelSlots
from tagger.registry import get_active_model_version, get_model_version
from tagger.settings import Settings
from tagger.storage import fetch_many, make_s3_client
from tagger.tags import save_batch
from tagger.uris import is_s3

if TYPE_CHECKING:
    from tagger.model import LoadedModel
    from tagger.runtime import ModelLoader

log = logging.getLogger(__name__)


@dataclass
class BatchOutcome:
    job_id: int | None
    model_version: str
    tagged: list[str] = field(default_factory=list)
    failed: dict[str, ItemError] = field(default_factory=dict)
    #: transient errors left for a retry (not written); empty on the final attempt
    deferred: dict[str, ItemError] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    #: a batch that kept dying is not run: its pending items go out again as these halves
    split: list[list[str]] = field(default_factory=list)
    #: deaths the items had when split; each half gets max_batch_deaths more tries
    deaths_before: int = 0
    #: seconds spent in each stage of the batch (load, fetch, decode, model, write)
    seconds: dict[str, float] = field(default_factory=dict)
    #: the inference runtime that ran the model call ("keras", "openvino"); "" if none
    runtime: str = ""
    #: a shadow job's batch: tagged with a candidate, not the version the worker serves
    shadow: bool = False


class BatchTagger:
    """Tags batches of item ids with the active model version (or a shadow job's own),
    loading each once per process and re-checking which version is active before every
    batch."""

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        *,
        s3_client_factory: Callable[[], Any] | None = None,
        pool_processes: int = 1,
    ):
        self.settings = settings
        #: processes of this worker's pool sharing the host's cores (they split them)
        self.pool_processes = pool_processes
        self.session_factory = session_factory
        self._s3_client_factory = s3_client_factory or (lambda: make_s3_client(settings))
        self._s3_client: Any = None
        self._loader: ModelLoader | None = None
        #: one model per role (active, shadow), loaded between batches by _load
        self.models = ModelSlots(self._load)

    @property
    def s3_client(self) -> Any:
        if self._s3_client is None:
            self._s3_client = self._s3_client_factory()
        return self._s3_client

    # --- model ---------------------------------------------------------------------
    def model_for(self, version: ModelVersion, *, shadow: bool = False) -> LoadedModel:
        """The loaded model of ``version``, loaded once (tagger.model_slots.ModelSlots)."""
        return self.models.model_for(version, shadow=shadow)

    @property
    def loaded_versions(self) -> list[str]:
        """The versions whose models this process holds now."""
        return self.models.loaded_versions

    def _load(self, version: ModelVersion) -> LoadedModel:
        from tagger.artifact_cache import resolve_artifact
        from tagger.runtime import ModelLoader

        if self._loader is None:
            self._loader = ModelLoader(self.settings, processes=self.pool_processes)
        path = resolve_artifact(
            version.artifact_uri,
            cache_dir=self.settings.model_cache_dir,
            s3_client=self.s3_client if is_s3(version.artifact_uri) else None,
        )
        started = time.perf_counter()
        model = self._loader.load(path, version=version.version)
        log.info(
            "loaded model %s on %s from %s in %.1f s: %r",
            version.version,
            model.runtime,
            path,
            time.perf_counter() - started,
            model,
        )
        return model

    # --- one batch -----------------------------------------------------------------
    def run(
        self,
        job_id: int | None,
        item_ids: Sequence[str],
        *,
        final: bool = True,
        deaths_before: int = 0,
    ) -> BatchOutcome:
        """Tag one batch. Counts the delivery in the job's ledger first (committed before
        anything risky), so a batch whose deliveries keep dying is split, not re-run."""
        ids = unique(item_ids)
        clock = _Stopwatch()
        shadow: str | None = None
        with self.session_factory.begin() as session:
            if job_id is not None:
                mark_started(session=session, job_id=job_id)
                shadow = shadow_version(session=session, job_id=job_id)
                deaths = start_delivery(session=session, job_id=job_id, item_ids=ids)
                worst = max(deaths.values(), default=0)
                if worst - deaths_before >= self.settings.max_batch_deaths:
                    return self._isolate(
                        session, job_id, sorted(deaths), worst, died=worst - deaths_before
                    )
            if shadow is not None:
                # A shadow job tags with its own version, active or not (UnknownModelVersion,
                # not retried, fails the batch's items in the job's ledger if it is gone).
                active = get_model_version(session=session, version=shadow)
            else:
                active = get_active_model_version(session=session)
            if active is None:
                raise NoActiveModel("no active model version")
            session.expunge(active)
            items = {
                i.item_id: i for i in session.scalars(sa.select(Item).where(Item.item_id.in_(ids)))
            }
        model = self.model_for(active, shadow=shadow is not None)
        clock.lap("load")
        outcome = BatchOutcome(
            job_id=job_id, model_version=active.version, shadow=shadow is not None
        )
        outcome.unknown = [i for i in ids if i not in items]
        if outcome.unknown:
            log.warning("job %s: %d queued items no longer exist", job_id, len(outcome.unknown))
        present = [i for i in ids if i in items]

        blobs = fetch_many(
            unique(items[i].image_uri for i in present),
            s3_client=self.s3_client,
            concurrency=self.settings.fetch_concurrency,
            max_bytes=self.settings.max_image_bytes,
        )
        clock.lap("fetch")
        pixels = self._decode(present, items, blobs, model.image_size, outcome, final=final)
        clock.lap("decode")

        good = [i for i in present if i in pixels]
        predictions = {}
        if good:
            batch = np.stack([pixels[i] for i in good])
            captions = [items[i].title for i in good] if model.uses_text else [None] * len(good)
            predictions = dict(zip(good, model.predict(batch, captions), strict=True))
        outcome.tagged = list(predictions)
        clock.lap("model")

        with self.session_factory.begin() as session:
            save_batch(
                session=session,
                job_id=job_id,
                model_version=active.version,
                predictions=predictions,
                failures=outcome.failed,
                shadow=shadow is not None,
            )
            if job_id is not None:
                end_delivery(session=session, job_id=job_id, item_ids=ids)
        clock.lap("write")
        outcome.seconds = {stage: ms / 1000 for stage, ms in clock.laps.items()}
        outcome.runtime = model.runtime
        log.info(
            "job %s: batch of %d → %d tagged, %d failed, %d deferred (model %s, 1 model call; %s)",
            job_id,
            len(ids),
            len(outcome.tagged),
            len(outcome.failed),
            len(outcome.deferred),
            active.version,
            clock,
        )
        return outcome

    def _isolate(
        self, session: Session, job_id: int, pending: list[str], deaths: int, *, died: int
    ) -> BatchOutcome:
        """A batch whose deliveries died ``max_batch_deaths`` times: split it in halves
        (the task queues them), or, down to one item, fail that item as worker_crash."""
        outcome = BatchOutcome(job_id=job_id, model_version="", deaths_before=deaths)
        if len(pending) == 1:
            error = WorkerCrash(
                f"the worker process died {deaths} times on this item's batch "
                "(killed, out of memory, or over the time limit); isolated and given up"
            )
            outcome.failed = {pending[0]: error}
            save_batch(
                session=session,
                job_id=job_id,
                model_version="",
                predictions={},
                failures=outcome.failed,
            )
            log.error("job %s: item %s failed as worker_crash", job_id, pending[0])
        else:
            half = len(pending) // 2
            outcome.split = [pending[:half], pending[half:]]
            log.warning(
                "job %s: batch of %d died %d times; splitting it to isolate the cause",
                job_id,
                len(pending),
                died,
            )
        end_delivery(session=session, job_id=job_id, item_ids=pending)
        return outcome

    def record_failed_batch(
        self, job_id: int | None, item_ids: Sequence[str], error: ItemError
    ) -> None:
        """Mark every (still existing) item of a batch failed with ``error``."""
        ids = unique(item_ids)
        with self.session_factory.begin() as session:
            known = session.scalars(sa.select(Item.item_id).where(Item.item_id.in_(ids))).all()
            save_batch(
                session=session,
                job_id=job_id,
                model_version="",
                predictions={},
                failures={item_id: error for item_id in known},
            )
            if job_id is not None:
                end_delivery(session=session, job_id=job_id, item_ids=ids)

    def release(self, job_id: int | None, item_ids: Sequence[str]) -> None:
        """The batch stopped on a transient error and will be retried: this delivery did
        not die, so clear its in-flight mark (best effort: the database may be the error)."""
        if job_id is None:
            return
        try:
            with self.session_factory.begin() as session:
                end_delivery(session=session, job_id=job_id, item_ids=unique(item_ids))
        except Exception as exc:  # the retry goes ahead either way
            log.warning("job %s: could not clear the in-flight mark: %r", job_id, exc)

    def _decode(
        self,
        ids: list[str],
        items: dict[str, Item],
        blobs: dict[str, bytes | ItemError],
        size: int,
        outcome: BatchOutcome,
        *,
        final: bool,
    ) -> dict[str, np.ndarray]:
        # decode_many never raises for an image: each item gets an array or its ItemError.
        # Pillow releases the GIL while decoding, so one thread per core uses them; the pixel
        # budget (two of the largest allowed images at once) bounds the memory in flight,
        # whatever the batch holds.
        results = decode_many(
            {item_id: blobs[items[item_id].image_uri] for item_id in ids},
            size=size,
            max_pixels=self.settings.max_image_pixels,
            workers=self.settings.decode_workers,
        )
        pixels: dict[str, np.ndarray] = {}
        for item_id, result in results.items():
            if isinstance(result, np.ndarray):
                pixels[item_id] = result
            elif result.transient and not final:
                outcome.deferred[item_id] = result
            else:
                outcome.failed[item_id] = result
        return pixels


class _Stopwatch:
    """Milliseconds per stage of a batch, for the log line operators tune batch size by."""

    def __init__(self) -> None:
        self._last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = (now - self._last) * 1000
        self._last = now

    def __str__(self) -> str:
        return " ".join(f"{k} {v:.0f}ms" for k, v in self.laps.items())
