"""Model versions: register, activate, list. Exactly one version is active at a time."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tagger.current import refresh_current_tags
from tagger.db import ModelVersion, Tag, utcnow
from tagger.exceptions import ArtifactError, UnknownModelVersion
from tagger.settings import Settings
from tagger.thresholds import Defaults, store_thresholds
from tagger.uris import is_s3

#: current_tags.source of a row showing a person's label (tagger.labels)
HUMAN_SOURCE = "human"


@dataclass(frozen=True)
class VersionSummary:
    version: ModelVersion
    tagged_items: int


def register_model_version(
    *,
    session: Session,
    version: str,
    artifact_uri: str,
    gender_labels: list[str],
    product_labels: list[str],
    image_size: int,
    uses_text: bool,
    metrics: dict | None = None,
    activate: bool = False,
) -> ModelVersion:
    """Record a version (idempotent for the same version and URI) and optionally activate it."""
    if version == HUMAN_SOURCE:
        # current_tags.source says 'human' for a person's label: a version of that name
        # would read as one.
        raise ArtifactError(f"{HUMAN_SOURCE!r} cannot name a model version: choose another")
    existing = session.get(ModelVersion, version)
    if existing is None:
        existing = ModelVersion(
            version=version,
            artifact_uri=artifact_uri,
            gender_labels=list(gender_labels),
            product_labels=list(product_labels),
            image_size=image_size,
            uses_text=uses_text,
            metrics=metrics,
            is_active=False,
        )
        session.add(existing)
        session.flush()
    elif existing.artifact_uri != artifact_uri:
        # Same content hash at a new address: keep the first registration's labels and
        # metrics (identical by construction) but remember where the artifact now lives.
        existing.artifact_uri = artifact_uri
    if activate:
        activate_model_version(session=session, version=version)
    return existing


def activate_model_version(*, session: Session, version: str) -> ModelVersion:
    """Make ``version`` the only active one. Unknown versions change nothing."""
    target = session.get(ModelVersion, version, with_for_update=True)
    if target is None:
        known = ", ".join(session.scalars(sa.select(ModelVersion.version)).all()) or "none"
        raise UnknownModelVersion(f"unknown model version {version!r} (registered: {known})")
    if target.is_active:
        return target
    # Clear first, then set: the partial unique index allows one active row at any moment.
    session.execute(
        sa.update(ModelVersion).where(ModelVersion.is_active.is_(True)).values(is_active=False)
    )
    session.flush()
    target.is_active = True
    target.activated_at = utcnow()
    session.flush()
    # Every item's current tag is chosen again in this transaction: readers see the old
    # choice until it commits, then the new one.
    refresh_current_tags(session=session)
    return target


def get_active_model_version(*, session: Session) -> ModelVersion | None:
    return session.scalars(sa.select(ModelVersion).where(ModelVersion.is_active.is_(True))).first()


def get_model_version(*, session: Session, version: str) -> ModelVersion:
    found = session.get(ModelVersion, version)
    if found is None:
        raise UnknownModelVersion(f"unknown model version {version!r}")
    return found


def list_model_versions(*, session: Session) -> list[VersionSummary]:
    """Every version, newest first, with how many items it has tagged."""
    counts = (
        sa.select(Tag.model_version, sa.func.count().label("n"))
        .group_by(Tag.model_version)
        .subquery()
    )
    rows = session.execute(
        sa.select(ModelVersion, sa.func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.model_version == ModelVersion.version)
        .order_by(ModelVersion.created_at.desc(), ModelVersion.version)
    ).all()
    return [VersionSummary(version=mv, tagged_items=int(n)) for mv, n in rows]


def register_artifact(
    *, session: Session, settings: Settings, uri: str, version: str | None, activate: bool
) -> ModelVersion:
    """Read the artifact at ``uri`` (fetching it from S3 if need be) and register it; its
    labels, input size and metrics come from the artifact itself. Where this host's
    workers would run OpenVINO, the artifact is converted and checked against Keras first,
    and a conversion the check refuses refuses the registration (ConversionRefused)."""
    # Lazy: only this command needs the artifact modules (and boto3, through the cache).
    from tagger.artifact_cache import resolve_artifact
    from tagger.artifacts import artifact_fingerprint, read_artifact_info
    from tagger.runtime import check_conversion
    from tagger.storage import make_s3_client

    s3 = make_s3_client(settings) if is_s3(uri) else None
    path = resolve_artifact(uri, cache_dir=settings.model_cache_dir, s3_client=s3)
    info = read_artifact_info(path)
    check_conversion(path, settings=settings)
    registered = register_model_version(
        session=session,
        version=version or artifact_fingerprint(path),
        artifact_uri=uri if is_s3(uri) else str(path.resolve()),
        gender_labels=info.labels["gender"],
        product_labels=info.labels["product"],
        image_size=int(info.config["image_size"]),
        uses_text=bool(info.config["use_text"]),
        metrics=info.metrics,
        activate=activate,
    )
    # Thresholds the trainer fitted on the validation split (review.json), else defaults.
    review = getattr(info, "review", None)
    fitted = None if review is None else {"product": review.product, "gender": review.gender}
    store_thresholds(
        session=session,
        version=registered,
        fitted=fitted,
        defaults=Defaults(
            product_margin=settings.review_product_margin,
            gender_score=settings.review_gender_score,
        ),
    )
    return registered
