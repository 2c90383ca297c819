"""Review thresholds: stored per version and class at registration (fitted or default), set
by hand, and read by the ``current_tags.needs_review`` column on Postgres and SQLite."""

from __future__ import annotations

import json
import os

import pytest
import sqlalchemy as sa

from tagger.db import Item, ModelVersion, current_tags
from tagger.labels import set_label
from tagger.scoring import Prediction
from tagger.tags import save_batch
from tagger.thresholds import (
    ARTIFACT,
    DEFAULT,
    MANUAL,
    Defaults,
    ThresholdError,
    list_thresholds,
    set_threshold,
    store_thresholds,
)
from tests.factories import add_model_version

DEFAULTS = Defaults(product_margin=0.2, gender_score=0.75)


def _tag(s, item_id: str, *, gender_score: float, margin: float | None, product="Pants"):
    scores = {"gender": {"MEN": gender_score}, "product": {product: 0.8}}
    pred = Prediction("MEN", gender_score, product, 0.8, scores, product_margin=margin)
    s.add(Item(item_id=item_id, image_uri=f"/{item_id}.jpg"))
    s.flush()
    save_batch(session=s, job_id=None, model_version="v1", predictions={item_id: pred}, failures={})


def _needs_review(sessions) -> dict[str, bool]:
    with sessions() as s:
        rows = s.execute(sa.select(current_tags.c.item_id, current_tags.c.needs_review)).all()
    return {item_id: bool(flag) for item_id, flag in rows}


def test_registration_stores_the_fitted_figures_and_defaults_for_the_rest(sessions):
    """A class the artifact fitted gets its figure (source artifact), every other class the
    default; storing again keeps what is there, a hand-set threshold included."""
    with sessions.begin() as s:
        mv = add_model_version(s, "v1", activate=True)
        fitted = {"product": {"Dresses": 0.41}, "gender": {}}
        assert store_thresholds(session=s, version=mv, fitted=fitted, defaults=DEFAULTS) == 4
        set_threshold(session=s, version="v1", head="gender", label="MEN", threshold=0.9, by="ana")
        assert store_thresholds(session=s, version=mv, fitted=None, defaults=DEFAULTS) == 0
    with sessions() as s:
        got = {
            (t.head, t.label): (t.threshold, t.source)
            for t in list_thresholds(session=s, version="v1")
        }
    assert got == {
        ("gender", "MEN"): (0.9, MANUAL),
        ("gender", "WOMEN"): (0.75, DEFAULT),
        ("product", "Dresses"): (0.41, ARTIFACT),
        ("product", "Pants"): (0.2, DEFAULT),
    }


def test_needs_review_marks_tags_under_their_class_threshold(sessions):
    """Under the product margin or the gender score threshold: needs review; above both,
    no margin stored (an old tag), or a version without thresholds: not."""
    with sessions.begin() as s:
        mv = add_model_version(s, "v1", activate=True)
        store_thresholds(session=s, version=mv, fitted=None, defaults=DEFAULTS)
        _tag(s, "close-call", gender_score=0.9, margin=0.1)
        _tag(s, "unsure-gender", gender_score=0.6, margin=0.5)
        _tag(s, "confident", gender_score=0.9, margin=0.5)
        _tag(s, "old-tag", gender_score=0.9, margin=None)
    assert _needs_review(sessions) == {
        "close-call": True,
        "unsure-gender": True,
        "confident": False,
        "old-tag": False,
    }
    with sessions.begin() as s:
        s.execute(sa.text("DELETE FROM review_thresholds"))
    assert not any(_needs_review(sessions).values())


def test_a_hand_set_threshold_changes_the_queue_at_once(sessions):
    """Raising a class's threshold puts its tags in the queue with nothing recomputed."""
    with sessions.begin() as s:
        mv = add_model_version(s, "v1", activate=True)
        store_thresholds(session=s, version=mv, fitted=None, defaults=DEFAULTS)
        _tag(s, "a", gender_score=0.9, margin=0.5, product="Dresses")
    assert _needs_review(sessions) == {"a": False}
    with sessions.begin() as s:
        set_threshold(
            session=s, version="v1", head="product", label="Dresses", threshold=0.6, by="ana"
        )
    assert _needs_review(sessions) == {"a": True}


def test_a_labelled_field_never_needs_review(sessions):
    """A person's product type scores margin 1.0, above any threshold under 1."""
    with sessions.begin() as s:
        mv = add_model_version(s, "v1", activate=True)
        store_thresholds(session=s, version=mv, fitted=None, defaults=DEFAULTS)
        _tag(s, "a", gender_score=0.9, margin=0.05)
        set_label(session=s, item_id="a", by="ana", product_type="Dresses")
    assert _needs_review(sessions) == {"a": False}


@pytest.mark.parametrize(
    ("head", "label", "value", "message"),
    [
        ("colour", "MEN", 0.5, "head must be one of"),
        ("product", "Hats", 0.5, "'Hats' is not a product class of v1"),
        ("gender", "MEN", 1.5, "between 0 and 1"),
    ],
)
def test_a_threshold_that_cannot_be_set_is_refused_by_name(
    session_factory, head, label, value, message
):
    """Unknown head, unknown class and values outside [0, 1] are refused, naming what."""
    with session_factory.begin() as s:
        add_model_version(s, "v1", activate=True)
    with session_factory.begin() as s, pytest.raises(ThresholdError, match=message):
        set_threshold(session=s, version="v1", head=head, label=label, threshold=value, by="x")


def test_cli_sets_a_threshold_and_lists_it(session_factory, settings_env, tagger_cli):
    """`tagger review set-threshold` on the active version, then `review thresholds` shows
    it as manual, by whom; giving both --gender and --product-type is a usage error."""
    with session_factory.begin() as s:
        mv = add_model_version(s, "v1", activate=True)
        store_thresholds(session=s, version=mv, fitted=None, defaults=DEFAULTS)
    env = dict(os.environ)
    done = tagger_cli(
        env, "review", "set-threshold", "0.35", "--product-type", "Dresses", "--by", "ana"
    )
    assert done.returncode == 0, done.stderr
    listed = json.loads(tagger_cli(env, "review", "thresholds", "--format", "json").stdout)
    by_class = {(r["head"], r["class"]): r for r in listed}
    assert by_class[("product", "Dresses")] == {
        "head": "product",
        "class": "Dresses",
        "threshold": 0.35,
        "source": "manual",
        "set_by": "ana",
    }
    assert by_class[("product", "Pants")]["source"] == "default"
    both = tagger_cli(
        env, "review", "set-threshold", "0.3", "--gender", "MEN", "--product-type", "Pants"
    )
    assert both.returncode == 2 and "exactly one of" in both.stderr


@pytest.mark.slow
def test_model_register_stores_a_threshold_for_every_class(
    session_factory, settings_env, tagger_cli, artifact, monkeypatch
):
    """`tagger model register` of an artifact without fitted thresholds gives every class of
    both heads the settings' defaults."""
    monkeypatch.setenv("TAGGER_REVIEW_PRODUCT_MARGIN", "0.3")
    env = dict(os.environ)
    done = tagger_cli(env, "model", "register", artifact, "--version", "v1", "--activate")
    assert done.returncode == 0, done.stderr
    with session_factory() as s:
        rows = list_thresholds(session=s, version="v1")
        mv = s.get(ModelVersion, "v1")
        classes = len(mv.gender_labels) + len(mv.product_labels)
    assert len(rows) == classes
    assert {(t.head, t.threshold, t.source) for t in rows} == {
        ("gender", 0.75, DEFAULT),
        ("product", 0.3, DEFAULT),
    }


@pytest.mark.slow
def test_model_register_stores_the_artifacts_fitted_thresholds(
    session_factory, settings_env, tagger_cli, artifact, tmp_path
):
    """An artifact with review.json gives its classes their fitted figures (the sentinel
    above 1 included: every tag of that class needs review) and the rest the defaults."""
    import shutil

    from tagger.review import ReviewThresholds

    folder = shutil.copytree(artifact, tmp_path / "model")
    labels = json.loads((folder / "labels.json").read_text())
    first, second = labels["product"][:2]
    review = ReviewThresholds(
        target_precision=0.95,
        product={first: 0.31, second: 1.000001},
        gender={labels["gender"][0]: 0.6},
    )
    (folder / "review.json").write_text(json.dumps(review.to_dict()))
    env = dict(os.environ)
    done = tagger_cli(env, "model", "register", str(folder), "--version", "v1")
    assert done.returncode == 0, done.stderr
    with session_factory() as s:
        got = {
            (t.head, t.label): (t.threshold, t.source)
            for t in list_thresholds(session=s, version="v1")
        }
    assert got[("product", first)] == (0.31, ARTIFACT)
    assert got[("product", second)] == (1.000001, ARTIFACT)
    assert got[("gender", labels["gender"][0])] == (0.6, ARTIFACT)
    assert got[("gender", labels["gender"][1])] == (0.75, DEFAULT)
    assert got[("product", labels["product"][2])] == (0.2, DEFAULT)
