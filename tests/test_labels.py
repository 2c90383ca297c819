"""Human labels are shown over any model's tag, survive re-tagging and roll-outs (in place
and swapped), are audited, and are refused with a clear message when they cannot be."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

from tagger.current import refresh_current_tags
from tagger.db import Item, current_tags
from tagger.labels import LabelError, clear_label, label_history, set_label
from tagger.registry import activate_model_version
from tagger.scoring import Prediction
from tagger.tags import TagQuery, query_tags, save_batch
from tests.factories import add_model_version


def _tag(s, version: str, item_ids: list[str], product: str = "Pants") -> None:
    scores = {"gender": {"MEN": 0.9}, "product": {product: 0.8}}
    preds = {i: Prediction("MEN", 0.9, product, 0.8, scores, product_margin=0.6) for i in item_ids}
    save_batch(session=s, job_id=None, model_version=version, predictions=preds, failures={})


def _shown(session_factory, item_id: str) -> tuple:
    with session_factory() as s:
        row = s.execute(sa.select(current_tags).where(current_tags.c.item_id == item_id)).one()
    return row.gender, row.product_type, row.product_score, row.product_margin, row.source


@pytest.fixture
def tagged(session_factory):
    """Items a, b tagged by the active v1 as MEN / Pants."""
    with session_factory.begin() as s:
        add_model_version(s, "v1", activate=True)
        s.add_all([Item(item_id=i, image_uri=f"/{i}.jpg") for i in ("a", "b")])
        s.flush()
        _tag(s, "v1", ["a", "b"])
    return session_factory


def test_a_label_shows_over_the_model_tag_and_says_so(tagged):
    """The labelled field shows the person's value with score and margin 1.0, the other
    field the model's; source is human, and the unlabelled item still shows v1."""
    with tagged.begin() as s:
        set_label(session=s, item_id="a", by="ana", product_type="Dresses")
    assert _shown(tagged, "a") == ("MEN", "Dresses", 1.0, 1.0, "human")
    assert _shown(tagged, "b") == ("MEN", "Pants", 0.8, 0.6, "v1")


@pytest.mark.parametrize("swap_above", [10**9, 0])
def test_re_tagging_and_a_roll_out_never_overwrite_a_label(tagged, swap_above):
    """A new active version's tag of the item, and the activation (in place or swapped),
    leave the label shown; the model's tag is stored underneath all the same."""
    with tagged.begin() as s:
        set_label(session=s, item_id="a", by="ana", product_type="Dresses", gender="WOMEN")
        add_model_version(s, "v2")
        _tag(s, "v2", ["a", "b"], product="Pants")
    with tagged.begin() as s:
        activate_model_version(session=s, version="v2")
        refresh_current_tags(session=s, swap_above=swap_above)
    with tagged.begin() as s:
        _tag(s, "v2", ["a"], product="Pants")  # a nightly re-tag
    assert _shown(tagged, "a") == ("WOMEN", "Dresses", 1.0, 1.0, "human")
    assert _shown(tagged, "b")[4] == "v2"
    with tagged() as s:
        model = query_tags(session=s, query=TagQuery(model_version="v2", item_id="a"))
    assert [(r["product_type"], r["source"]) for r in model] == [("Pants", "v2")]


def test_clearing_a_label_shows_the_model_tag_again_and_every_change_is_audited(tagged):
    """set, change, clear: three audit rows with who, before and after; the tag is back."""
    with tagged.begin() as s:
        set_label(session=s, item_id="a", by="ana", product_type="Dresses")
        set_label(session=s, item_id="a", by="bo", gender="WOMEN", note="a wrap dress")
        clear_label(session=s, item_id="a", by="cy")
    assert _shown(tagged, "a") == ("MEN", "Pants", 0.8, 0.6, "v1")
    with tagged() as s:
        changes = [(c.changed_by, c.before, c.after) for c in label_history(session=s, item_id="a")]
    first = {"gender": None, "product_type": "Dresses", "note": None}
    second = {"gender": "WOMEN", "product_type": "Dresses", "note": "a wrap dress"}
    assert changes == [("ana", None, first), ("bo", first, second), ("cy", second, None)]


def test_source_filter_finds_the_labelled_items(tagged):
    """--source human lists the labelled items only, --source model the others."""
    with tagged.begin() as s:
        set_label(session=s, item_id="b", by="ana", product_type="Dresses")
    with tagged() as s:
        human = query_tags(session=s, query=TagQuery(source="human"))
        model = query_tags(session=s, query=TagQuery(source="model"))
    assert [r["item_id"] for r in human] == ["b"] and [r["item_id"] for r in model] == ["a"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"item_id": "zz", "product_type": "Dresses"}, "no item 'zz'"),
        ({"item_id": "a", "product_type": "Hats"}, "product type 'Hats' is not one of"),
        ({"item_id": "a", "gender": "KIDS"}, "gender 'KIDS' is not one of"),
        ({"item_id": "a"}, "give a gender or a product type"),
    ],
)
def test_a_label_that_cannot_be_stored_is_refused_by_name(tagged, kwargs, message):
    """Unknown item, a value the active model does not know, or nothing to set."""
    with pytest.raises(LabelError, match=message), tagged.begin() as s:
        set_label(session=s, by="ana", **kwargs)
    assert _shown(tagged, "a")[4] == "v1"


def test_cli_sets_a_label_and_tags_shows_it(tagged, settings_env, tagger_cli):
    """`tagger labels set` then `tagger tags --source human --format csv` lists it."""
    env = dict(os.environ)
    done = tagger_cli(env, "labels", "set", "a", "--product-type", "Dresses", "--by", "ana")
    assert done.returncode == 0, done.stderr
    assert "a: no label -> product_type=Dresses (by ana)" in done.stdout
    listed = tagger_cli(env, "tags", "--source", "human", "--format", "csv")
    lines = listed.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("a,MEN,")
    assert ",Dresses,1.0,1.0,v1,human," in lines[1]
    bad = tagger_cli(env, "labels", "set", "a", "--product-type", "Hats", "--by", "ana")
    assert bad.returncode != 0 and "error: product type 'Hats'" in bad.stderr
    history = tagger_cli(env, "labels", "history", "a")
    assert history.stdout.strip().endswith("ana: no label -> product_type=Dresses")


def test_no_model_version_may_be_called_human(session_factory):
    """'human' is the source of labelled rows, so no version may take that name."""
    from tagger.exceptions import ArtifactError

    refused = pytest.raises(ArtifactError, match="'human' cannot name a model version")
    with refused, session_factory.begin() as s:
        add_model_version(s, "human")
