"""Scoring a tagging run against its labels: how many items got the right tags.

``make demo`` ends with it: ``tagger tags --format csv`` (the tags the run wrote) against
the synthetic catalogue's ``labels_front.csv`` (whose ``image_id`` is the catalogue's
``item_id``), so the demo's "N of 48 right" is counted, not eyeballed.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TagScore:
    items: int  # tagged items that have labels
    gender_right: int
    product_right: int
    unlabelled: int  # tagged items with no row in the labels file

    def summary(self) -> str:
        line = (
            f"{self.product_right} of {self.items} product types and {self.gender_right} of "
            f"{self.items} genders right"
        )
        if self.unlabelled:
            items = "item" if self.unlabelled == 1 else "items"
            line += f" ({self.unlabelled} tagged {items} without labels left out)"
        return line


def read_labels(path: Path | str) -> dict[str, tuple[str, str]]:
    """``image_id`` (or ``item_id``) -> (gender, product_type) from a labels CSV."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    labels = {}
    for row in rows:
        ref = row.get("image_id") or row.get("item_id")
        if ref:
            labels[ref] = (row["gender"], row["product_type"])
    return labels


def score_tags(tags: Iterable[dict[str, str]], labels: dict[str, tuple[str, str]]) -> TagScore:
    """Count the tag rows (``item_id, gender, product_type``) that match their labels."""
    items = gender_right = product_right = unlabelled = 0
    for row in tags:
        truth = labels.get(row["item_id"])
        if truth is None:
            unlabelled += 1
            continue
        items += 1
        gender_right += row["gender"] == truth[0]
        product_right += row["product_type"] == truth[1]
    return TagScore(items, gender_right, product_right, unlabelled)
