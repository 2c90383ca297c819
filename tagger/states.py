"""The words a job's status, a ledger item's state and a job's kind can take, named once.

The database columns (``jobs.status``, ``job_items.state``, ``jobs.kind``) are plain
strings and stay so: these enums mix in ``str``, so a member *is* its word. Values read
back from the database are plain ``str`` and compare equal to the members
(``job.status == JobStatus.FINISHED``), and a member prints, formats and serializes
(JSON, CSV) as the bare word, exactly what was stored and shown before the names existed.

This module imports nothing from tagger, so any module can use it without an import circle.
"""

from __future__ import annotations

from enum import Enum
from typing import Final


class _Word(str, Enum):
    """A str-valued enum whose members print as their value. Python 3.10 has no StrEnum,
    and a (str, Enum) member's str() would otherwise read ``JobStatus.QUEUED``."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        # Explicit because Enum.__format__ differs between Python versions for mixins.
        return format(str(self.value), spec)


class JobStatus(_Word):
    """``jobs.status``: queued until a worker takes up a batch, running until every item
    is tagged, failed or moved to another job, then finished."""

    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"


class ItemState(_Word):
    """``job_items.state``: an item's progress within one job. ``moved`` means a newer
    job took the pending item over (the sweep re-queuing a stalled job's items)."""

    PENDING = "pending"
    TAGGED = "tagged"
    FAILED = "failed"
    MOVED = "moved"


class JobKind(_Word):
    """``jobs.kind``: what created the job."""

    IMPORT = "import"  # `tagger import`
    RUN = "run"  # `tagger run`, tagged in-process
    RETAG = "retag"  # the re-tag sweep (beat or `tagger retag`)
    SHADOW = "shadow"  # `tagger model compare`: a named version, never shown as current


#: Statuses of a job that still has work queued or in hand.
ACTIVE_STATUSES: tuple[JobStatus, ...] = (JobStatus.QUEUED, JobStatus.RUNNING)

#: Statuses of a job that will not change again: its per-item ledger may be pruned once
#: it is older than the retention (tagger.retention).
FINISHED_STATUSES: tuple[JobStatus, ...] = (JobStatus.FINISHED,)

#: Display-only: an active job with no progress for ``stall_after`` seconds. Never stored;
#: `tagger jobs` shows it in the status column and `tagger jobs watch` stops on it.
STALLED: Final = "stalled"
