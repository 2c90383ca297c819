"""Calibrated scores reach the tags: a model version's calibration is applied to every
batch (per row, captioned or not), and each tag and current tag carries the margin
between its top two product scores; migration 0009 fills it for tags written before."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sqlalchemy as sa

from tagger.calibration import SOFTMAX_TEMPERATURE, Calibration, HeadCalibration
from tagger.db import Item, current_tags, make_engine, upgrade
from tagger.model import LoadedModel
from tagger.output import TAG_COLUMNS
from tagger.scoring import Prediction
from tagger.tags import TagQuery, query_tags, save_batch
from tests.factories import add_model_version


class FixedScores(LoadedModel):
    """A runtime that returns fixed sigmoid scores. An in-process fake on purpose: this is
    a pure unit test of what ``predict`` does with a runtime's scores (calibration per
    row), which a real model cannot be told to produce."""

    def __init__(self, *, uses_text: bool, calibration: Calibration | None) -> None:
        super().__init__(
            version="v",
            gender_labels=["MEN", "WOMEN"],
            product_labels=["Dresses", "Pants", "Shirts"],
            image_size=2,
            uses_text=uses_text,
            calibration=calibration,
        )
        self.seen: list[str | None] = []

    def _scores(self, images, captions):
        self.seen = captions
        n = images.shape[0]
        return np.tile([0.9, 0.2], (n, 1)), np.tile([0.95, 0.9, 0.01], (n, 1))


def _calibration(captioned_t: float, uncaptioned_t: float) -> Calibration:
    return Calibration(
        method=SOFTMAX_TEMPERATURE,
        heads={"gender": HeadCalibration(1.0), "product": HeadCalibration(captioned_t)},
        uncaptioned={"product": HeadCalibration(uncaptioned_t)},
    )


def test_without_calibration_scores_are_the_model_s_and_margin_is_top_two():
    """No calibration: the raw sigmoid scores, and the margin 0.95 - 0.9."""
    model = FixedScores(uses_text=False, calibration=None)
    [p] = model.predict(np.zeros((1, 2, 2, 3), np.uint8), [None])
    assert (p.product_type, p.product_score) == ("Dresses", 0.95)
    assert p.product_margin == pytest.approx(0.05)


def test_calibration_is_applied_per_row_by_caption():
    """A text model's captioned and uncaptioned rows get their own temperatures; the
    calibrated product scores sum to 1 (softmax) and the margin is theirs."""
    model = FixedScores(uses_text=True, calibration=_calibration(1.0, 5.0))
    with_caption, without = model.predict(np.zeros((2, 2, 2, 3), np.uint8), ["a dress", None])
    for p in (with_caption, without):
        assert sum(p.scores["product"].values()) == pytest.approx(1.0, abs=1e-5)
        top = sorted(p.scores["product"].values(), reverse=True)
        assert p.product_margin == pytest.approx(top[0] - top[1], abs=1e-6)
    # A higher temperature flattens the scores: the uncaptioned row is less sure.
    assert without.product_score < with_caption.product_score
    assert without.product_margin < with_caption.product_margin


def test_an_image_only_model_uses_the_captioned_parameters_for_every_row():
    """uses_text=False: every row is calibrated with ``heads``, whatever the captions."""
    model = FixedScores(uses_text=False, calibration=_calibration(1.0, 5.0))
    a, b = model.predict(np.zeros((2, 2, 2, 3), np.uint8), [None, "x"])
    assert a.scores == b.scores


def test_saved_tag_and_current_tag_carry_the_margin(session_factory):
    """save_batch stores the prediction's margin on the tag and the current tag."""
    with session_factory.begin() as s:
        add_model_version(s, "v1", activate=True)
        s.add(Item(item_id="a", image_uri="/a.jpg"))
        s.flush()
        scores = {"product": {"Dresses": 0.6, "Pants": 0.35}, "gender": {"WOMEN": 0.9}}
        p = Prediction("WOMEN", 0.9, "Dresses", 0.6, scores, product_margin=0.25)
        save_batch(session=s, job_id=None, model_version="v1", predictions={"a": p}, failures={})
    with session_factory() as s:
        row = s.execute(sa.select(current_tags).where(current_tags.c.item_id == "a")).one()
        listed = query_tags(session=s, query=TagQuery(limit=10))
        by_version = query_tags(session=s, query=TagQuery(model_version="v1", limit=10))
    assert (row.product_type, row.product_margin) == ("Dresses", 0.25)
    # `tagger tags` lists it, from current tags and from one version's tags alike.
    assert [r["product_margin"] for r in listed + by_version] == [0.25, 0.25]
    assert "product_margin" in TAG_COLUMNS


def _migrate_margins(url: str) -> None:
    upgrade(url, "0008")
    engine = make_engine(url)
    scores = {
        "three": {"product": {"Dresses": 0.7, "Pants": 0.2, "Shirts": 0.1}},
        "one": {"product": {"Dresses": 0.8}},
    }
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO model_versions (version, artifact_uri, gender_labels, "
                "product_labels, image_size, uses_text, metrics, is_active, created_at) "
                "VALUES ('v1', '/m', '[]', '[]', 32, FALSE, '{}', TRUE, CURRENT_TIMESTAMP)"
            )
        )
        for item_id, s in scores.items():
            conn.execute(
                sa.text("INSERT INTO items (item_id, image_uri) VALUES (:i, '/x')"), {"i": item_id}
            )
            conn.execute(
                sa.text(
                    "INSERT INTO tags (item_id, model_version, gender, gender_score, "
                    "product_type, product_score, scores, tagged_at) VALUES "
                    "(:i, 'v1', 'MEN', 0.9, 'Dresses', 0.7, :s, CURRENT_TIMESTAMP)"
                ),
                {"i": item_id, "s": json.dumps(s)},
            )
        conn.execute(
            sa.text(
                "INSERT INTO current_tag_rows (item_id, model_version, gender, gender_score, "
                "product_type, product_score, tagged_at) SELECT item_id, model_version, "
                "gender, gender_score, product_type, product_score, tagged_at FROM tags"
            )
        )
    upgrade(url)
    with engine.connect() as conn:
        tags = dict(conn.execute(sa.text("SELECT item_id, product_margin FROM tags")).all())
        shown = dict(
            conn.execute(sa.text("SELECT item_id, product_margin FROM current_tags")).all()
        )
    engine.dispose()
    assert tags == shown == {"three": pytest.approx(0.5), "one": pytest.approx(0.8)}


@pytest.mark.parametrize("chunk", ["1", "20000"])
def test_migration_0009_fills_margins_on_postgres(monkeypatch, chunk):
    """Upgrading fills each existing tag's margin from its scores (the best alone for one
    class), and current_tags shows it; in chunks of any size, each its own transaction."""
    from tests.services import postgres_database

    monkeypatch.setenv("TAGGER_MIGRATION_CHUNK", chunk)
    with postgres_database() as url:
        _migrate_margins(url)


def test_migration_0009_fills_margins_on_sqlite(tmp_path):
    """The same on the embedded database."""
    _migrate_margins(f"sqlite:///{tmp_path / 'margins.db'}")
