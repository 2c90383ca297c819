"""Review thresholds: per model version, head and class, the confidence under which a tag
needs a person's look.

A product tag's confidence is its margin over the second-best product type (a close call
between two types is what a person should settle); a gender tag's is its score. The
``current_tags`` view compares each row with its version's thresholds (``needs_review``),
so changing a threshold changes the queue at once, with nothing to recompute.

Registration stores one row per class: the artifact's own figure where its trainer fitted
one on the validation split (``source = artifact``), else the setting's default
(``default``); a person may set any of them (``manual``), and re-registering the same
version never overwrites a threshold that is already there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tagger.db import ModelVersion, ReviewThreshold, insert, utcnow
from tagger.exceptions import TaggerError, UnknownModelVersion

GENDER, PRODUCT = "gender", "product"
HEADS = (GENDER, PRODUCT)
ARTIFACT, DEFAULT, MANUAL = "artifact", "default", "manual"


class ThresholdError(TaggerError):
    """A threshold that cannot be set: unknown head or class, or a value outside [0, 1]."""


@dataclass(frozen=True)
class Defaults:
    """The thresholds of classes an artifact gives none for (settings)."""

    product_margin: float
    gender_score: float

    def of(self, head: str) -> float:
        return self.product_margin if head == PRODUCT else self.gender_score


def _classes(version: ModelVersion, head: str) -> list[str]:
    return list(version.product_labels if head == PRODUCT else version.gender_labels)


def store_thresholds(
    *,
    session: Session,
    version: ModelVersion,
    fitted: Mapping[str, Mapping[str, float]] | None,
    defaults: Defaults,
) -> int:
    """A row for every class of ``version`` that has none yet: the fitted figure
    (``fitted[head][class]``) where there is one, else the default. Returns rows added."""
    now = utcnow()
    rows = []
    for head in HEADS:
        given = (fitted or {}).get(head) or {}
        for label in _classes(version, head):
            value = given.get(label)
            rows.append(
                {
                    "model_version": version.version,
                    "head": head,
                    "label": label,
                    "threshold": float(defaults.of(head) if value is None else value),
                    "source": DEFAULT if value is None else ARTIFACT,
                    "set_by": None,
                    "set_at": now,
                }
            )
    if not rows:
        return 0
    stmt = insert(session, ReviewThreshold).values(rows).on_conflict_do_nothing()
    return session.execute(stmt).rowcount


def set_threshold(
    *, session: Session, version: str, head: str, label: str, threshold: float, by: str
) -> ReviewThreshold:
    """Set one class's threshold by hand (``source = manual``)."""
    mv = session.get(ModelVersion, version)
    if mv is None:
        raise UnknownModelVersion(f"unknown model version {version!r}")
    if head not in HEADS:
        raise ThresholdError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
    if label not in _classes(mv, head):
        raise ThresholdError(
            f"{label!r} is not a {head} class of {version}: {', '.join(_classes(mv, head))}"
        )
    if not 0.0 <= threshold <= 1.0:
        raise ThresholdError(f"a threshold is between 0 and 1, got {threshold}")
    row = session.get(ReviewThreshold, (version, head, label), with_for_update=True)
    if row is None:
        row = ReviewThreshold(model_version=version, head=head, label=label)
        session.add(row)
    row.threshold, row.source, row.set_by, row.set_at = threshold, MANUAL, by, utcnow()
    session.flush()
    return row


def list_thresholds(*, session: Session, version: str) -> list[ReviewThreshold]:
    return list(
        session.scalars(
            sa.select(ReviewThreshold)
            .where(ReviewThreshold.model_version == version)
            .order_by(ReviewThreshold.head, ReviewThreshold.label)
        )
    )
