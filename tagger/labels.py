"""Human labels: a person's correction of an item's gender and/or product type.

A label is shown by ``current_tags`` over any model's tag (``source = 'human'``), and stays
shown through re-tagging and roll-outs: the model's tags go on being written to ``tags``,
and every writer of current rows (tagger.current) lays the label over them. Every change
is audited in ``label_changes`` (who, when, before, after).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tagger.current import apply_labels
from tagger.db import Item, Label, LabelChange, utcnow
from tagger.exceptions import TaggerError
from tagger.registry import get_active_model_version


class LabelError(TaggerError):
    """A label that cannot be stored: unknown item, no field, or a value the active model
    does not know (the message names which)."""


@dataclass(frozen=True)
class LabelChangeOutcome:
    item_id: str
    before: dict[str, str | None] | None
    after: dict[str, str | None] | None


def _as_dict(label: Label | None) -> dict[str, str | None] | None:
    if label is None:
        return None
    return {"gender": label.gender, "product_type": label.product_type, "note": label.note}


def _check_value(value: str | None, allowed: list[str], field: str) -> None:
    if value is not None and allowed and value not in allowed:
        raise LabelError(
            f"{field} {value!r} is not one of the active model's: {', '.join(allowed)}"
        )


def set_label(
    *,
    session: Session,
    item_id: str,
    by: str,
    gender: str | None = None,
    product_type: str | None = None,
    note: str | None = None,
) -> LabelChangeOutcome:
    """Label the item (fields not given keep the label's current value, if any), audit the
    change and show it in the item's current row, in the caller's transaction."""
    if not by.strip():
        raise LabelError("a label needs the name of who set it")
    if session.get(Item, item_id) is None:
        raise LabelError(f"no item {item_id!r}")
    active = get_active_model_version(session=session)
    if active is not None:
        _check_value(gender, list(active.gender_labels), "gender")
        _check_value(product_type, list(active.product_labels), "product type")
    label = session.get(Label, item_id, with_for_update=True)
    before = _as_dict(label)
    now = utcnow()
    if label is None:
        if gender is None and product_type is None:
            raise LabelError(f"item {item_id!r}: give a gender or a product type to label")
        label = Label(item_id=item_id, labelled_by=by, labelled_at=now)
        session.add(label)
    label.gender = gender if gender is not None else label.gender
    label.product_type = product_type if product_type is not None else label.product_type
    label.note = note if note is not None else label.note
    label.labelled_by, label.labelled_at = by, now
    after = _as_dict(label)
    session.add(
        LabelChange(item_id=item_id, changed_by=by, changed_at=now, before=before, after=after)
    )
    session.flush()
    apply_labels(session=session, item_ids=[item_id])
    return LabelChangeOutcome(item_id=item_id, before=before, after=after)


def clear_label(*, session: Session, item_id: str, by: str) -> LabelChangeOutcome:
    """Remove the item's label (audited): its model tag shows again."""
    label = session.get(Label, item_id, with_for_update=True)
    if label is None:
        raise LabelError(f"item {item_id!r} has no label")
    before = _as_dict(label)
    session.delete(label)
    session.add(
        LabelChange(item_id=item_id, changed_by=by, changed_at=utcnow(), before=before, after=None)
    )
    session.flush()
    apply_labels(session=session, item_ids=[item_id])
    return LabelChangeOutcome(item_id=item_id, before=before, after=None)


def label_history(*, session: Session, item_id: str) -> list[LabelChange]:
    return list(
        session.scalars(
            sa.select(LabelChange)
            .where(LabelChange.item_id == item_id)
            .order_by(LabelChange.changed_at, LabelChange.id)
        )
    )
